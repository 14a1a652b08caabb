"""Learned-token files (header checks without torch) and versions: add, activate, roll back, read."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from store.errors import InvalidValueError, NotFoundError, StoreError, TokenFileError
from store.library import Library
from store.state_files import read_state_header
from tests.store.helpers import FINGERPRINT, state_bytes, write_image


def rewrite_header(data: bytes, edit) -> bytes:
    """The same file with its JSON header changed by `edit(header)`."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    edit(header)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + length :]


def test_valid_header_is_read() -> None:
    header = read_state_header(state_bytes(hidden=16, name="rex"))
    assert (header.base_fingerprint, header.hidden_size, header.name) == (FINGERPRINT, 16, "rex")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: b"1234", "too short"),
        (lambda: struct.pack("<Q", 2**40) + b"{}", "bad header length"),
        (lambda: struct.pack("<Q", 4) + b"nope" + b"\x00" * 8, "not JSON"),
        (lambda: state_bytes(format="other/1"), "format is 'other/1'"),
        (lambda: state_bytes(base_fingerprint="xyz"), "base_fingerprint"),
        (lambda: state_bytes(hidden_size="9"), "shape"),
        (lambda: state_bytes(hidden_size="-3"), "hidden_size"),
        (lambda: state_bytes(n_generation="8"), "16 generation"),
        (lambda: rewrite_header(state_bytes(), lambda h: h.pop("head")), "'embed' and 'head'"),
        (lambda: rewrite_header(state_bytes(), lambda h: h.pop("__metadata__")), "metadata"),
        (lambda: rewrite_header(state_bytes(), lambda h: h["embed"].update(shape=[32, 8])), "shape"),
        (lambda: rewrite_header(state_bytes(), lambda h: h["embed"].update(dtype="F16")), "expected F32"),
        (lambda: state_bytes()[:-4], "does not match"),
        (lambda: state_bytes() + b"\x00" * 4, "unexplained bytes"),
    ],
    ids=[
        "short",
        "huge-header",
        "not-json",
        "format",
        "fingerprint",
        "hidden-mismatch",
        "hidden-negative",
        "generation-count",
        "no-head",
        "no-metadata",
        "shape",
        "dtype",
        "truncated",
        "trailing",
    ],
)
def test_malformed_state_files_are_refused(make, message: str) -> None:
    with pytest.raises(TokenFileError, match=message):
        read_state_header(make())


def test_versions_activate_and_roll_back(library: Library, tmp_path: Path) -> None:
    library.concepts.add("bo", [write_image(tmp_path / "a.jpg")])
    first = state_bytes(seed=1)
    instant = library.tokens.add("bo", first, kind="instant", metrics={"recognition": 0.7})
    assert library.concepts.get("bo").state == "instant"
    trained = library.tokens.add("bo", state_bytes(seed=2), kind="trained", metrics={"recognition": 0.85})
    assert (instant.number, trained.number) == (1, 2)
    assert library.tokens.active("bo") == library.tokens.get("bo", 2)
    assert library.concepts.get("bo").state == "trained"

    rolled_back = library.tokens.activate("bo", 1)
    assert rolled_back.active and rolled_back.metrics == {"recognition": 0.7}
    assert library.concepts.get("bo").state == "instant"
    assert [v.active for v in library.tokens.versions("bo")] == [True, False]
    assert library.tokens.read_bytes(library.tokens.active("bo")) == first
    assert library.tokens.active("bo").path.read_bytes() == first

    kept = library.tokens.add("bo", state_bytes(seed=3), activate=False)
    assert not kept.active and library.tokens.active("bo").number == 1
    with pytest.raises(NotFoundError):
        library.tokens.activate("bo", 9)


