"""Build the one-folder app with PyInstaller, then try the built app the way a new user would.

    pip install -e ".[build]"
    python scripts/build_app.py [--skip-build] [--out docs/results/packaging.json] [--shot PNG]

1. Runs `pyinstaller --noconfirm --clean build.spec` (into build/ and dist/Familiar/) and times it.
2. Measures the bundle: total size, file count, and the biggest top-level entries.
3. Copies dist/Familiar/ to a temporary folder outside the source tree and runs it there with a clean
   environment (no virtual environment on PATH, no VIRTUAL_ENV/PYTHONPATH/PYTHONHOME, FAMILIAR_DATA and
   FAMILIAR_CONFIG unset, a fresh HOME): `familiar --version`; `familiar-gui --smoke-test` offscreen (the
   first run: the screenshot must not be blank and the library must appear in the platform's data folder
   under that HOME); the README's first command, `familiar generate ... --seed 0`; and an instant concept
   (`familiar concept add --instant`) followed by `familiar chat` about it. On Linux also: `ldd` on the bundled
   Qt X11 plugin, with LD_LIBRARY_PATH set to `_internal/` as the bootloader sets it, must resolve the
   libraries the bundle carries (`bundle_manifest.xcb_libraries_carried`) inside the bundle; and, where Xvfb is
   installed, `familiar-gui` must map its window on a private Xvfb display.
4. Prints the figures and writes them as JSON. Exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs
from PIL import Image, ImageStat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import bundle_manifest as manifest  # noqa: E402
import xvfb_display  # noqa: E402

DIST = ROOT / "dist" / manifest.APP_NAME
README_PROMPT = "A photo of a large red striped circle with a blue hat on grass, on the left."
MIN_STD = 4.0  # grey-level standard deviation below which a picture counts as blank
CLEARED_VARS = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX", "FAMILIAR_DATA", "FAMILIAR_CONFIG")
HOME_VARS = ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME")


def image_std(path: Path) -> float:
    """Standard deviation of the grey levels (0-255): 0 for a uniform picture."""
    with Image.open(path) as image:
        return float(ImageStat.Stat(image.convert("L")).stddev[0])


def is_blank(path: Path, min_std: float = MIN_STD) -> bool:
    return image_std(path) < min_std


def tree_size(root: Path) -> tuple[int, int]:
    """(bytes, files) under `root`, not following links."""
    total = count = 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink():
                total += path.stat().st_size
                count += 1
    return total, count


def top_contributors(bundle: Path, limit: int = 12) -> list[dict[str, Any]]:
    """The biggest entries one level inside the bundle's library folder (`_internal/`), then its other files."""
    inner = bundle / "_internal"
    sizes = []
    for entry in [*inner.iterdir(), *(p for p in bundle.iterdir() if p != inner)]:
        size = tree_size(entry)[0] if entry.is_dir() else (0 if entry.is_symlink() else entry.stat().st_size)
        sizes.append({"path": entry.relative_to(bundle).as_posix(), "mib": round(size / 2**20, 1)})
    return sorted(sizes, key=lambda row: -row["mib"])[:limit]


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a user who has never run Familiar: no virtual environment, a fresh HOME."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_VARS + HOME_VARS}
    venv = Path(sys.prefix).resolve()
    keep = [
        p
        for p in env.get("PATH", "").split(os.pathsep)
        if p and not Path(p).resolve().is_relative_to(venv) and not Path(p).resolve().is_relative_to(ROOT)
    ]
    env["PATH"] = os.pathsep.join(keep)
    env["HOME"] = str(home)
    if sys.platform == "win32":
        env["USERPROFILE"] = str(home)
    return env


