"""Safety of data: injected crashes at every step, hard crashes, a full disk, concurrent readers."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from store import faults, files, schema
from store.errors import LibraryBusyError, StorageFullError
from store.library import Library
from tests.store.helpers import rows, state_bytes, stored_files, write_image

REPO = Path(__file__).resolve().parents[2]


class Crash(Exception):
    """The injected failure."""


def fault_points(action: Callable[[], object]) -> list[str]:
    """The fault points `action` reaches, in order."""
    reached: list[str] = []
    faults.install(reached.append)
    try:
        action()
    finally:
        faults.install(None)
    return reached


def crash_at(index: int) -> None:
    """Raise Crash at the `index`-th fault point reached from now on."""
    count = iter(range(10**6))

    def hook(name: str) -> None:
        if next(count) == index:
            raise Crash(name)

    faults.install(hook)


def populated(root: Path, tmp_path: Path) -> Library:
    """A library holding one concept ('rex') with photos, learned tokens, a run and an image."""
    library = Library.open(root)
    library.concepts.add("rex", [write_image(tmp_path / f"rex{i}.jpg", seed=100 + i) for i in range(2)])
    version = library.tokens.add("rex", state_bytes(seed=9))
    run = library.runs.start(library.runs.create("rex", {}).id)
    library.runs.add_checkpoint(run.id, state_bytes(seed=10), step=1, epoch=0)
    library.runs.finish(run.id, "done")
    library.gallery.add((tmp_path / "rex0.jpg").read_bytes(), prompt="<rex>", seed=1, version_ids=[version.id])
    return library


def assert_unchanged(library: Library, before_rows: dict, before_files: dict) -> None:
    assert rows(library.root) == before_rows
    assert stored_files(library.root) == before_files
    assert not any(library.layout.tmp.iterdir()) and not any(library.layout.trash.iterdir())


ACTIONS: dict[str, Callable[[Library, Path], object]] = {
    "add concept": lambda lib, tmp: lib.concepts.add(
        "bo", [write_image(tmp / f"bo{i}.jpg", seed=i) for i in range(3)] + [tmp / "rex0.jpg"], kind="pet"
    ),
    "add photos": lambda lib, tmp: lib.concepts.add_photos("rex", [write_image(tmp / "more.png", seed=50, fmt="PNG")]),
    "add tokens": lambda lib, tmp: lib.tokens.add("rex", state_bytes(seed=11)),
    "remove concept": lambda lib, tmp: lib.concepts.remove("rex"),
    "restore concept": lambda lib, tmp: lib.concepts.restore("rex"),
    "empty trash": lambda lib, tmp: lib.concepts.empty_trash(),
    "remove photo": lambda lib, tmp: lib.concepts.remove_photo("rex", lib.concepts.photos("rex")[0].sha256),
    "edit concept": lambda lib, tmp: lib.concepts.edit(
        "rex",
        add=[write_image(tmp / "more.png", seed=51, fmt="PNG")],
        remove=[lib.concepts.photos("rex")[0].sha256],
        facts="edited",
    ),
    "import": lambda lib, tmp: lib.import_concept(tmp / "rex.familiar", rename="rex2"),
    "generated image": lambda lib, tmp: lib.gallery.add(
        (tmp / "rex1.jpg").read_bytes(), prompt="x", seed=2, version_ids=[lib.tokens.active("rex").id]
    ),
}


# What the library holds before an action: rex is in the trash for these.
TRASHED_FIRST = ("restore concept", "empty trash")


@pytest.mark.parametrize("action", ACTIONS)
def test_a_crash_at_any_step_leaves_the_library_as_it_was(tmp_path: Path, action: str) -> None:
    library = populated(tmp_path / "lib", tmp_path)
    library.export_concept("rex", tmp_path / "rex.familiar")
    if action in TRASHED_FIRST:
        library.concepts.remove("rex")
    before_rows, before_files = rows(library.root), stored_files(library.root)
    # A dry run on a twin library finds the steps this action goes through.
    with populated(tmp_path / "twin", tmp_path) as twin:
        if action in TRASHED_FIRST:
            twin.concepts.remove("rex")
        points = fault_points(lambda: ACTIONS[action](twin, tmp_path))
    row_only = action in ("remove concept", "restore concept")  # one row changes, no file
    assert "commit" in points and points[-1] == "committed" and len(points) >= (3 if row_only else 4), points
    for index, point in enumerate(points[:-1]):
        crash_at(index)
        with pytest.raises(Crash, match=point):
            ACTIONS[action](library, tmp_path)
        faults.install(None)
        assert_unchanged(library, before_rows, before_files)
    crash_at(len(points) - 1)  # just after the commit: the change stands, and the next open tidies up after it
    with pytest.raises(Crash, match="committed"):
        ACTIONS[action](library, tmp_path)
    faults.install(None)
    library.close()
    with Library.open(tmp_path / "lib") as reopened:
        assert rows(reopened.root) != before_rows
        assert not any(reopened.layout.tmp.iterdir()) and not any(reopened.layout.trash.iterdir())


CRASH_SCRIPT = """
import os, sys
from pathlib import Path
from store import faults
from store.library import Library

