"""Fault injection: `familiar` killed with SIGKILL at every fault point of add, import, export, remove (to
the trash), restore and emptying the trash,
at random moments (fixed seed), and at three points of a training run; then bad archives through
`familiar import`.

After every kill the library must open (recovering what the kill left) with a sound database, no row
pointing at a missing or damaged file, no file or run folder that no row refers to, nothing left in
tmp/ or trash/, and the rows either as they were or with the whole operation done; the operation must
then go through when done again (or resumed, for training). docs/reliability.md quotes the counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from desktop.cli.main import main
from store import faults, files
from store.library import Library
from store.paths import AREAS
from tests.store.helpers import rows, state_bytes, write_image

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}  # one torch thread: the CPUs are shared

# `familiar ARGS...` that kills itself (SIGKILL) once it has reached the fault points TRIGGER in that
# order (other points may come between); "ready" tells the parent that the store's imports are done.
WORKER = """
import json, os, signal, sys
import store.library  # what the library commands import, loaded before "ready"
from store import faults
from desktop.cli.main import main

trigger = json.loads(sys.argv[1])

def hook(name):
    if trigger and name == trigger[0]:
        trigger.pop(0)
        if not trigger:
            os.kill(os.getpid(), signal.SIGKILL)

faults.install(hook)
print("ready", flush=True)
sys.exit(main(sys.argv[2:]))
"""


def familiar_killed_at(trigger: list[str], root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `familiar --data-dir ROOT ARGS...` in a process killed at the end of `trigger` (never, if empty)."""
    command = [sys.executable, "-c", WORKER, json.dumps(trigger), "--data-dir", str(root), *args]
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


def check_sound(root: Path) -> dict[str, list[tuple]]:
    """Open the library as the next process would and check it; returns its rows."""
    with Library.open(root) as library:
        db = library.db
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        for area in AREAS:
            present = {path.name.split(".")[0]: path for path in library.layout.area(area).glob("*/*")}
            assert set(present) == files.referenced_hashes(db, area), f"{area}: missing or orphan files"
            if area != "thumbs":  # the other areas are named by their content's hash
                assert all(hashlib.sha256(p.read_bytes()).hexdigest() == sha for sha, p in present.items())
        assert list(library.layout.tmp.iterdir()) == [] and list(library.layout.trash.iterdir()) == []
        uids = {uid for (uid,) in db.execute("SELECT uid FROM runs")}
        assert {folder.name for folder in library.layout.runs.iterdir()} <= uids, "orphan run folders"
    return rows(root)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A library holding rex (photos, versions, a run with a checkpoint, images) and dog, which shares a
    photo and an image with rex; photos for a new concept and rex's archive lie beside it."""
    folder = tmp_path_factory.mktemp("base")
    shared = write_image(folder / "shared.jpg", seed=1)
    for i in range(2):
        write_image(folder / f"bo{i}.png", seed=20 + i, fmt="PNG")
    with Library.open(folder / "lib") as library:
        library.concepts.add("rex", [write_image(folder / f"rex{i}.jpg", seed=10 + i) for i in range(2)] + [shared])
        library.concepts.add("dog", [write_image(folder / "dog0.jpg", seed=30), shared], kind="pet")
        library.tokens.add("rex", state_bytes(seed=1), kind="instant")
        run = library.runs.start(library.runs.create("rex", {"epochs": 1}).id)
        (library.runs.folder(run.id) / "optimizer.bin").write_bytes(b"adam")
        checkpoint = library.runs.add_checkpoint(run.id, state_bytes(seed=2), step=5, epoch=1)
        library.runs.record_losses(run.id, [2.0, 1.5, 1.2, 1.1, 1.0])
        library.runs.add_check(run.id, step=5, metrics={"recognition": 1.0}, picture=(folder / "rex1.jpg").read_bytes())
        library.tokens.add_from_checkpoint(checkpoint.id)
        library.runs.finish(run.id, "done")
        dog = library.tokens.add("dog", state_bytes(seed=3))
        rex = library.tokens.active("rex")
        picture = (folder / "rex0.jpg").read_bytes()
        library.gallery.add(picture, prompt="<rex>", seed=1, version_ids=[rex.id])
        library.gallery.add(
            (folder / "dog0.jpg").read_bytes(), prompt="<dog> and <rex>", seed=2, version_ids=[rex.id, dog.id]
        )
        library.export_concept("rex", folder / "rex.familiar")
    return folder


