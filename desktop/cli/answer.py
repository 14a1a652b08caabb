"""Streaming a chat answer to the terminal, saying so when the model gave none."""

from __future__ import annotations

import sys
from collections.abc import Iterable

NO_ANSWER = "familiar: the model gave no answer (it ended its reply at once); try asking another way"


def print_answer(pieces: Iterable[str]) -> None:
    """Print the answer's pieces as they arrive and end the line; an answer with no words gets a note on stderr,
    so an empty line is never the only reply."""
    answer = ""
    for piece in pieces:
        print(piece, end="", flush=True)
        answer += piece
    print()
    if not answer.strip():
        print(NO_ANSWER, file=sys.stderr)