def test_state_from_a_file_and_bad_inputs(library: Library, tmp_path: Path) -> None:
    library.concepts.add("bo")
    state_file = tmp_path / "bo.safetensors"
    state_file.write_bytes(state_bytes(hidden=4))
    version = library.tokens.add("bo", state_file)
    assert version.hidden_size == 4 and version.base_fingerprint == FINGERPRINT
    assert version.size_bytes == state_file.stat().st_size
    with pytest.raises(TokenFileError, match="cannot read"):
        library.tokens.add("bo", tmp_path / "missing.safetensors")
    with pytest.raises(InvalidValueError, match="kind"):
        library.tokens.add("bo", state_bytes(), kind="magic")
    with pytest.raises(InvalidValueError, match="finite"):
        library.tokens.add("bo", state_bytes(), metrics={"loss": float("nan")})
    with pytest.raises(NotFoundError):
        library.tokens.add("nobody", state_bytes())
    assert len(library.tokens.versions("bo")) == 1


def test_run_of_another_concept_is_refused(library: Library) -> None:
    library.concepts.add("bo")
    library.concepts.add("rex")
    run = library.runs.create("rex", {})
    with pytest.raises(NotFoundError, match="no training run"):
        library.tokens.add("bo", state_bytes(), run_id=run.id)


def test_damaged_stored_file_is_reported(library: Library) -> None:
    library.concepts.add("bo")
    version = library.tokens.add("bo", state_bytes())
    version.path.write_bytes(b"\x00" * version.size_bytes)
    with pytest.raises(StoreError, match="damaged"):
        library.tokens.read_bytes(version)
    version.path.unlink()
    with pytest.raises(StoreError, match="missing"):
        library.tokens.read_bytes(version)


def with_value(data: bytes, tensor: str, value: float) -> bytes:
    """The same state file with one value of `tensor` replaced."""
    (length,) = struct.unpack("<Q", data[:8])
    begin = json.loads(data[8 : 8 + length])[tensor]["data_offsets"][0]
    at = 8 + length + begin + 4 * 7
    return data[:at] + struct.pack("<f", value) + data[at + 4 :]


@pytest.mark.parametrize(
    ("tensor", "value", "message"),
    [
        ("embed", float("nan"), "'embed' holds NaN or infinite values"),
        ("head", float("inf"), "'head' holds NaN or infinite values"),
        ("head", -1e30, "'head' holds a value of 1e\\+30, over the 10000 limit"),
    ],
)
def test_learned_tokens_with_unusable_values_are_refused(
    library: Library, tensor: str, value: float, message: str
) -> None:
    """Issue #18: such states were stored as trained and failed only when the engine drew with them."""
    library.concepts.add("bo")
    with pytest.raises(TokenFileError, match=message):
        library.tokens.add("bo", with_value(state_bytes(), tensor, value))
    assert library.tokens.versions("bo") == []
    assert read_state_header(with_value(state_bytes(), tensor, -9999.0)).hidden_size == 8


def test_a_base_model_has_one_hidden_size(library: Library) -> None:
    library.concepts.add("bo")
    library.concepts.add("rex")
    library.tokens.add("bo", state_bytes(hidden=8))
    with pytest.raises(TokenFileError, match="hidden size 16, but that model's hidden size is 8"):
        library.tokens.add("rex", state_bytes(hidden=16))
    assert library.tokens.versions("rex") == []
    assert library.tokens.add("rex", state_bytes(hidden=16, fingerprint="cd" * 32)).hidden_size == 16


def test_a_checkpoint_kept_again_gives_its_version_not_a_copy(library: Library) -> None:
    """Issue #18: a run killed after keeping its best checkpoint, then resumed, kept it a second time."""
    library.concepts.add("bo")
    run = library.runs.start(library.runs.create("bo", {}).id)
    checkpoint = library.runs.add_checkpoint(run.id, state_bytes(seed=4), step=10, epoch=1)
    first = library.tokens.add_from_checkpoint(checkpoint.id)
    library.tokens.add("bo", state_bytes(seed=5), kind="instant")  # another version became active since
    again = library.tokens.add_from_checkpoint(checkpoint.id)
    assert (again.id, again.number, again.active) == (first.id, 1, True)
    assert [v.active for v in library.tokens.versions("bo")] == [True, False]
    assert library.tokens.add_from_checkpoint(checkpoint.id, activate=False).active  # already active: stays