OPERATIONS: dict[str, Callable[[Path], list[str]]] = {
    "add": lambda base: [
        "concept",
        "add",
        "bo",
        str(base / "bo0.png"),
        str(base / "bo1.png"),
        str(base / "shared.jpg"),
    ],
    "import": lambda base: ["import", str(base / "rex.familiar"), "--rename", "rex2"],
    "export": lambda base: ["export", "rex", "-o", str(base / "out" / "rex.familiar")],
    "remove": lambda base: ["concept", "remove", "rex"],
    "restore": lambda base: ["concept", "restore", "rex"],
    "empty": lambda base: ["concept", "trash", "--empty"],
}
TRASHED_FIRST = ("restore", "empty")  # these start from a copy with rex in the trash
DELETING = ("empty",)  # only deletes rows; the others only add rows, but for remove and restore (one row changes)


def done(operation: str, root: Path, base: Path) -> bool:
    """Whether the operation's whole effect is in the library (export: in the archive it writes)."""
    with Library.open(root) as library:
        names = {c.name: c for c in library.concepts.list()}
        if operation == "add":
            return "bo" in names and names["bo"].photo_count == 3
        if operation == "import":
            return "rex2" in names and len(library.tokens.versions("rex2")) == 2 and names["rex2"].photo_count == 3
        if operation in ("remove", "empty"):
            kept = [image.prompt for image in library.gallery.list()]
            in_trash = [t.name for t in library.concepts.trashed()] == ["rex"]
            gone = "rex" not in names and kept == ["<dog> and <rex>"] and names["dog"].photo_count == 2
            return gone and in_trash == (operation == "remove")
        if operation == "restore":
            return "rex" in names and len(library.tokens.versions("rex")) == 2 and len(library.gallery.list()) == 2
        target = base / "out" / "rex.familiar"
        if not target.exists():
            return False
        with Library.open(root.with_name(f"{root.name}-check")) as other:
            return other.import_concept(target).photo_count == 3


