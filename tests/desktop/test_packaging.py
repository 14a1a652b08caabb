"""The packaging pieces that can be checked without running PyInstaller: the frozen entry point, the spec's
lists of extra files, the build script's checks, and finding the resources in a bundle, a checkout or a wheel."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from desktop import __version__
from desktop.frozen import frozen_argv
from engine.model import loading
from engine.model.loading import demo_model_dir, resources_dir
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def manifest() -> ModuleType:
    return load_script("bundle_manifest")


@pytest.fixture(scope="module")
def build_app() -> ModuleType:
    return load_script("build_app")


def test_gui_executable_opens_the_app_and_cli_passes_arguments_through() -> None:
    assert frozen_argv("/opt/Familiar/familiar-gui", ["--smoke-test", "x.png"]) == ["app", "--smoke-test", "x.png"]
    assert frozen_argv("C:\\Familiar\\familiar-gui.exe", []) == ["app"]
    assert frozen_argv("/opt/Familiar/familiar", ["--version"]) == ["--version"]


def test_resources_are_found_inside_a_bundle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert resources_dir() == tmp_path / "resources"
    assert demo_model_dir() == tmp_path / "resources" / "demo-model"


def test_resources_are_found_in_a_checkout_and_in_an_installed_wheel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert resources_dir() == ROOT / "resources"
    monkeypatch.setattr(loading, "__file__", str(tmp_path / "engine" / "model" / "loading.py"))
    (tmp_path / "familiar_resources").mkdir()
    assert resources_dir() == tmp_path / "familiar_resources"


def test_spec_ships_what_it_names(manifest: ModuleType) -> None:
    compile((ROOT / "build.spec").read_text(encoding="utf-8"), "build.spec", "exec")
    assert manifest.ENTRY_SCRIPT.is_file()
    [(resources, target)] = manifest.resource_datas()
    assert target == "resources" and (Path(resources) / "demo-model" / "config.json").is_file()
    extensions = manifest.torchvision_extensions()
    assert [Path(path).name.split(".")[0] for path, _ in extensions] == ["_C_stable", "image_stable"]
    assert all(Path(path).is_file() and target == "torchvision" for path, target in extensions)
    assert manifest.version() == __version__


def test_only_unused_transformers_models_are_left_out(manifest: ModuleType) -> None:
    excluded = set(manifest.transformers_model_excludes())
    assert "transformers.models.bert" in excluded
    for kept in manifest.TRANSFORMERS_MODELS_KEPT:
        assert importlib.util.find_spec(f"transformers.models.{kept}") is not None
        assert f"transformers.models.{kept}" not in excluded


def test_icon_only_where_the_platform_uses_one(manifest: ModuleType) -> None:
    assert manifest.icon("linux") is None
    assert manifest.icon("win32") == manifest.icon("darwin") == str(manifest.ICON_PNG)


def test_blank_pictures_are_told_from_drawn_ones(build_app: ModuleType, tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), (40, 40, 40)).save(tmp_path / "blank.png")
    Image.linear_gradient("L").save(tmp_path / "drawn.png")
    assert build_app.is_blank(tmp_path / "blank.png")
    assert not build_app.is_blank(tmp_path / "drawn.png")


def test_clean_env_has_no_virtual_environment(
    build_app: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VIRTUAL_ENV", sys.prefix)
    monkeypatch.setenv("PATH", f"{Path(sys.prefix) / 'bin'}:/usr/bin")
    env = build_app.clean_env(tmp_path)
    assert "VIRTUAL_ENV" not in env and "FAMILIAR_DATA" not in env
    assert env["PATH"] == "/usr/bin" and env["HOME"] == str(tmp_path)
    assert build_app.expected_data_dir(env).is_relative_to(tmp_path) or sys.platform == "win32"


def test_only_the_bitsandbytes_libraries_torch_loads_are_kept(manifest: ModuleType) -> None:
    unused = manifest.bitsandbytes_library_unused
    assert not unused("bitsandbytes/libbitsandbytes_cpu.so", "13.0")
    assert not unused("bitsandbytes/libbitsandbytes_cuda130.so", "13.0")
    assert unused("bitsandbytes/libbitsandbytes_cuda128.so", "13.0")
    assert unused("bitsandbytes/libbitsandbytes_rocm72.so", "13.0")
    assert unused("bitsandbytes\\libbitsandbytes_cuda130.dll".replace("\\", "/"), None)
    assert not unused("torch/lib/libtorch_cuda.so", "13.0")


def test_a_linux_build_without_the_x11_libraries_is_refused_naming_them(manifest: ModuleType) -> None:
    carried = manifest.xcb_libraries_carried()
    assert "libxcb-icccm.so.4" in carried and "libxkbcommon-x11.so.0" in carried
    assert not set(carried) & set(manifest.XCB_FROM_THE_SYSTEM)
    collected = ["PySide6/Qt/plugins/platforms/libqxcb.so", *carried]
    assert manifest.xcb_build_problem(collected) is None
    without = [name for name in collected if name not in ("libxcb-icccm.so.4", "libxcb-keysyms.so.1")]
    problem = manifest.xcb_build_problem(without)
    assert problem is not None and "libxcb-icccm.so.4, libxcb-keysyms.so.1" in problem
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1" in problem and "xcb-util-wm" in problem
