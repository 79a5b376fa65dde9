"""The `groupvit` command: `groupvit SUBCOMMAND [ARGS...]`.

Every subcommand is a `main(argv: list[str] | None) -> int` function, found through :data:`SUBCOMMANDS` (name ->
module, function, one-line help) and imported only when it runs, so a module that is missing or broken affects its
own subcommand and nothing else. Add one with an entry in :data:`SUBCOMMANDS` or :func:`register_subcommand`.

The command-line layer: this package is the only place in `groupvit` that parses argv. One module per
subcommand (`segment`, `evaluate`, `pretrain`, `demo`, `push`, `export-onnx`, `app`), each a thin layer over the
library functions it calls.

Flags are spelled one way across subcommands: with underscores, as transformers' example scripts and the run-config
field names (`--max_steps`, `--short_side`). Every parser comes from :func:`argument_parser`, which also accepts the
hyphenated spelling of each long option (`--short-side`), as `transformers.HfArgumentParser` does, while `--help`
shows only the canonical one.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SUBCOMMANDS",
    "ArgumentParser",
    "Subcommand",
    "argument_parser",
    "main",
    "register_subcommand",
    "report_error",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subcommand:
    """Where a subcommand lives: `module.function(argv) -> int`, imported lazily."""

    module: str
    function: str
    help: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "segment": Subcommand("groupvit.cli.segment", "main", "zero-shot segmentation of images into given labels"),
    # hooks for the other entry points; each module defines the function named here
    "demo": Subcommand("groupvit.cli.demo", "main", "end-to-end demo on synthetic data"),
    "pretrain": Subcommand("groupvit.cli.pretrain", "main", "pretrain GroupViT on image-caption pairs (Accelerate)"),
    "evaluate": Subcommand("groupvit.cli.evaluate", "main", "zero-shot segmentation mIoU on a dataset protocol"),
    "push": Subcommand("groupvit.cli.push", "main", "push a saved model folder to the Hugging Face Hub"),
    "app": Subcommand("groupvit.cli.app", "main", "serve a web page (Gradio) for zero-shot segmentation"),
    "export-onnx": Subcommand("groupvit.cli.export_onnx", "main", "export the image and text towers to ONNX"),
}


def report_error(prog: str, error: BaseException | str) -> int:
    """Print `PROG: error: MESSAGE` as one line on stderr (no traceback) and return the exit status 2.

    The message is the error's text with its line breaks folded (transformers' loading errors span several lines).

    Args:
        prog: The command, e.g. `"groupvit segment"`.
        error: The exception or message to report.

    Returns:
        2, the exit status of a command that was given something it cannot use.
    """
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def _other_spelling(option: str) -> str | None:
    """`--short_side` -> `--short-side` and back; None for a short option or a one-word one."""
    if not option.startswith("--"):
        return None
    name = option[2:]
    other = name.replace("_", "-") if "_" in name else name.replace("-", "_")
    return None if other == name else f"--{other}"


class ArgumentParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` that accepts both spellings of every long option and shows one in `--help`.

    The other spelling (`-` for `_` or back) is registered as a hidden alias of the same action when parsing starts,
    so it works for options added to argument groups and mutually exclusive groups alike. Abbreviations are off: a
    flag is spelled out in full (`--max_step` is an error, not `--max_steps`).

    Example:
        ```python
        >>> parser = ArgumentParser(prog="groupvit example")
        >>> _ = parser.add_argument("--short_side", type=int)
        >>> parser.parse_args(["--short-side", "448"]).short_side
        448

        ```
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _register_other_spellings(self) -> None:
        for action in self._actions:
            for option in action.option_strings:
                other = _other_spelling(option)
                if other is None:
                    continue
                known = self._option_string_actions.get(other)
                if known is None:
                    self._option_string_actions[other] = action  # parsed, but not in `option_strings`: not in help
                elif known is not action:
                    raise ValueError(f"{self.prog}: options {option!r} and {other!r} are different flags")

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._register_other_spellings()
        return super().parse_known_args(args, namespace)


def argument_parser(prog: str | None = None, **kwargs: Any) -> ArgumentParser:
    """The parser of `groupvit PROG`-style commands: every subcommand builds its parser here.

    Args:
        prog: The command as shown in usage and errors, e.g. `"groupvit segment"`.
        **kwargs: Passed to `argparse.ArgumentParser` (description, epilog, formatter_class, ...).
    """
    return ArgumentParser(prog=prog, **kwargs)


def register_subcommand(name: str, module: str, function: str, help: str, overwrite: bool = False) -> None:
    """Add `groupvit NAME`, run as `module.function(argv)`."""
    if name in SUBCOMMANDS and not overwrite:
        raise ValueError(f"subcommand {name!r} already exists; pass overwrite=True to replace it")
    SUBCOMMANDS[name] = Subcommand(module, function, help)


def _top_level_parser() -> argparse.ArgumentParser:
    parser = argument_parser(
        "groupvit",
        description="GroupViT (Semantic Segmentation Emerges from Text Supervision) as a Transformers model.",
        epilog="Run `groupvit SUBCOMMAND --help` for the options of a subcommand.",
    )
    subparsers = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", title="subcommands")
    for name, command in SUBCOMMANDS.items():
        subparsers.add_parser(name, help=command.help, add_help=False)
    return parser


def _resolve(name: str) -> Callable[[list[str]], int]:
    command = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as error:
        if error.name is not None and command.module.startswith(error.name):
            raise RuntimeError(
                f"`groupvit {name}` is not available: module {command.module} is not installed"
            ) from error
        raise
    function = getattr(module, command.function, None)
    if function is None:
        raise RuntimeError(f"`groupvit {name}` is not available: {command.module} has no {command.function}()")
    return function


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `groupvit` console script.

    Args:
        argv: The arguments after `groupvit`; default `sys.argv[1:]`.

    Returns:
        The subcommand's exit status (2 for an unknown or unavailable subcommand).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _top_level_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        from groupvit import __version__

        print(f"groupvit {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        parser.print_usage(sys.stderr)
        print(f"groupvit: error: unknown subcommand {name!r} (choose from {', '.join(SUBCOMMANDS)})", file=sys.stderr)
        return 2
    try:
        function = _resolve(name)
    except RuntimeError as error:
        print(f"groupvit: error: {error}", file=sys.stderr)
        return 2
    return int(function(rest) or 0)


# --------------------------------------------------------------------------------------------------------------------
# groupvit segment
# --------------------------------------------------------------------------------------------------------------------


if __name__ == "__main__":
    sys.exit(main())
