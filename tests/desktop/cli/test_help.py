"""Every command's help: each argument says what it is, and each option with a default shows it."""

from __future__ import annotations

import argparse

import pytest

from desktop.cli.help import parsers
from desktop.cli.main import build_parser

SKIPPED = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
COMMANDS = dict(parsers(build_parser()))


def _shows_a_default(default: object) -> bool:
    return not (default is None or isinstance(default, bool) or default in ([], (), ""))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_argument_has_help_and_shows_its_default(command: str) -> None:
    parser = COMMANDS[command]
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if isinstance(action, SKIPPED):
            continue
        assert action.help and action.help.strip(), f"{command}: {action.option_strings or action.dest} has no help"
        default = action.default
        if action.option_strings and _shows_a_default(default):
            shown = f"(default: {default})" if "default" not in action.help else "default"
            assert shown in text, f"{command}: {action.option_strings} does not show its default {default!r}"


def test_the_commands_named_in_the_issue_show_their_defaults() -> None:
    def shown(command: str) -> str:
        return " ".join(COMMANDS[command].format_help().split())

    assert "--epochs EPOCHS passes over the samples (default: 2)" in shown("familiar train")
    assert "(default: 0.001)" in shown("familiar train") and "(default: auto)" in shown("familiar train")
    chat = shown("familiar chat")
    assert "(default: 200)" in chat and "(default: 0.7)" in chat and "--seed SEED random seed" in chat
    assert "--top-k TOP_K sample only among the k likeliest image tokens (default: all)" in shown("familiar generate")
    search = shown("familiar index search")
    assert "-k K number of results (default: 10)" in search and "(default: auto)" in search


def test_the_aligner_help_matches_its_training_defaults() -> None:
    from engine.aligner.training import AlignerTrainConfig

    text = " ".join(COMMANDS["familiar aligner train"].format_help().split())
    config = AlignerTrainConfig()
    for option, value in (
        ("epochs", config.epochs),
        ("batch-size", config.batch_size),
        ("learning-rate", config.learning_rate),
        ("seed", config.seed),
        ("samples-per-identity", config.samples_per_identity),
    ):
        assert f"(default {value})" in text, option
