"""Command line of pretraining: `python scripts/pretrain.py --config run.yaml [--field value ...] [--set a.b=v]`.

Also installed as `groupvit pretrain ...`. Every field of `TrainingConfig` and of its `data` block (`DataArguments`)
is a flag of the same name, generated from the dataclasses (type, choices, default and help come from their
annotations and docstrings, so `--help` never drifts from the config). Precedence: `--set` and flags over the run
file (`--config`) over the dataclass defaults; `mixed_precision` and `gradient_accumulation_steps` left unset are taken
from the launcher (`accelerate launch --mixed_precision bf16`).
"""

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
import types
import typing
from typing import Any, Literal

from groupvit.cli import argument_parser
from groupvit.training.checkpointing import ensure_writable_directory
from groupvit.training.config import (
    DataArguments,
    LossArguments,
    TrainingConfig,
    load_training_config,
    validate_config,
)
from groupvit.training.trainer import FINISHED_DISTRIBUTED_RUNS, train

EXAMPLES = """examples:
  python scripts/pretrain.py --config configs/tiny-synthetic.yaml
  torchrun --nproc_per_node 2 scripts/pretrain.py --config configs/tiny-synthetic.yaml --per_device_train_batch_size 16
  accelerate launch --multi_gpu --num_processes 16 --mixed_precision bf16 scripts/pretrain.py \\
      --config configs/groupvit-s-gcc-yfcc.yaml
  python scripts/pretrain.py --config configs/tiny-synthetic.yaml --dataset ./pairs.parquet --set data.num_workers=2
"""
# a data flag that names a source selects it, unless the command line also gives `--source`
SOURCE_OF = {"dataset": "hf", "train_shards": "webdataset"}


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def field_docs(cls: type) -> dict[str, str]:
    """The `Args:` descriptions of a Google-style class docstring, by name (continuation lines joined)."""
    docs: dict[str, str] = {}
    name = None
    in_args = False
    for line in (cls.__doc__ or "").splitlines():
        stripped = line.strip()
        if stripped == "Args:":
            in_args = True
            continue
        if not in_args:
            continue
        match = re.match(r"^ {8}(\w+): (.*)$", line)
        if match:
            name = match.group(1)
            docs[name] = match.group(2)
        elif line.startswith(" " * 12) and name:
            docs[name] += " " + stripped
        elif stripped:  # the next section
            in_args = False
    return docs


def _argument_spec(annotation: Any) -> dict[str, Any]:
    """argparse keywords (type, nargs, choices, metavar) for a config field annotation."""
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) in (types.UnionType, typing.Union) and type(None) in args
    inner = [a for a in args if a is not type(None)] if optional else [annotation]
    if len(inner) == 1 and typing.get_origin(inner[0]) is Literal:
        return {"type": str, "choices": [str(c) for c in typing.get_args(inner[0])]}
    if inner == [bool]:
        return {"type": _bool, "nargs": "?", "const": True, "metavar": "BOOL"}
    if len(inner) == 1 and typing.get_origin(inner[0]) is tuple:
        element = typing.get_args(inner[0])[0]
        return {"type": element, "nargs": len(typing.get_args(inner[0])), "metavar": element.__name__.upper()}
    lists = [a for a in inner if typing.get_origin(a) is list]
    if lists:  # `list[int]`, `str | list[str]`: one or more values
        element = typing.get_args(lists[0])[0]
        return {"type": element, "nargs": "+", "metavar": element.__name__.upper()}
    if len(inner) == 1 and (inner[0] is dict or typing.get_origin(inner[0]) is dict):
        return {"type": json.loads, "metavar": "JSON"}
    if len(inner) == 1 and inner[0] in (int, float, str):
        convert = inner[0]
        if optional:  # `--warmup_steps none` sets None

            def convert(text: str, _type: type = inner[0]) -> Any:
                return None if text.lower() in ("none", "null") else _type(text)

            convert.__name__ = inner[0].__name__
        return {"type": convert, "metavar": inner[0].__name__.upper()}
    raise TypeError(f"No command-line form for a config field of type {annotation}")


def _config_fields() -> list[tuple[str, str, dataclasses.Field, str]]:
    """(flag, dotted config key, field, help) for every field of TrainingConfig and its `data`/`loss` blocks."""
    found = []
    for cls, prefix in _BLOCKS:
        docs = field_docs(cls)
        for spec in dataclasses.fields(cls):
            if dataclasses.is_dataclass(spec.type) or spec.name in ("data", "loss"):
                continue
            found.append((spec.name, prefix + spec.name, spec, docs.get(spec.name, "")))
    flags = [flag for flag, *_ in found]
    clashes = sorted({f for f in flags if flags.count(f) > 1})
    if clashes:
        raise TypeError(f"Config fields {clashes} exist in more than one config block")
    return found


_BLOCKS = ((TrainingConfig, ""), (DataArguments, "data."), (LossArguments, "loss."))


def _default(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    return spec.default_factory() if spec.default_factory is not dataclasses.MISSING else None


def build_parser() -> argparse.ArgumentParser:
    parser = argument_parser(
        "groupvit pretrain",
        description="Pretrain GroupViT on image-caption pairs with Accelerate (1 CPU process to N GPUs). Each flag "
        "overrides the field of the same name in the run file.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON run file with TrainingConfig fields")
    parser.add_argument(
        "--set",
        dest="set_values",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any dotted config key, value parsed as JSON (`--set data.crop_scale=[0.5,1.0]`)",
    )
    groups = {prefix: parser.add_argument_group(prefix.rstrip(".") or "run (TrainingConfig)") for _, prefix in _BLOCKS}
    for flag, key, spec, doc in _config_fields():
        group = groups[key[: key.index(".") + 1] if "." in key else ""]
        default = _default(spec)
        help_text = f"{doc} (default: {json.dumps(default) if not isinstance(default, str) else default})"
        group.add_argument(
            f"--{flag}",
            dest=key,
            default=argparse.SUPPRESS,
            help=help_text.replace("%", "%%"),
            **_argument_spec(spec.type),
        )
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[str | None, dict[str, Any]]:
    """The run file and the overrides (dotted keys) given on the command line."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    path, set_values = args.pop("config"), args.pop("set_values")
    overrides: dict[str, Any] = dict(args)
    shards = overrides.get("data.train_shards")
    if isinstance(shards, list) and len(shards) == 1:  # one pattern stays a string, as in a run file
        overrides["data.train_shards"] = shards[0]
    for item in set_values:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = _value(value)
    for name, source in SOURCE_OF.items():
        if overrides.get(f"data.{name}") and "data.source" not in overrides:
            overrides["data.source"] = source
    return path, overrides


def main(argv: list[str] | None = None) -> int:
    path, overrides = parse_args(argv)
    try:
        config: TrainingConfig = load_training_config(path, overrides)
        validate_config(config, num_processes=int(os.environ.get("WORLD_SIZE", "1")))
        ensure_writable_directory(config.output_dir)
    except (ValueError, TypeError, OSError) as exn:
        print(f"groupvit pretrain: invalid configuration: {exn}", file=sys.stderr)
        return 2
    summary = train(config)
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict | list)}, default=float))
    if FINISHED_DISTRIBUTED_RUNS:
        # a finished multi-process run: every file is written; skip the gloo teardown that can deadlock (see `train`)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