target = sys.argv[2]
faults.install(lambda name: os._exit(17) if name == target else None)
with Library.open(sys.argv[1]) as library:
    library.concepts.add("bo", [Path(p) for p in sys.argv[3:]])
"""


@pytest.mark.parametrize("point", ["staged photos", "placed photos", "placed thumbs", "photo row", "commit"])
def test_a_hard_crash_is_cleaned_up_when_the_library_next_opens(tmp_path: Path, point: str) -> None:
    library = populated(tmp_path / "lib", tmp_path)
    before_rows, before_files = rows(library.root), stored_files(library.root)
    library.close()
    photos = [str(write_image(tmp_path / f"bo{i}.jpg", seed=i)) for i in range(3)]
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path / "lib"), point, *photos], cwd=REPO, capture_output=True
    )
    assert crashed.returncode == 17, crashed.stderr.decode()
    if point != "staged photos":
        assert any(p.suffix == ".journal" for p in (tmp_path / "lib" / "tmp").iterdir())
    with Library.open(tmp_path / "lib") as library:
        assert rows(library.root) == before_rows
        # Files staged before the crash are named after the dead process, so they go at once too.
        assert stored_files(library.root) == before_files
        assert not any(library.layout.trash.iterdir())


def test_full_disk_while_writing_a_file(library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    library.concepts.add("rex", [write_image(tmp_path / "rex.jpg", seed=1)])
    before_rows, before_files = rows(library.root), stored_files(library.root)
    real_write = files._write_durably
    calls = iter(range(10**6))

    def write_then_fill_up(path: Path, data: bytes) -> None:
        if next(calls) == 2:  # the second photo: half of it fits, then the disk is full
            path.write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(files, "_write_durably", write_then_fill_up)
    photos = [write_image(tmp_path / f"bo{i}.jpg", seed=10 + i) for i in range(3)]
    with pytest.raises(StorageFullError, match="not enough disk space"):
        library.concepts.add("bo", photos)
    assert_unchanged(library, before_rows, before_files)
    monkeypatch.undo()
    assert library.concepts.add("bo", photos).photo_count == 3


def test_full_disk_inside_the_database(library: Library, tmp_path: Path) -> None:
    library.concepts.add("rex", [write_image(tmp_path / "rex.jpg", seed=1)])
    before_rows, before_files = rows(library.root), stored_files(library.root)
    pages = library.db.execute("PRAGMA page_count").fetchone()[0]
    library.db.execute(f"PRAGMA max_page_count = {pages}")  # the database file cannot grow any more
    with pytest.raises(StorageFullError, match="not enough disk space"):
        library.concepts.add("bo", [write_image(tmp_path / "bo.jpg", seed=2)], facts="x" * 9000)
    assert_unchanged(library, before_rows, before_files)


def test_readers_go_on_while_a_writer_holds_the_lock(tmp_path: Path) -> None:
    writer = populated(tmp_path / "lib", tmp_path)
    run = writer.runs.start(writer.runs.create("rex", {}).id)
    with Library.open(tmp_path / "lib") as reader:
        with writer.change(lock=True):
            writer.db.execute("UPDATE runs SET progress = 0.5 WHERE id = ?", [run.id])
            started = time.perf_counter()
            assert [c.name for c in reader.concepts.list()] == ["rex"]
            assert reader.runs.get(run.id).progress == 0.0  # the committed state, not the writer's
            Library.open(tmp_path / "lib").close()  # opening does not wait for the writer either
            assert time.perf_counter() - started < 1.0
        assert reader.runs.get(run.id).progress == 0.5

        errors: list[BaseException] = []

        def train() -> None:  # a training run reporting progress from its own thread and connection
            try:
                with Library.open(tmp_path / "lib") as own:
                    for step in range(1, 41):
                        own.runs.report(run.id, step / 40, step=step)
                        if step % 10 == 0:
                            own.runs.add_checkpoint(run.id, state_bytes(seed=step), step=step, epoch=step // 10)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=train)
        thread.start()
        seen = []
        while thread.is_alive():
            seen.append(reader.runs.get(run.id).step)
            assert len(reader.concepts.list()) == 1
        thread.join()
        assert errors == []
        assert seen == sorted(seen) and reader.runs.get(run.id).step == 40
        assert len(reader.runs.checkpoints(run.id)) == 4
    writer.close()


def test_a_second_writer_gives_up_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = Library.open(tmp_path / "lib")
    monkeypatch.setattr(schema, "BUSY_TIMEOUT_S", 0.2)
    with (
        Library.open(tmp_path / "lib") as other,
        writer.change(lock=True),
        pytest.raises(LibraryBusyError, match="busy"),
    ):
        other.concepts.add("bo")
    writer.close()


def test_collect_garbage_removes_only_unreferenced_files(library: Library, tmp_path: Path) -> None:
    library.concepts.add("bo", [write_image(tmp_path / "a.jpg")])
    library.tokens.add("bo", state_bytes())
    kept = stored_files(library.root)
    stray = library.layout.file("photos", "f" * 64, "jpg")
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"left by a crash long ago")
    (library.layout.runs / "deadbeef").mkdir()
    old_part = library.layout.tmp / "x.part"
    old_part.write_bytes(b"partial")
    an_hour_ago = time.time() - files.STALE_PART_S - 10
    os.utime(old_part, (an_hour_ago, an_hour_ago))
    assert library.collect_garbage() == 3
    assert stored_files(library.root) == kept
    assert not (library.layout.runs / "deadbeef").exists()


def test_store_imports_no_torch_engine_or_qt() -> None:
    code = (
        "import sys, store.library, store.archive, desktop.cli.library;"
        "bad = [m for m in ('torch', 'engine', 'PySide6') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


REMOVER = """
import sys
from pathlib import Path
from store.library import Library

