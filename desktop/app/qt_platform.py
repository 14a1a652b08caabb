"""Before Qt starts: can its X11 platform plugin (xcb) load? If not, one line that says what to install.

Qt aborts the process (status 134) with "Could not load the Qt platform plugin "xcb"" when a system library
the plugin links against is missing, which minimal Linux installations lack (`libxcb-icccm4`,
`libxcb-keysyms1`, `libxcb-cursor0`, ...). `window_problem` loads the plugin the way Qt does (`dlopen`,
through ctypes) and, where that fails, names the missing libraries with their Debian/Ubuntu and Fedora
packages. Nothing here imports Qt.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

# What PySide6's libqxcb.so, libQt6XcbQpa.so.6 and the Qt libraries they load (Gui, DBus) link against
# (`readelf -d`), beyond the libraries PySide6 carries and the C/C++ runtime:
# soname -> (Debian/Ubuntu package, Fedora package).
XCB_PLUGIN_LIBRARIES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
}

RUN_ANYWAY = (
    "or run anyway with QT_QPA_PLATFORM=wayland (on a Wayland desktop) or QT_QPA_PLATFORM=offscreen (no window)"
)

Loader = Callable[[str], object]


def uses_xcb(environ: Mapping[str, str]) -> bool:
    """Whether Qt will open its windows through X11 (xcb) on this Linux system: QT_QPA_PLATFORM unset or
    naming xcb first, and no Wayland session (where Qt picks its wayland plugin)."""
    requested = environ.get("QT_QPA_PLATFORM", "").strip()
    if requested:
        return requested.split(";")[0].split(":")[0].strip() == "xcb"
    return not (environ.get("XDG_SESSION_TYPE") == "wayland" and environ.get("WAYLAND_DISPLAY"))


def xcb_plugin() -> Path | None:
    """The installed PySide6's xcb plugin (also inside the PyInstaller bundle), found without importing Qt."""
    spec = importlib.util.find_spec("PySide6")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        plugin = Path(folder) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
        if plugin.is_file():
            return plugin
    return None


def _loads(name: str, folders: list[Path], load: Loader) -> bool:
    for candidate in [name, *(str(folder / name) for folder in folders if (folder / name).is_file())]:
        try:
            load(candidate)
        except OSError:
            continue
        return True
    return False


def missing_libraries(plugin: Path, load: Loader | None = None) -> tuple[list[str], str | None]:
    """([], None) when `plugin` loads (with `load`, by default ctypes.CDLL: dlopen, as Qt loads it); else the
    sonames from XCB_PLUGIN_LIBRARIES that do not load (looked up as the dynamic loader does, then beside Qt's
    libraries and in a PyInstaller bundle's folder) and the loader's own message."""
    load = load or ctypes.CDLL
    try:
        load(str(plugin))
    except OSError as exc:
        error = str(exc)
    else:
        return [], None
    folders = [plugin.parents[2] / "lib", *([Path(sys._MEIPASS)] if hasattr(sys, "_MEIPASS") else [])]
    return [name for name in XCB_PLUGIN_LIBRARIES if not _loads(name, folders, load)], error


def install_advice(missing: list[str]) -> str:
    """`sudo apt install ...` (Debian/Ubuntu) or `sudo dnf install ...` (Fedora) for the missing sonames."""
    debian = dict.fromkeys(XCB_PLUGIN_LIBRARIES[name][0] for name in missing)
    fedora = dict.fromkeys(XCB_PLUGIN_LIBRARIES[name][1] for name in missing)
    return f"sudo apt install {' '.join(debian)} (Debian/Ubuntu) or sudo dnf install {' '.join(fedora)} (Fedora)"


def window_problem(environ: Mapping[str, str], load: Loader | None = None) -> str | None:
    """One line saying why Qt could not open a window here and what to do, or None when it can (or when Qt
    will not use xcb, or this is not Linux: then Qt is left to itself)."""
    if not sys.platform.startswith("linux") or not uses_xcb(environ):
        return None
    if not environ.get("DISPLAY"):
        return f"no X display to open the window on (DISPLAY is not set): start it from a desktop session, {RUN_ANYWAY}"
    plugin = xcb_plugin()
    if plugin is None:
        return None
    missing, error = missing_libraries(plugin, load)
    if error is None:
        return None
    if not missing:
        return f"Qt's X11 platform plugin (xcb) cannot load: {error}; {RUN_ANYWAY}"
    return (
        f"Qt's X11 platform plugin (xcb) needs system libraries that are missing ({', '.join(missing)}): "
        f"install them with {install_advice(missing)}, {RUN_ANYWAY}"
    )
