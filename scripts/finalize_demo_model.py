"""Turn a finished demo training run into the package's shipped demo model.

    python scripts/pretrain.py --config src/groupvit/resources/demo/shape/run_stage0.yaml
    python scripts/pretrain.py --config src/groupvit/resources/demo/shape/run.yaml
    python scripts/pretrain.py --config src/groupvit/resources/demo/shape/run_stage2.yaml
    python scripts/pretrain.py --config src/groupvit/resources/demo/shape/run_stage3.yaml
    python scripts/finalize_demo_model.py --run runs/shape-stage3

Copies the weights, config and processor into `src/groupvit/resources/demo/model/`, scores the model on the fixed
synthetic protocol (`groupvit.evaluation.benchmark.SyntheticBenchmark`: thresholds chosen on validation per scale,
500 test images at 2x and 1x, the probe and the baselines) and writes `demo.json` (inference options, the protocol
record `groupvit demo` reuses, the scores, the training command, and every stage's summary and curve, found by
following the runs' `init_from`) and a model card with the headline (2x) test mIoU. The previous `demo.json`'s
stored baselines and random-init thresholds (model-independent) are kept.
"""

import json
import shutil
import sys
from pathlib import Path

from groupvit.cli import argument_parser
from groupvit.cli.demo import RECORD, model_settings
from groupvit.cli.shipped_model import DEMO_SETTINGS, demo_directory
from groupvit.evaluation.benchmark import SyntheticBenchmark, run_benchmark
from groupvit.hub.model_card import render_model_card
from groupvit.segmentation import GroupViTSegmenter
from groupvit.training.trainer import training_lineage

FILES = ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json")
COMMANDS = tuple(
    f"python scripts/pretrain.py --config src/groupvit/resources/demo/shape/{name}.yaml"
    for name in ("run_stage0", "run", "run_stage2", "run_stage3")
)


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="output_dir of the finished training run")
    parser.add_argument("--output", default=str(demo_directory()))
    parser.add_argument(
        "--command",
        action="append",
        help="training command(s) that produced --run, in order (default: the shape-first demo recipe's four stages)",
    )
    args = parser.parse_args(argv)
    run, output = Path(args.run), Path(args.output)
    missing = [name for name in FILES if not (run / name).exists()]
    if missing:
        parser.error(f"{run} is not a finished run: missing {missing}")
    output.mkdir(parents=True, exist_ok=True)
    previous = output / DEMO_SETTINGS
    kept = json.loads(previous.read_text()).get(RECORD, {}) if previous.exists() else {}
    for name in FILES:
        shutil.copy2(run / name, output / name)

    benchmark, segmenter = SyntheticBenchmark(), GroupViTSegmenter.from_pretrained(str(output))
    result = run_benchmark(
        segmenter,
        benchmark,
        random_init_thresholds=kept.get("random_init_thresholds"),
        stored_baselines=kept.get("stored_baselines"),
    )
    settings = model_settings(benchmark, result)
    if kept.get("stored_baselines"):
        settings[RECORD]["stored_baselines"] = kept["stored_baselines"]
    headline = benchmark.headline_scale
    stages = training_lineage(run)
    record = {
        **settings,
        "test": result["model"][f"{headline}x"],
        "summary": result["summary"],
        "training_command": " && ".join(args.command or COMMANDS),
        # as `groupvit demo --train` reports its stages, each with its learning curve
        "train_stages": [
            {
                "output_dir": stage["output_dir"],
                "init_from": stage["init_from"],
                **{k: v for k, v in stage["summary"].items() if k != "history"},
                "learning_curve": stage["summary"].get("history", []),
            }
            for stage in stages
        ],
        "train_wall_time_s": sum(stage["summary"].get("wall_time_s", 0.0) for stage in stages),
    }
    (output / DEMO_SETTINGS).write_text(json.dumps(record, indent=2, default=float))
    size = benchmark.options(headline)["short_side"]
    results = [
        {
            "dataset": "synthetic-objects",
            "dataset_name": f"groupvit synthetic objects (test split, {headline}x protocol: {size} px)",
            "dataset_type": "synthetic",
            "split": "test",
            "mean_iou": result["model"][f"{headline}x"]["mean_iou"],
        }
    ]
    card = render_model_card(segmenter.model.config, results=results, training_args=stages[-1]["config"])
    card.save(output / "README.md")
    print(json.dumps({"options": settings["options"], "summary": result["summary"]}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
