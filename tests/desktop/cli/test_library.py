"""`familiar concept ...`, `familiar export` and `familiar import` through the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from desktop.cli.main import main
from tests.store.helpers import DREAMBOOTH, dreambooth

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def photos() -> list[Path]:
    found = dreambooth("dog", 3)
    if len(found) < 3:
        pytest.skip(f"the DreamBooth photos are not at {DREAMBOOTH} (shared data beside the repository)")
    return found


def familiar(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--data-dir", str(data), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_add_list_show_rename_export_import_remove(
    tmp_path: Path, photos: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "lib"
    paths = [str(p) for p in photos]
    code, out, _ = familiar(capsys, data, "concept", "add", "bo", *paths, "--kind", "pet", "--facts", "Shiba, 3 years")
    assert code == 0 and "added bo (pet, 3 photos)" in out

    code, out, _ = familiar(capsys, data, "concept", "list")
    assert code == 0 and out.splitlines()[0].split() == ["NAME", "KIND", "STATE", "PHOTOS", "LAST", "RUN", "UPDATED"]
    assert out.splitlines()[1].split()[:5] == ["bo", "pet", "untrained", "3", "-"]

    code, out, _ = familiar(capsys, data, "concept", "list", "--json")
    (listed,) = json.loads(out)
    assert (listed["name"], listed["state"], listed["photo_count"], listed["active"]) == ("bo", "untrained", 3, None)

    code, out, _ = familiar(capsys, data, "concept", "show", "BO", "--json")
    shown = json.loads(out)
    assert shown["facts"] == "Shiba, 3 years" and len(shown["photos"]) == 3 and shown["token_versions"] == []
    assert all(Path(p["path"]).is_file() for p in shown["photos"])
    code, out, _ = familiar(capsys, data, "concept", "show", "bo")
    assert code == 0 and "bo (pet): untrained" in out and "00.jpg" in out

    assert familiar(capsys, data, "concept", "rename", "bo", "buddy")[0] == 0
    archive = tmp_path / "buddy.familiar"
    code, out, _ = familiar(capsys, data, "export", "buddy", "-o", str(archive))
    assert code == 0 and archive.is_file()

    code, _, err = familiar(capsys, data, "import", str(archive))
    assert code == 2 and err.count("\n") == 1 and "already exists" in err and "--rename" in err
    assert "Traceback" not in err
    code, out, _ = familiar(capsys, data, "import", str(archive), "--rename", "buddy2")
    assert code == 0 and "imported buddy2" in out
    code, out, _ = familiar(capsys, tmp_path / "elsewhere", "import", str(archive))
    assert code == 0 and "imported buddy (pet, 3 photos, untrained)" in out

    code, out, _ = familiar(capsys, data, "concept", "remove", "buddy")
    assert code == 0 and "moved buddy to the trash" in out and "familiar concept restore buddy" in out
    code, out, _ = familiar(capsys, data, "concept", "list", "--json")
    assert [c["name"] for c in json.loads(out)] == ["buddy2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["concept", "show", "nobody"], "no concept named 'nobody'"),
        (["concept", "add", "2fast", "{photo}"], "invalid concept name"),
        (["concept", "add", "bo", "{text}"], "not a photo"),
        (["concept", "remove", "nobody"], "no concept named"),
        (["import", "{text}"], "not a Familiar archive"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    photo = tmp_path / "photo.jpg"
    args = [a.format(photo=photo, text=text) for a in args]
    code, out, err = familiar(capsys, tmp_path / "lib", *args)
    assert code == 2 and out == ""
    assert err.startswith("familiar: error: ") and message in err and err.count("\n") == 1


def test_empty_library_and_bare_concept_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = familiar(capsys, tmp_path / "lib", "concept", "list")
    assert code == 0 and "no concepts yet" in out
    code, out, _ = familiar(capsys, tmp_path / "lib", "concept")
    assert code == 2 and "add" in out and "rename" in out


def test_familiar_data_environment_variable_picks_the_library(tmp_path: Path, photos: list[Path]) -> None:
    env = {**os.environ, "FAMILIAR_DATA": str(tmp_path / "from-env")}
    command = [sys.executable, "-m", "desktop.cli.main", "concept", "add", "bo", str(photos[0])]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "from-env" / "library.db").is_file()


def test_show_and_list_never_print_control_characters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #18: escape sequences in facts and photo names reached the terminal raw. Rows an older
    Familiar let in (facts are checked now) are shown escaped."""
    from store.library import Library
    from tests.store.helpers import write_image

    data = tmp_path / "lib"
    photo = write_image(tmp_path / "a.jpg")
    with Library.open(data) as library:
        library.concepts.add("bo", [photo], facts="plain")
        library.db.execute("UPDATE concepts SET facts = ?", ["line one\n\x1b[2J\x1b]0;owned\x07 \x9b31m"])
        library.db.execute("UPDATE photos SET original_name = ?", ["\x1b[31mred.jpg"])
    code, out, _ = familiar(capsys, data, "concept", "show", "bo")
    assert code == 0 and "facts: line one\n" in out and r"\x1b[2J\x1b]0;owned\x07 \x9b31m" in out
    assert r"\x1b[31mred.jpg" in out
    for args in (["concept", "show", "bo"], ["concept", "show", "bo", "--json"], ["concept", "list", "--json"]):
        code, out, _ = familiar(capsys, data, *args)
        assert code == 0 and not any((ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in out), args
    assert json.loads(familiar(capsys, data, "concept", "show", "bo", "--json")[1])["facts"].endswith("\x9b31m")
    code, _, err = familiar(capsys, data, "concept", "add", "rex", str(photo), "--facts", "\x1b[2J")
    assert code == 2 and "control characters" in err


def test_remove_then_restore_brings_back_photos_versions_and_pictures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from store.library import Library
    from tests.store.helpers import rows, stored_files, with_history, write_image

    data = tmp_path / "lib"
    with Library.open(data) as library:
        with_history(library, tmp_path)
    before_rows, before_files = rows(data), stored_files(data)
    code, out, _ = familiar(capsys, data, "concept", "remove", "rex")
    assert code == 0 and "moved rex to the trash (3 photos, 2 versions)" in out
    assert json.loads(familiar(capsys, data, "concept", "list", "--json")[1]) == []
    code, out, _ = familiar(capsys, data, "concept", "trash")
    assert code == 0 and out.splitlines()[1].split()[:4] == ["rex", "pet", "3", "2"]
    code, out, _ = familiar(capsys, data, "concept", "restore", "rex")
    assert code == 0 and "restored rex (pet, 3 photos, trained)" in out
    assert rows(data) == before_rows and stored_files(data) == before_files
    with Library.open(data) as library:
        assert len(library.tokens.versions("rex")) == 2 and len(library.runs.list("rex")) == 1
        assert [image.prompt for image in library.gallery.list("rex")] == ["<rex> at the beach"]
    code, _, err = familiar(capsys, data, "concept", "restore", "rex")
    assert code == 2 and "no concept named 'rex' in the trash" in err
    familiar(capsys, data, "concept", "remove", "rex")
    familiar(capsys, data, "concept", "add", "rex", str(write_image(tmp_path / "new.jpg", seed=5)))
    code, _, err = familiar(capsys, data, "concept", "restore", "rex")
    assert code == 2 and "--as NEW" in err
    code, out, _ = familiar(capsys, data, "concept", "restore", "rex", "--as", "rex-old")
    assert code == 0 and "restored rex-old (pet, 3 photos, trained)" in out
    familiar(capsys, data, "concept", "remove", "rex")

    familiar(capsys, data, "concept", "remove", "rex-old")
    code, out, _ = familiar(capsys, data, "concept", "trash", "--empty")
    assert code == 0 and "deleted 2 concepts for good" in out and "rex-old" in out
    assert stored_files(data) == {}
    assert "the trash is empty" in familiar(capsys, data, "concept", "trash")[1]


def test_export_never_replaces_a_file_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.store.helpers import write_image

    data = tmp_path / "lib"
    assert familiar(capsys, data, "concept", "add", "bo", str(write_image(tmp_path / "a.jpg")))[0] == 0
    existing = tmp_path / "mine.familiar"
    existing.write_bytes(b"precious")
    code, out, err = familiar(capsys, data, "export", "bo", "-o", str(existing))
    assert code == 2 and out == "" and err.count("\n") == 1 and "already exists" in err and "--force" in err
    assert existing.read_bytes() == b"precious"
    code, out, _ = familiar(capsys, data, "export", "bo", "-o", str(existing), "--force")
    assert code == 0 and "holds its 1 photo:" in out and existing.read_bytes() != b"precious"


def test_unicode_names_one_photo_warns_and_the_default_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from store.validation import DEFAULT_KIND, MAX_PHOTOS_PER_CONCEPT
    from tests.store.helpers import write_image

    data = tmp_path / "lib"
    code, out, err = familiar(capsys, data, "concept", "add", "Böwie", str(write_image(tmp_path / "a.jpg")))
    assert code == 0 and f"added Böwie ({DEFAULT_KIND}, 1 photo)" in out
    assert err.startswith("familiar: warning: only 1 photo:") and "3-5 photos" in err
    code, out, err = familiar(
        capsys, data, "concept", "add", "rex", *(str(write_image(tmp_path / f"{i}.png", seed=i)) for i in range(3))
    )
    assert code == 0 and err == ""
    assert familiar(capsys, data, "concept", "show", "BÖWIE")[1].startswith("Böwie (object)")
    too_many = [str(tmp_path / f"{i}.jpg") for i in range(MAX_PHOTOS_PER_CONCEPT + 1)]
    code, _, err = familiar(capsys, data, "concept", "add", "many", *too_many)
    assert code == 2 and f"at most {MAX_PHOTOS_PER_CONCEPT} photos" in err
    code, _, err = familiar(capsys, data, "concept", "add", "b o", str(tmp_path / "a.jpg"))
    assert code == 2 and "one identifier token" in err and "any alphabet" in err


def test_show_gives_the_active_versions_verdict(tmp_path: Path, photos: list[Path], capsys) -> None:
    from store.library import Library
    from tests.store.helpers import state_bytes

    data = tmp_path / "lib"
    with Library.open(data) as library:
        library.concepts.add("bo", photos, kind="pet")
        metrics = {"recognition_positive": 0.5, "recognition": 0.5, "score": 0.5, "held_out_photos": 2}
        library.tokens.add("bo", state_bytes(), metrics={**metrics, "held_out_negatives": 0})
    code, out, _ = familiar(capsys, data, "concept", "show", "bo")
    assert code == 0
    verdict = out.split("verdict (v1):\n")[1].splitlines()
    assert verdict[0] == (
        "  Recognises <bo> in 1 of 2 held-out photos; look-alikes were not checked: there were no other photos to"
        " compare with."
    )
    assert verdict[1] == "  Advice: Add photos from other angles and in other light, then retrain."
    assert verdict[2].startswith("  Advice: Add another concept")


def test_list_and_show_give_run_history_and_how_to_resume_an_interrupted_run(
    tmp_path: Path, photos: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from store.library import Library

    data = tmp_path / "lib"
    with Library.open(data) as library:
        library.concepts.add("bo", photos, kind="pet")
        library.concepts.add("kiki", photos[:1], kind="pet")
        done = library.runs.create("bo", {"epochs": 2})
        library.runs.start(done.id)
        library.runs.finish(done.id, "done")
        killed = library.runs.create("bo", {"epochs": 15})
        library.runs.start(killed.id)
        library.runs.report(killed.id, 0.3, step=12, total_steps=40)
        library.db.execute("UPDATE runs SET pid = ? WHERE id = ?", [2**22 + 12345, killed.id])  # its process died
    hint = (
        f"<bo>: training run {killed.id} stopped (interrupted at 12/40); continue it with: familiar train bo --resume"
    )

    code, out, _ = familiar(capsys, data, "concept", "list")
    lines = out.splitlines()
    assert code == 0 and "interrupted at 12/40" in lines[1] and lines[2].split()[4] == "-"
    assert lines[-1] == hint and "kiki" not in lines[-1]

    code, out, _ = familiar(capsys, data, "concept", "show", "bo")
    assert code == 0 and "training runs (2):" in out and hint in out
    history = out.split("training runs (2):")[1].splitlines()
    assert history[1].split()[:5] == ["run", str(killed.id), "interrupted", "at", "12/40"]
    assert "interrupted: the process running it stopped" in history[1] and "15 epochs" in history[1]
    assert history[2].split()[:3] == ["run", str(done.id), "done"] and "2 epochs" in history[2]

    code, out, _ = familiar(capsys, data, "concept", "show", "bo", "--json")
    assert [(r["id"], r["status"]) for r in json.loads(out)["runs"]] == [(killed.id, "failed"), (done.id, "done")]
    code, out, _ = familiar(capsys, data, "concept", "list", "--json")
    assert [c["last_run"] and c["last_run"]["status"] for c in json.loads(out)] == ["failed", None]

    code, out, _ = familiar(capsys, data, "concept", "show", "kiki")
    assert "training runs (0):" in out and "--resume" not in out