@pytest.fixture
def fresh(base: Path, tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """`fresh(operation)`: a new copy of the base library (with rex in the trash for the operations that
    need it), and an empty output folder for exports."""
    copies = iter(range(10**6))

    def make(operation: str = "add") -> Path:
        shutil.rmtree(base / "out", ignore_errors=True)
        (base / "out").mkdir()
        root = Path(shutil.copytree(base / "lib", tmp_path / f"lib{next(copies)}"))
        if operation in TRASHED_FIRST:
            with Library.open(root) as library:
                library.concepts.remove("rex")
        return root

    yield make
    shutil.rmtree(base / "out", ignore_errors=True)


def fault_points(root: Path, args: list[str]) -> list[str]:
    """The fault points an operation reaches, in order (a dry run in this process)."""
    reached: list[str] = []
    faults.install(reached.append)
    try:
        assert main(["--data-dir", str(root), *args]) == 0
    finally:
        faults.install(None)
    return reached


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_kill_at_any_fault_point_loses_nothing_and_can_be_redone(
    base: Path, fresh: Callable[..., Path], operation: str
) -> None:
    args = OPERATIONS[operation](base)
    points = fault_points(fresh(operation), args)
    assert len(points) >= {"export": 4, "remove": 3, "restore": 3}.get(operation, 8), points
    outcomes = []
    for index in range(len(points)):
        root = fresh(operation)
        before = check_sound(root)
        killed = familiar_killed_at(points[: index + 1], root, *args)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        after = check_sound(root)
        finished = done(operation, root, base)
        assert after == before or finished, f"half done after a kill at {points[index]}"
        older, newer = (after, before) if operation in DELETING else (before, after)
        if operation not in ("remove", "restore"):
            assert all(set(older[table]) <= set(newer[table]) for table in before), "a stored row changed or was lost"
        assert after == before or operation != "export"
        outcomes.append(finished)
        if not finished:  # do it again: it goes through, and a killed export's leftovers go
            assert main(["--data-dir", str(root), *args]) == 0
            check_sound(root)
            assert done(operation, root, base)
            assert [p.name for p in (base / "out").iterdir()] == (["rex.familiar"] if operation == "export" else [])
    assert not all(outcomes) and (operation == "export" or any(outcomes))  # kills before and after the commit


def started(root: Path, args: list[str]) -> tuple[subprocess.Popen[bytes], float]:
    """`familiar ARGS...` running, once its imports are done; and the time that took."""
    command = [sys.executable, "-c", WORKER, "[]", "--data-dir", str(root), *args]
    process = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    return process, time.monotonic()


@pytest.mark.parametrize("operation", ["add", "empty"])
def test_kills_at_random_moments_lose_nothing(base: Path, fresh: Callable[..., Path], operation: str) -> None:
    """SIGKILL at seeded random moments of a run, wherever they land: in SQLite, mid-write, mid-rename."""
    args = OPERATIONS[operation](base)
    process, start = started(fresh(operation), args)
    assert process.wait() == 0
    duration = time.monotonic() - start  # of an operation run to the end, from its imports on
    rng = random.Random(18)
    for _ in range(5):
        root = fresh(operation)
        before = check_sound(root)
        process, _ = started(root, args)
        time.sleep(rng.uniform(0.0, duration))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        after = check_sound(root)
        assert after == before or done(operation, root, base)
        older, newer = (after, before) if operation in DELETING else (before, after)
        assert all(set(older[table]) <= set(newer[table]) for table in before)
        if after == before:
            assert main(["--data-dir", str(root), *args]) == 0
            check_sound(root)


def test_killed_training_resumes_without_a_duplicate_version(tmp_path: Path) -> None:
    """`familiar train` (demo model) killed before its first checkpoint is kept, after it, and after the
    best checkpoint became a version but before the run was marked done; training again, then resuming
    twice, ends with one run done and one trained version."""
    root = tmp_path / "lib"
    with Library.open(root) as library:
        library.concepts.add("bo", [write_image(tmp_path / f"bo{i}.jpg", seed=i, size=(96, 96)) for i in range(2)])
    train = ["train", "bo", "--epochs", "2", "--device", "cpu", "--no-index"]
    first = familiar_killed_at(["checkpoint row"], root, *train)
    second = familiar_killed_at(["checkpoint row", "committed"], root, *train)
    assert (first.returncode, second.returncode) == (-signal.SIGKILL, -signal.SIGKILL)
    check_sound(root)
    third = familiar_killed_at(["token version row", "committed"], root, *train, "--resume")
    assert third.returncode == -signal.SIGKILL, third.stderr
    check_sound(root)
    with Library.open(root) as library:
        killed, lost = library.runs.list("bo")
        assert killed.status == "failed" and "interrupted" in (killed.error or "")
        assert [c.epoch for c in library.runs.checkpoints(killed.id)] == [0, 1, 2]
        assert len(library.tokens.versions("bo")) == 1
    last = familiar_killed_at([], root, *train, "--resume")
    assert last.returncode == 0, last.stderr
    check_sound(root)
    with Library.open(root) as library:
        run, failed = library.runs.list("bo")
        assert run.id == killed.id and run.status == "done"
        assert failed.id == lost.id and failed.status == "failed" and library.runs.checkpoints(failed.id) == []
        (version,) = library.tokens.versions("bo")
        assert version.kind == "trained" and version.active and version.run_id == run.id


# Bad archives: each is the good archive of rex (two versions, three photos) with one thing wrong.


def _members(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as opened:
        return {info.filename: opened.read(info) for info in opened.infolist()}


def _write(target: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def _manifest(edit: Callable[[dict], object]) -> Callable[[dict[str, bytes]], None]:
    def change(members: dict[str, bytes]) -> None:
        manifest = json.loads(members["manifest.json"])
        edit(manifest)
        members["manifest.json"] = json.dumps(manifest).encode()

    return change


def _token(values: Callable[[np.ndarray], object] | None = None, hidden: int = 8) -> Callable[[dict[str, bytes]], None]:
    """Replace the active version's file by a sound one (hash and manifest updated) with `values` done to
    its `embed` rows, or made for a model of another hidden size."""

    def change(members: dict[str, bytes]) -> None:
        manifest = json.loads(members["manifest.json"])
        entry = next(v for v in manifest["token_versions"] if v["active"])
        data = bytearray(state_bytes(hidden=hidden, seed=7))
        if values is not None:
            (length,) = struct.unpack("<Q", data[:8])
            begin, end = json.loads(data[8 : 8 + length])["embed"]["data_offsets"]
            embed = np.frombuffer(data, dtype="<f4", count=(end - begin) // 4, offset=8 + length + begin).copy()
            values(embed)
            data[8 + length + begin : 8 + length + end] = embed.tobytes()
        digest = hashlib.sha256(data).hexdigest()
        del members[entry["file"]]
        entry.update(file=f"tokens/{digest}.safetensors", sha256=digest, size_bytes=len(data), hidden_size=hidden)
        members[entry["file"]] = bytes(data)
        members["manifest.json"] = json.dumps(manifest).encode()

    return change


def _set(array: np.ndarray, value: float) -> None:
    array[5] = value


BAD_ARCHIVES: dict[str, Callable[[Path, Path], Path]] = {
    "empty file": lambda good, bad: (bad.write_bytes(b""), bad)[1],
    "not a zip": lambda good, bad: (bad.write_bytes(b"PK\x03\x04 not really"), bad)[1],
    "cut short": lambda good, bad: (bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2]), bad)[1],
    "path outside": lambda good, bad: _write(bad, {**_members(good), "../../outside.txt": b"x"}),
    "extra file": lambda good, bad: _write(bad, {**_members(good), "run.sh": b"x"}),
    "no manifest": lambda good, bad: _write(bad, {k: v for k, v in _members(good).items() if k != "manifest.json"}),
}
MANIFEST_EDITS: dict[str, Callable[[dict], object]] = {
    "manifest of another format": lambda m: m.update(format="other/1"),
    "newer schema": lambda m: m.update(schema_version=99),
    "bad name": lambda m: m["concept"].update(name="../etc"),
    "escape sequence in the facts": lambda m: m["concept"].update(facts="\x1b[2J\x1b[31mpwned"),
    "escape sequence in a photo name": lambda m: m["photos"][0].update(original_name="\x1b]0;title\x07.jpg"),
    "two active versions": lambda m: [v.update(active=True) for v in m["token_versions"]],
    "versions numbered 1 and 3": lambda m: m["token_versions"][-1].update(number=3),
    "photo listed twice": lambda m: m["photos"].append(m["photos"][0]),
    "size that does not match": lambda m: m["photos"][0].update(size_bytes=m["photos"][0]["size_bytes"] + 1),
}
TOKEN_EDITS: dict[str, Callable[[dict[str, bytes]], None]] = {
    "NaN in the learned tokens": _token(lambda a: _set(a, float("nan"))),
    "infinity in the learned tokens": _token(lambda a: _set(a, float("-inf"))),
    "1e30 in the learned tokens": _token(lambda a: _set(a, 1e30)),
    "wrong hidden size for its model": _token(hidden=16),
}
CASES = (
    list(BAD_ARCHIVES.items())
    + [
        (name, lambda good, bad, e=edit: _write(bad, _edited(good, _manifest(e))))
        for name, edit in MANIFEST_EDITS.items()
    ]
    + [(name, lambda good, bad, e=edit: _write(bad, _edited(good, e))) for name, edit in TOKEN_EDITS.items()]
)


def _edited(good: Path, change: Callable[[dict[str, bytes]], None]) -> dict[str, bytes]:
    members = _members(good)
    change(members)
    return members


@pytest.mark.parametrize(("case", "make"), CASES, ids=[name for name, _ in CASES])
def test_a_bad_archive_is_refused_with_one_line_and_changes_nothing(
    base: Path, fresh: Callable[[], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, make
) -> None:
    root = fresh()
    before = check_sound(root)
    bad = make(base / "rex.familiar", tmp_path / "bad.familiar")
    assert main(["--data-dir", str(root), "import", str(bad), "--rename", "rex2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("familiar: error: ") and err.count("\n") == 1 and "\x1b" not in err, err
    assert check_sound(root) == before
    assert not (tmp_path.parent / "outside.txt").exists()