def expected_data_dir(env: Mapping[str, str]) -> Path:
    """The platform's user data folder for Familiar under `env` (platformdirs reads HOME and XDG_* at call time)."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return Path(platformdirs.user_data_dir(manifest.APP_NAME, appauthor=False))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run(cmd: list[str], env: Mapping[str, str], cwd: Path, timeout: float = 600) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    output = (proc.stdout + proc.stderr).strip()
    shown = " ".join([Path(cmd[0]).name, *cmd[1:]])
    print(f"$ {shown}  [{seconds:.1f} s, rc {proc.returncode}]")
    print("  " + "\n  ".join(output.splitlines()[-6:]))
    return {"rc": proc.returncode, "seconds": round(seconds, 2), "stdout": proc.stdout.strip(), "tail": output[-800:]}


def exe(bundle: Path, name: str) -> Path:
    return bundle / (f"{name}.exe" if sys.platform == "win32" else name)


def make_photos(folder: Path, count: int = 3) -> list[Path]:
    """Small distinct test photos (a coloured disc on a gradient) for an instant concept."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = Image.linear_gradient("L").resize((256, 256)).convert("RGB")
        disc = Image.new("RGB", (256, 256), (200 - 60 * i, 80 + 50 * i, 40))
        mask = Image.new("L", (256, 256), 0)
        mask.paste(255, (60 + 10 * i, 60, 196 + 10 * i, 196))
        image.paste(disc, mask=mask)
        paths.append(folder / f"photo{i}.png")
        image.save(paths[-1])
    return paths


def try_bundle(bundle: Path, work: Path, shot: Path | None) -> dict[str, Any]:
    """Run the copied bundle as a new user; every check's outcome under "checks"."""
    home = work / "home"
    home.mkdir()
    env = clean_env(home)
    data_dir = expected_data_dir(env)
    checks: dict[str, bool] = {}
    runs: dict[str, Any] = {}

    runs["version"] = run([str(exe(bundle, manifest.CLI_NAME)), "--version"], env, work)
    checks["version"] = runs["version"]["rc"] == 0 and runs["version"]["stdout"] == f"familiar {manifest.version()}"

    screenshot = work / "first-run.png"
    runs["smoke"] = run(
        [str(exe(bundle, manifest.GUI_NAME)), "--smoke-test", str(screenshot), "--timeout", "300"],
        {**env, "QT_QPA_PLATFORM": "offscreen"},
        work,
    )
    runs["smoke"]["screenshot_std"] = round(image_std(screenshot), 1) if screenshot.is_file() else None
    checks["smoke"] = runs["smoke"]["rc"] == 0 and screenshot.is_file() and not is_blank(screenshot)
    checks["data_folder"] = (data_dir / "library.db").is_file()
    runs["data_folder"] = str(data_dir.relative_to(home)) if data_dir.is_relative_to(home) else str(data_dir)
    if shot is not None and screenshot.is_file():
        shutil.copyfile(screenshot, shot)

    picture = work / "familiar-demo.png"
    runs["generate"] = run(
        [str(exe(bundle, manifest.CLI_NAME)), "generate", README_PROMPT, "-o", str(picture), "--seed", "0"], env, work
    )
    checks["generate"] = runs["generate"]["rc"] == 0 and picture.is_file() and not is_blank(picture)

    photos = [str(p) for p in make_photos(work / "photos")]
    cli = str(exe(bundle, manifest.CLI_NAME))
    runs["instant_concept"] = run([cli, "concept", "add", "bo", *photos, "--kind", "pet", "--instant"], env, work)
    runs["chat"] = run([cli, "chat", "What is <bo> doing?", "--seed", "0"], env, work)
    checks["instant_concept_and_chat"] = runs["instant_concept"]["rc"] == 0 and runs["chat"]["rc"] == 0

    if sys.platform.startswith("linux"):
        runs["xcb_libraries"] = xcb_resolution(bundle)
        checks["xcb_libraries_inside"] = not runs["xcb_libraries"]["outside"]
        if xvfb_display.missing_tools():
            runs["real_window"] = f"not tried: {', '.join(xvfb_display.missing_tools())} not installed"
        else:
            runs["real_window"] = real_window(bundle, env, work)
            checks["real_window"] = runs["real_window"]["mapped"] and runs["real_window"]["exited"] is None
    return {"checks": checks, "runs": runs}


