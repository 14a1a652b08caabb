"""Where the library lives: --data-dir, then $FAMILIAR_DATA, then the platform's user data folder."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from store.errors import StoreError
from store.paths import resolve_data_dir


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, object]] = []

    def user_data_dir(app: str, appauthor: object) -> str:
        seen.append((app, appauthor))
        return str(tmp_path / "platform")

    monkeypatch.setattr(platformdirs, "user_data_dir", user_data_dir)
    monkeypatch.delenv("FAMILIAR_DATA", raising=False)
    assert resolve_data_dir() == tmp_path / "platform" and seen == [("Familiar", False)]
    monkeypatch.setenv("FAMILIAR_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir("~/lib") == tmp_path / "home" / "lib"


def test_a_file_is_not_a_library_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        resolve_data_dir(tmp_path / "file")
