"""Flags are spelled one way across subcommands: every parser accepts both spellings and its help shows one."""

import contextlib
import importlib
import io
import re
from pathlib import Path

import pytest

import groupvit.cli
from groupvit.cli import SUBCOMMANDS, ArgumentParser


class _Captured(Exception):
    def __init__(self, parser: ArgumentParser) -> None:
        self.parser = parser


def _parser_of(name: str, monkeypatch: pytest.MonkeyPatch) -> ArgumentParser:
    """The parser that `groupvit NAME` builds, caught at its first parse."""

    def capture(self, args=None, namespace=None):
        raise _Captured(self)

    monkeypatch.setattr(ArgumentParser, "parse_known_args", capture)
    command = SUBCOMMANDS[name]
    with pytest.raises(_Captured) as caught:
        getattr(importlib.import_module(command.module), command.function)(["--help"])
    monkeypatch.undo()
    return caught.value.parser


def _values(action) -> list[str]:
    if action.nargs == 0:
        return []
    count = action.nargs if isinstance(action.nargs, int) else 1
    return [str(action.choices[0]) if action.choices else "1"] * count


def _outcome(parser: ArgumentParser, argv: list[str]) -> tuple[str, object]:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return "ok", vars(parser.parse_args(argv))
    except SystemExit:
        return "error", stderr.getvalue()


def _other(option: str) -> str:
    name = option[2:]
    return "--" + (name.replace("_", "-") if "_" in name else name.replace("-", "_"))


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_long_option_takes_both_spellings_and_help_shows_one(name, monkeypatch):
    parser = _parser_of(name, monkeypatch)
    required = [a for a in parser._actions if a.required]
    base = [v for a in required if not a.option_strings for v in _values(a)]
    base += [v for a in required if a.option_strings for v in (a.option_strings[-1], *_values(a))]
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    multi_word = [o for o in options if _other(o) != o]
    assert multi_word or name == "app", f"{name}: no multi-word option to check"  # `app`'s flags are single words
    for action in parser._actions:
        for option in action.option_strings:
            if option not in multi_word:
                continue
            assert "-" not in option[2:], f"{name}: {option} is not spelled with underscores"
            canonical = _outcome(parser, [*base, option, *_values(action)])
            alias = _outcome(parser, [*base, _other(option), *_values(action)])
            assert canonical[0] == "ok", f"{name} {option}: {canonical[1]}"
            assert alias == canonical, f"{name}: {option} and {_other(option)} parse differently"
    help_text = parser.format_help()
    for option in multi_word:
        assert option in help_text
        assert _other(option) not in help_text, f"{name}: help shows {_other(option)} besides {option}"


def test_alias_with_equals_and_abbreviations_refused():
    parser = groupvit.cli.argument_parser("groupvit example")
    parser.add_argument("--short_side", type=int)
    parser.add_argument("--max_steps", type=int)
    assert parser.parse_args(["--short-side=448", "--max_steps", "3"]).short_side == 448
    assert parser.parse_args(["--max-steps", "3"]).max_steps == 3
    assert "--short-side" not in parser.format_help()
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        parser.parse_args(["--short", "448"])  # abbreviations are off: every flag is spelled in full


def test_two_flags_differing_only_in_separator_are_refused():
    parser = groupvit.cli.argument_parser("groupvit example")
    parser.add_argument("--dry_run", action="store_true")
    parser.add_argument("--dry-run", dest="other", action="store_true")
    with pytest.raises(ValueError, match="--dry_run"):
        parser.parse_args([])


def test_scripts_and_benchmarks_spell_flags_with_underscores_through_the_shared_parser():
    root = Path(__file__).resolve().parents[1]
    files = [*root.glob("src/groupvit/cli/*.py"), *root.glob("scripts/*.py"), *root.glob("benchmarks/*.py")]
    for path in files:
        text = path.read_text()
        hyphenated = re.findall(r'add_argument\(\s*"(--[a-z0-9]+-[a-z0-9-]+)"', text)
        assert not hyphenated, f"{path.relative_to(root)} spells {hyphenated} with hyphens"
        if "argparse.ArgumentParser(" in text and path.name not in ("__init__.py", "build_clip_vocab.py"):
            # build_clip_vocab.py runs on the standard library alone (and has no multi-word flag)
            pytest.fail(f"{path.relative_to(root)} builds a parser without groupvit.cli.argument_parser")
