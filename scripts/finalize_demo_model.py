"""Turn a finished demo training run into the package's shipped demo model.

    python scripts/pretrain.py --config src/groupvit/resources/demo/run.yaml --output_dir runs/demo
    python scripts/pretrain.py --config src/groupvit/resources/demo/run_stage2.yaml --output_dir runs/demo-stage2
    python scripts/pretrain.py --config src/groupvit/resources/demo/run_stage3.yaml --output_dir runs/demo-stage3
    python scripts/finalize_demo_model.py --run runs/demo-stage3

Copies the weights, config and processor into `src/groupvit/resources/demo/model/`, fixes the background threshold
on the synthetic validation split (never the test split), scores the test split, and writes `demo.json` (settings,
validation curve, test metrics, the training command) and a model card. The stored baselines of the previous
`demo.json` are kept; the protocol thresholds belong to the old model and are dropped: record new ones with
`groupvit demo --reselect_thresholds` (its `results.json` holds them under `thresholds_record`).
"""

import json
import shutil
import sys
from pathlib import Path

from groupvit.cli import argument_parser
from groupvit.cli.demo import RECORD
from groupvit.cli.shipped_model import DEMO_SETTINGS, demo_directory
from groupvit.evaluation.evaluate import (
    evaluate_segmentation,
    select_background_threshold,
    synthetic_protocol,
    synthetic_samples,
)
from groupvit.hub.model_card import render_model_card
from groupvit.segmentation import GroupViTSegmenter

FILES = ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json")
PRESET, IMAGE_SIZE = "objects", 64
COMMANDS = (
    "python scripts/pretrain.py --config src/groupvit/resources/demo/run.yaml --output_dir runs/demo",
    "python scripts/pretrain.py --config src/groupvit/resources/demo/run_stage2.yaml --output_dir runs/demo-stage2",
    "python scripts/pretrain.py --config src/groupvit/resources/demo/run_stage3.yaml --output_dir runs/demo-stage3",
)


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="output_dir of the finished training run")
    parser.add_argument("--output", default=str(demo_directory()))
    parser.add_argument("--num_validation", type=int, default=200)
    parser.add_argument("--num_test", type=int, default=200)
    parser.add_argument(
        "--command",
        action="append",
        help="training command(s) that produced --run, in order (default: the three stages of the demo recipe)",
    )
    args = parser.parse_args(argv)
    run, output = Path(args.run), Path(args.output)
    missing = [name for name in FILES if not (run / name).exists()]
    if missing:
        parser.error(f"{run} is not a finished run: missing {missing}")
    output.mkdir(parents=True, exist_ok=True)
    previous = output / DEMO_SETTINGS
    stored = json.loads(previous.read_text()).get(RECORD, {}).get("stored_baselines") if previous.exists() else None
    for name in FILES:
        shutil.copy2(run / name, output / name)

    segmenter = GroupViTSegmenter.from_pretrained(str(output))
    validation = list(synthetic_samples(PRESET, "validation", args.num_validation, IMAGE_SIZE))
    threshold, curve = select_background_threshold(segmenter, validation, synthetic_protocol(PRESET))
    protocol = synthetic_protocol(PRESET, background_threshold=threshold)
    report = evaluate_segmentation(segmenter, synthetic_samples(PRESET, "test", args.num_test, IMAGE_SIZE), protocol)
    summary = json.loads((run / "train_summary.json").read_text())
    record = {
        "preset": PRESET,
        "options": {"background_threshold": threshold},
        "validation_miou_by_threshold": curve,
        "test": report.to_dict(),
        "training_command": " && ".join(args.command or COMMANDS),
        "training": {k: v for k, v in summary.items() if k != "history"},
        "learning_curve": summary.get("history", []),
    }
    if stored:
        record[RECORD] = {"stored_baselines": stored}
    (output / DEMO_SETTINGS).write_text(json.dumps(record, indent=2, default=float))
    results = [
        {
            "dataset": "synthetic-objects",
            "dataset_name": "groupvit synthetic objects (test split)",
            "dataset_type": "synthetic",
            "split": "test",
            "mean_iou": report.mean_iou,
        }
    ]
    training_args = json.loads((run / "training_config.json").read_text())
    card = render_model_card(segmenter.model.config, results=results, training_args=training_args)
    card.save(output / "README.md")
    print(
        json.dumps(
            {
                "background_threshold": threshold,
                "test_miou": report.mean_iou,
                "classification_accuracy": report.classification_accuracy,
                "groups_used": report.groups_used,
            },
            default=float,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