photos = [Path(p) for p in sys.argv[2:]]
for _ in range(6):
    with Library.open(sys.argv[1]) as library:
        library.concepts.add("dog", photos)
        library.concepts.remove("dog")
        library.concepts.empty_trash()  # deleting for good is what moves files through trash/
"""


def test_opening_and_reading_while_another_process_removes_a_concept(tmp_path: Path) -> None:
    """Issue #18: opening the library while another process was removing a concept crashed (recovery
    raced the remover's own cleanup of trash/). Here one process adds and removes a 50-photo concept six
    times while this one opens the library and lists concepts until it is done."""
    photos = [str(write_image(tmp_path / f"{i}.png", seed=i, fmt="PNG", size=(64, 64))) for i in range(50)]
    root = tmp_path / "lib"
    Library.open(root).close()
    remover = subprocess.Popen(
        [sys.executable, "-c", REMOVER, str(root), *photos], cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    opens_during_removal = 0
    seen: set[tuple[str, int]] = set()
    while remover.poll() is None:
        busy = any((root / "trash").iterdir())
        with Library.open(root) as library:
            seen.update((c.name, c.photo_count) for c in library.concepts.list())
        opens_during_removal += busy
    assert remover.wait() == 0, remover.stderr.read() if remover.stderr else ""
    assert opens_during_removal > 0  # the race was run, not missed
    assert seen <= {("dog", 50)}
    with Library.open(root) as library:
        assert library.concepts.list() == []
        assert stored_files(root) == {}


def test_temporary_files_of_a_gone_process_are_removed_at_once(library: Library) -> None:
    """Issue #18: killed adds, imports and exports left `*.part` files for an hour. Now a file named after a
    process that is gone (or after an earlier process that had this pid) goes when the library next opens."""
    ended = subprocess.run(
        [sys.executable, "-c", "from store.files import owner_tag; print(owner_tag())"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tmp = library.layout.tmp
    live = tmp / files.temporary_name(".part")
    gone = tmp / f"{ended}.{'0' * 32}.part"
    earlier = tmp / f"{os.getpid()}-1.{'0' * 32}.part"  # this pid, but a process started in 1970
    untagged = tmp / "written-by-an-older-familiar.part"
    for part in (live, gone, earlier, untagged):
        part.write_bytes(b"partial")
    assert files.recover(library.db, library.layout) == 2
    assert sorted(tmp.iterdir()) == sorted([live, untagged])  # the untagged one goes once an hour old
