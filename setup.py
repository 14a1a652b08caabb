"""Which packages the wheel holds; everything else about the project is in pyproject.toml.

The code packages are found; the top-level `resources/` folder (the demo model, the demo Aligner, the
micro-world reader, icons) is installed as the data-only package `familiar_resources`, where
`engine.model.loading.resources_dir` looks for it. pyproject.toml alone cannot add a folder under another name
to found packages.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["desktop*", "engine*", "store*"]), "familiar_resources"],
    package_dir={"familiar_resources": "resources"},
    package_data={"engine": ["py.typed"], "familiar_resources": ["**/*"]},
    include_package_data=False,  # only package_data: else setuptools takes resources/icons/ for a package
)
