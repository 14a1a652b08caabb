"""Checks on what users and callers hand the store: names, kinds, roles, facts, JSON values."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from store.errors import InvalidValueError

# A letter of any alphabet, then letters, digits, '_' or '-': the engine's `<name>` mention pattern.
NAME_PATTERN = re.compile(r"[^\W\d_][\w-]{0,31}")
NAME_RULES = (
    "a name becomes one identifier token that you write as <name> in prompts: use 1-32 letters (any alphabet,"
    " e.g. Böwie), digits, '_' or '-', starting with a letter; no spaces, no '<' or '>'"
)
# Names that would read as the model's own special tokens once written as <name>.
_RESERVED_NAME = re.compile(r"(image|img|pad|unk|s|bos|eos|sep|mask|reserved\d*|[gu]\d+)", re.IGNORECASE)
KINDS = ("pet", "person", "object", "place")
DEFAULT_KIND = "object"  # the CLI's and the app's default alike: the one that assumes least about the concept
ROLES = ("train", "test", "reference")
MAX_FACTS_CHARS = 10_000
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 but tab and newline, DEL, C1
MAX_JSON_BYTES = 1 * 2**20
MAX_PHOTOS_PER_CONCEPT = 200  # the most a concept holds, and the most a new one starts from (CLI and app alike)
ADVISED_PHOTOS = 3  # fewer is allowed, with a warning
TRASH_DAYS = 30  # a removed concept can be restored for this long, then it is deleted when a library opens


def check_name(name: str) -> str:
    """A concept name usable as `<name>` in prompts, returned in Unicode NFC form (so `Böwie` typed with a
    combining accent and with a precomposed one are the same name): 1-32 letters of any alphabet, digits,
    `_` or `-`, starting with a letter."""
    if isinstance(name, str):
        name = unicodedata.normalize("NFC", name)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidValueError(f"invalid concept name {name!r}: {NAME_RULES}")
    if _RESERVED_NAME.fullmatch(name):
        raise InvalidValueError(
            f"the concept name {name!r} is reserved: <{name}> is one of the model's own special tokens"
        )
    return name


def name_key(name: str) -> str:
    """What makes two names the same concept: NFC form, lower case (as the engine keys its slots)."""
    return unicodedata.normalize("NFC", name).lower()


def check_photo_count(count: int) -> int:
    """How many photos a new concept starts from: 1 to MAX_PHOTOS_PER_CONCEPT (see `photo_count_warning`)."""
    if count < 1:
        raise InvalidValueError("a concept needs at least 1 photo (3-5 from different angles work best)")
    if count > MAX_PHOTOS_PER_CONCEPT:
        raise InvalidValueError(f"a concept holds at most {MAX_PHOTOS_PER_CONCEPT} photos; {count} were given")
    return count


def photo_count_warning(count: int) -> str | None:
    """The advice for a concept with `count` photos, when below ADVISED_PHOTOS; None otherwise."""
    if count >= ADVISED_PHOTOS:
        return None
    photos = "1 photo" if count == 1 else f"{count} photos"
    return (
        f"only {photos}: the concept may learn just that view and its background; 3-5 photos from different"
        " angles work best (you can add more later)"
    )


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidValueError(f"invalid kind {kind!r}: choose one of {', '.join(KINDS)}")
    return kind


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidValueError(f"invalid photo role {role!r}: choose one of {', '.join(ROLES)}")
    return role


def check_facts(facts: str) -> str:
    """Free text the user writes about a concept: lines and tabs, but no control characters (a terminal
    showing them would obey escape sequences). Surrounding whitespace is dropped, Windows line ends become
    plain ones."""
    if not isinstance(facts, str):
        raise InvalidValueError("facts must be text")
    facts = facts.strip().replace("\r\n", "\n")
    if len(facts) > MAX_FACTS_CHARS:
        raise InvalidValueError(f"facts are {len(facts)} characters; the limit is {MAX_FACTS_CHARS}")
    control = CONTROL_CHARACTERS.search(facts)
    if control:
        raise InvalidValueError(f"facts must not contain control characters (found {control.group()!r})")
    return facts


def to_json(value: Mapping[str, Any], what: str) -> str:
    """Serialize a JSON object (config, metrics, params) with finite numbers only, keys sorted."""
    if not isinstance(value, Mapping):
        raise InvalidValueError(f"{what} must be a JSON object (a dict)")
    try:
        text = json.dumps(dict(value), sort_keys=True, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"{what} is not plain JSON with finite numbers: {exc}") from exc
    if len(text.encode()) > MAX_JSON_BYTES:
        raise InvalidValueError(f"{what} is over {MAX_JSON_BYTES // 2**20} MB of JSON")
    return text


def check_fraction(value: float, what: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidValueError(f"{what} must be a number")
    if not 0.0 <= value <= 1.0:
        raise InvalidValueError(f"{what} must be between 0 and 1, got {value}")
    return float(value)


def check_count(value: int, what: str) -> int:
    """A whole number from 0 to 2**63 - 1 (SQLite's integers are signed 64-bit)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise InvalidValueError(f"{what} must be a whole number from 0 to 2**63 - 1, got {value!r}")
    return value
