"""Help text for every command: each option's help ends with its default, written once by the formatter."""

from __future__ import annotations

import argparse
from collections.abc import Iterator


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`(default: X)` after an option's help, except where the help already says its default or there is none
    to show (None, False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text, default = action.help or "", action.default
        empty = default is None or default is False or default is argparse.SUPPRESS
        if "default" in text or empty or (isinstance(default, list | tuple | str) and not default):
            return text
        return super()._get_help_string(action)


def parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """`parser` and every subcommand's parser below it, with their command lines (`familiar index build`)."""
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from parsers(child)


def use_defaults_formatter(parser: argparse.ArgumentParser) -> None:
    """Give `parser` and all its subcommands the formatter that shows defaults."""
    for _, each in parsers(parser):
        each.formatter_class = DefaultsHelpFormatter
