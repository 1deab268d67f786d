"""common.cli: the help of every command and subcommand of `distill`, `extract` and `python -m manifests`,
and of the `python -m` tools beside them (the demo, the report, the probe, the teachers' transfer-set score)."""

from __future__ import annotations

import argparse

import pytest

from common.cli import HelpFormatter
from distill.cli import build_parser as distill_parser
from distill.demo import build_parser as demo_parser
from distill.eval.probe import build_parser as probe_parser
from distill.eval.report import build_parser as report_parser
from distill.eval.teacher_labels import build_parser as teacher_labels_parser
from extract.cli import _parser as extract_parser
from manifests.cli import build_parser as manifests_parser
from manifests.demo import build_parser as demo_corpus_parser


def commands(parser: argparse.ArgumentParser, name: str) -> list[tuple[str, argparse.ArgumentParser]]:
    """The parser and every subcommand's parser below it, with their command lines."""
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                found += commands(subparser, f"{name} {sub}")
    return found


ALL = [
    *commands(distill_parser(), "distill"),
    *commands(extract_parser(), "extract"),
    *commands(manifests_parser(), "manifests"),
    # `python -m` tools, named without spaces (they have no subcommands)
    ("distill.demo", demo_parser()),
    ("distill.eval.report", report_parser()),
    ("distill.eval.probe", probe_parser()),
    ("distill.eval.teacher_labels", teacher_labels_parser()),
    ("manifests.demo", demo_corpus_parser()),
]


def test_every_cli_is_walked():
    names = {name for name, _ in ALL}
    assert {"distill teacher", "distill verify", "extract info", "extract verify", "manifests"} <= names
    assert len(names) == len(ALL) == 21  # distill and its 8 commands, extract and its 5, manifests, 5 tools


@pytest.mark.parametrize("name, parser", ALL, ids=[name for name, _ in ALL])
def test_help_shows_only_defaults_that_say_something(name, parser):
    text = parser.format_help()
    for useless in ("(default: None)", "(default: False)", "(default: True)", "(default: [])"):
        assert useless not in text, f"{name} --help shows {useless}"
    for action in parser._actions:  # and none twice: a help that names its default gets no second one
        if action.help:
            shown = HelpFormatter(name)._get_help_string(action) % dict(vars(action), prog=name)
            assert shown.count("default:") <= 1, (name, action.dest, shown)
    if " " in name:  # a subcommand says what it does, not only its one-line summary
        assert parser.description, f"{name} has no description"


def test_defaults_that_say_something_are_shown():
    help_of = dict(ALL)
    assert "(default: cpu)" in help_of["distill predict"].format_help()
    assert "(default: 0)" in help_of["manifests"].format_help()  # a zero is a value, not an absence
    teacher = " ".join(help_of["distill teacher"].format_help().split())
    assert "train.epochs; default: --config's, else" in teacher and "(default: cache: in --config)" in teacher
