"""Command line of pretraining: `accelerate launch scripts/pretrain.py --config run.yaml [overrides]`.

Also installed as `groupvit pretrain ...`. The run file (YAML or JSON) holds every `TrainingConfig` field; the flags
below override the common ones, and `--set key=value` (dotted, JSON values) overrides any other.
"""

import argparse
import json
import os
import sys
from typing import Any

from groupvit.training.trainer import TrainingConfig, load_training_config, train, validate_config

# flag -> config key; each takes one value parsed as JSON when possible (so `0.001`, `true`, `[1, 2]` work)
COMMON_FLAGS = {
    "output_dir": "output_dir",
    "model_preset": "model_preset",
    "init_from": "init_from",
    "max_steps": "max_steps",
    "per_device_train_batch_size": "per_device_train_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "learning_rate": "learning_rate",
    "warmup_steps": "warmup_steps",
    "mixed_precision": "mixed_precision",
    "seed": "seed",
    "logging_steps": "logging_steps",
    "checkpointing_steps": "checkpointing_steps",
    "checkpoints_total_limit": "checkpoints_total_limit",
    "resume_from_checkpoint": "resume_from_checkpoint",
    "eval_steps": "eval_steps",
    "report_to": "report_to",
    "hub_model_id": "hub_model_id",
    "hub_revision": "hub_revision",
    "train_shards": "data.train_shards",
    "dataset": "data.dataset",
    "num_workers": "data.num_workers",
    "num_prompt_nouns": "data.num_prompt_nouns",
}
SWITCHES = {
    "gradient_checkpointing": "gradient_checkpointing",
    "torch_compile": "torch_compile",
    "push_to_hub": "push_to_hub",
    "hub_private": "hub_private",
}


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_args(argv: list[str] | None = None) -> tuple[str | None, dict[str, Any]]:
    parser = argparse.ArgumentParser(
        prog="groupvit pretrain",
        description="Pretrain GroupViT on image-caption pairs with Accelerate (1 CPU process to N GPUs).",
        epilog="Example: accelerate launch --cpu --num_processes 2 scripts/pretrain.py --config configs/demo.yaml "
        "--max_steps 200 --set data.synthetic_num_samples=4000",
    )
    parser.add_argument(
        "--config", help="YAML or JSON run file with TrainingConfig fields (see groupvit.training.trainer)"
    )
    for flag, key in COMMON_FLAGS.items():
        parser.add_argument(f"--{flag}", dest=flag, type=_value, help=f"overrides `{key}`")
    for flag, key in SWITCHES.items():
        parser.add_argument(f"--{flag}", dest=flag, action="store_true", default=None, help=f"sets `{key}`")
    parser.add_argument(
        "--set", dest="set_values", action="append", default=[], metavar="KEY=VALUE", help="any dotted config key"
    )
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    for flag, key in {**COMMON_FLAGS, **SWITCHES}.items():
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    for item in args.set_values:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = _value(value)
    return args.config, overrides


def main(argv: list[str] | None = None) -> int:
    path, overrides = parse_args(argv)
    try:
        config: TrainingConfig = load_training_config(path, overrides)
        validate_config(config, num_processes=int(os.environ.get("WORLD_SIZE", "1")))
    except (ValueError, TypeError, OSError) as exn:
        print(f"groupvit pretrain: invalid configuration: {exn}", file=sys.stderr)
        return 2
    summary = train(config)
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict | list)}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