def xcb_resolution(bundle: Path) -> dict[str, Any]:
    """Where `ldd` resolves each library the bundle should carry for the Qt X11 plugin; "outside" lists those
    it finds elsewhere or not at all."""
    internal = bundle / "_internal"
    plugin = internal / "PySide6" / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    listing = subprocess.run(
        ["ldd", str(plugin)], capture_output=True, text=True, env={"LD_LIBRARY_PATH": str(internal)}, timeout=60
    ).stdout
    resolved = dict(re.findall(r"^\s*(\S+) => (.+?)(?: \(0x[0-9a-f]+\))?$", listing, flags=re.MULTILINE))
    inside = {name: resolved.get(name, "not found") for name in manifest.xcb_libraries_carried()}
    outside = [name for name, path in inside.items() if not Path(path).resolve().is_relative_to(internal.resolve())]
    return {
        "resolved": {name: os.path.relpath(path, bundle) for name, path in inside.items() if name not in outside},
        "outside": {name: inside[name] for name in outside},
    }


def real_window(bundle: Path, env: Mapping[str, str], work: Path, timeout_s: float = 120) -> dict[str, Any]:
    """Run `familiar-gui` on a private Xvfb display until its window is mapped (xwininfo), then stop it."""
    with xvfb_display.xvfb() as display:
        start = time.perf_counter()
        app = subprocess.Popen(
            [str(exe(bundle, manifest.GUI_NAME))],
            env=xvfb_display.x_env(display, env),
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        viewable: list[str] = []
        while not viewable and app.poll() is None and time.perf_counter() - start < timeout_s:
            time.sleep(0.5)
            viewable = xvfb_display.viewable_windows(display, manifest.APP_NAME)
        seconds = time.perf_counter() - start
        status = app.poll()
        app.terminate()
        output = app.communicate(timeout=30)[0].strip()
    print(f"$ familiar-gui (on Xvfb {display})  [{'window mapped' if viewable else 'no window'} after {seconds:.1f} s]")
    return {"mapped": bool(viewable), "exited": status, "seconds": round(seconds, 2), "tail": output[-800:]}


def pyinstaller_version() -> str | None:
    try:
        import PyInstaller

        return PyInstaller.__version__
    except ImportError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-build", action="store_true", help="measure and try the existing dist/Familiar")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "packaging.json")
    parser.add_argument("--shot", type=Path, default=None, help="also copy the first-run screenshot here")
    args = parser.parse_args(argv)

    result: dict[str, Any] = {
        "command": "python scripts/build_app.py" + (" --skip-build" if args.skip_build else ""),
        "platform": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "pyinstaller": pyinstaller_version(),
    }
    if not args.skip_build:
        if result["pyinstaller"] is None:
            print('PyInstaller is not installed: pip install -e ".[build]"', file=sys.stderr)
            return 2
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN", "build.spec"]
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            print("build failed", file=sys.stderr)
            return 1
        result["build_s"] = round(time.perf_counter() - start, 1)
        print(f"built {DIST} in {result['build_s']:.0f} s")
    if not exe(DIST, manifest.CLI_NAME).is_file():
        print(f"no built app at {DIST}", file=sys.stderr)
        return 1

    size, files = tree_size(DIST)
    result.update(bundle_mib=round(size / 2**20), bundle_files=files, top_contributors=top_contributors(DIST))
    print(f"bundle: {size / 2**30:.2f} GiB in {files} files")
    for row in result["top_contributors"]:
        print(f"  {row['mib']:8.1f} MiB  {row['path']}")

    with tempfile.TemporaryDirectory(prefix="familiar-bundle-") as tmp:
        work = Path(tmp)
        bundle = work / manifest.APP_NAME
        start = time.perf_counter()
        shutil.copytree(DIST, bundle, symlinks=True)
        print(f"copied to {bundle} in {time.perf_counter() - start:.0f} s")
        result.update(try_bundle(bundle, work, args.shot))

    failed = [name for name, ok in result["checks"].items() if not ok]
    print("all checks passed" if not failed else f"FAILED: {', '.join(failed)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
