"""One rule for concept names: what the library accepts is what the engine reads as a `<name>` mention."""

from __future__ import annotations

import pytest

from engine.concepts.prompts import MENTION
from store.errors import InvalidValueError
from store.validation import check_name


@pytest.mark.parametrize("name", ["bo", "Böwie", "Зоя", "小白", "grandma_rose", "red-bike", "x" * 32, "é1"])
def test_every_accepted_name_is_a_mention(name: str) -> None:
    assert MENTION.fullmatch(f"<{check_name(name)}>")


@pytest.mark.parametrize("name", ["1bo", "_bo", "-bo", "b o", "bo!", "x" * 33, "~3", "b<o"])
def test_every_refused_name_is_no_mention(name: str) -> None:
    with pytest.raises(InvalidValueError):
        check_name(name)
    assert not MENTION.fullmatch(f"<{name}>")
