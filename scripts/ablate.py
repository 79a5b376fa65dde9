"""The paper's ablations at small scale, on the synthetic `objects` captions, at equal compute (same steps and batch).

Each variant trains from scratch with the demo recipe (`src/groupvit/resources/demo/run.yaml`) plus its overrides,
picks its background threshold on the validation split, and is scored on the test split (new seed, held-out
backgrounds and scales). Rows: test mIoU, zero-shot classification accuracy, groups used per image, wall time.

    python scripts/ablate.py --steps 800 --output ablations            # all variants, one after the other
    python scripts/ablate.py --variants paper,vit --steps 200           # a subset
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from groupvit.cli import argument_parser
from groupvit.cli.shipped_model import run_config_path
from groupvit.evaluation.evaluate import (
    evaluate_segmentation,
    select_background_threshold,
    synthetic_protocol,
    synthetic_samples,
)
from groupvit.segmentation import GroupViTSegmenter
from groupvit.training.trainer import load_training_config, train

PRESET = "objects"
IMAGE_SIZE = 64

# name -> (description, config overrides on top of the demo recipe)
PAPER = {"loss.group_diversity_weight": 0.0}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "paper": (
        "GroupViT as in the paper: 2 grouping stages, hard (Gumbel) assignment, multi-label loss",
        PAPER,
    ),
    "no_multi_label": (
        "paper without the multi-label loss (image-text contrastive only)",
        {**PAPER, "data.num_prompt_nouns": 0},
    ),
    "soft": (
        "paper with soft assignment (no Gumbel, no straight-through one-hot)",
        {**PAPER, "model_overrides": {"vision_config": {"hard_assignment": False, "gumbel": False}}},
    ),
    "one_stage": (
        "paper with one grouping stage (8 groups)",
        {
            **PAPER,
            "model_overrides": {
                "vision_config": {"depths": [3, 2], "num_group_tokens": [8, 0], "num_output_groups": [8, 8]},
            },
        },
    ),
    "vit": (
        "no grouping: plain ViT, segmentation by patch-to-label similarity",
        {
            **PAPER,
            "model_overrides": {"vision_config": {"depths": [5], "num_group_tokens": [0], "num_output_groups": [0]}},
        },
    ),
    "diversity": (
        "paper + group-diversity loss (the demo recipe)",
        {"loss.group_diversity_weight": 1.0},
    ),
    "semantic_max_diversity": (
        "demo recipe + semantic multi-label targets + max-over-groups prompt matching",
        {
            "loss.group_diversity_weight": 1.0,
            "loss.multi_label_target": "semantic",
            "loss.multi_label_group_pooling": "max",
        },
    ),
}


def run_variant(name: str, args: argparse.Namespace) -> dict[str, Any]:
    description, overrides = VARIANTS[name]
    output = Path(args.output) / name
    settings = {
        "output_dir": str(output),
        "max_steps": args.steps,
        "seed": args.seed,
        "report_to": "none",
        "checkpointing_steps": 0,
        "eval_steps": 0,
        "data.num_workers": 0,
        **overrides,
    }
    start = time.perf_counter()
    summary = train(load_training_config(str(run_config_path()), settings))
    train_seconds = time.perf_counter() - start
    segmenter = GroupViTSegmenter.from_pretrained(str(output))
    validation = list(synthetic_samples(PRESET, "validation", args.num_validation, IMAGE_SIZE, args.seed))
    threshold, _ = select_background_threshold(segmenter, validation, synthetic_protocol(PRESET))
    test = synthetic_samples(PRESET, "test", args.num_test, IMAGE_SIZE, args.seed)
    report = evaluate_segmentation(segmenter, test, synthetic_protocol(PRESET, background_threshold=threshold))
    return {
        "variant": name,
        "description": description,
        "test_miou": report.mean_iou,
        "classification_accuracy": report.classification_accuracy,
        "groups_used": report.groups_used,
        "oracle_group_miou": report.oracle_group_miou,
        "group_label_accuracy": report.group_label_accuracy,
        "background_threshold": threshold,
        "final_loss": summary.get("loss"),
        "train_seconds": train_seconds,
        "steps": args.steps,
        "seed": args.seed,
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | test mIoU (%) | classification acc. (%) | groups used / image | group-oracle mIoU (%) "
        "| fg groups labelled right (%) | threshold | train time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        groups = " / ".join(f"{g:.1f}" for g in row["groups_used"]) or "-"
        oracle, labelled = row.get("oracle_group_miou"), row.get("group_label_accuracy")
        lines.append(
            f"| {row['variant']}: {row['description']} | {100 * row['test_miou']:.1f} | "
            f"{100 * row['classification_accuracy']:.1f} | {groups} | "
            f"{'-' if oracle is None else f'{100 * oracle:.1f}'} | "
            f"{'-' if labelled is None else f'{100 * labelled:.1f}'} | {row['background_threshold']:.2f} | "
            f"{row['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_validation", type=int, default=100)
    parser.add_argument("--num_test", type=int, default=200)
    parser.add_argument("--output", default="ablations")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    rows = []
    for name in names:
        rows.append(run_variant(name, args))
        Path(args.output).mkdir(parents=True, exist_ok=True)
        (Path(args.output) / "ablations.json").write_text(json.dumps(rows, indent=2))
    table = markdown_table(rows)
    (Path(args.output) / "ablations.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
