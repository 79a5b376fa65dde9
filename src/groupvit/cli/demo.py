"""`groupvit demo`: segmentation from captions alone, on a laptop, beside its baselines.

Runs the shipped demo model (trained on synthetic image-caption pairs; the masks were never used in training) through
the fixed synthetic protocol (`docs/protocol_synthetic.md`, :class:`groupvit.evaluation.benchmark.SyntheticBenchmark`):
500 test images at 2x (128 px) and 1x (64 px), background thresholds chosen on the validation split, the recoloured
objectness probe, and the baselines (all-background, random init, colour co-occurrence, patch and group oracles, a
stored plain-ViT number). It writes to `--output`: `results.json` (every number; `summary` is the table printed),
`overlay_grid.png` (image | ground truth | prediction, with a legend), `groups.png` (group assignments of both stages)
and an overlay per user image. `--train` first trains a fresh model from scratch with the quick recipe (the shipped
recipe's stage 1, then `run_quick.yaml`: its region terms right away, under 10 CPU minutes in all; same training code)
and reports it next to the shipped one. `--aggregate a.json b.json c.json` prints the mean and range of several runs'
results (e.g. three training seeds) instead.
"""

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from groupvit.cli import argument_parser, report_error
from groupvit.cli.shipped_model import (
    DEMO_SETTINGS,
    QUICK_RECIPE,
    demo_directory,
    resolve_model,
    run_config_path,
)
from groupvit.data.synthetic import RECOLORS
from groupvit.evaluation.benchmark import (
    SyntheticBenchmark,
    aggregate_results,
    format_aggregate,
    format_benchmark,
    run_benchmark,
)
from groupvit.evaluation.evaluate import EvaluationReport, format_report

logger = logging.getLogger(__name__)

PROTOCOL = SyntheticBenchmark()
RECORD = "protocol_synthetic"  # the key of the validated thresholds in a model's demo.json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(
        "groupvit demo",
        description="Score the shipped GroupViT demo model on the synthetic protocol beside its baselines, and "
        "segment your images.",
    )
    parser.add_argument("images", nargs="*", help="your own images to segment (paths)")
    parser.add_argument("--model", default="demo", help="'demo' (shipped), a directory or a Hub id")
    parser.add_argument("--output", default="demo_output", help="folder for results.json and the pictures")
    parser.add_argument("--labels", help="comma-separated labels for your images (default: the demo classes)")
    parser.add_argument(
        "--num_test", type=int, default=PROTOCOL.num_test, help=f"test images (protocol: {PROTOCOL.num_test})"
    )
    parser.add_argument(
        "--num_validation",
        type=int,
        default=PROTOCOL.num_validation,
        help=f"validation images the thresholds are chosen on (protocol: {PROTOCOL.num_validation})",
    )
    parser.add_argument(
        "--probes",
        default=",".join(PROTOCOL.probes),
        help=f"recoloured test splits to score, some of {', '.join(RECOLORS)} (swap_hue, swap_sv: the halves of swap)",
    )
    parser.add_argument(
        "--num_color_train",
        type=int,
        default=PROTOCOL.num_color_train,
        help=f"training images of the colour baseline (protocol: {PROTOCOL.num_color_train})",
    )
    parser.add_argument("--no_baselines", action="store_true", help="score the model only")
    parser.add_argument(
        "--reselect_thresholds", action="store_true", help="choose every threshold on validation, ignoring stored ones"
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help=f"also train a fresh model from scratch with the quick recipe ({' then '.join(QUICK_RECIPE)})",
    )
    parser.add_argument("--train_steps", type=int, help="optimizer steps per --train stage (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of --train")
    parser.add_argument("--data_seed", type=int, default=PROTOCOL.seed, help="seed of the synthetic splits")
    parser.add_argument(
        "--aggregate", nargs="+", metavar="RESULTS", help="results.json files of several runs: print mean and range"
    )
    return parser.parse_args(argv)


def stored_record(model_dir: str | Path) -> dict[str, Any]:
    """The validated protocol thresholds (and stored baselines) saved in a model's `demo.json`, or `{}`."""
    path = Path(model_dir) / DEMO_SETTINGS
    return json.loads(path.read_text()).get(RECORD, {}) if path.exists() else {}


def benchmark_model(
    model: str, benchmark: SyntheticBenchmark, args: argparse.Namespace, output: Path, with_baselines: bool
) -> dict[str, Any]:
    """Run the benchmark on one model, reusing thresholds stored for the same validation settings."""
    from groupvit.segmentation import GroupViTSegmenter

    own, shipped = stored_record(model), stored_record(demo_directory())
    usable = not args.reselect_thresholds and benchmark.same_validation(own.get("benchmark", {}))
    random_usable = not args.reselect_thresholds and benchmark.same_validation(shipped.get("benchmark", {}))
    segmenter = GroupViTSegmenter.from_pretrained(model)
    return run_benchmark(
        segmenter,
        benchmark,
        thresholds=own.get("thresholds") if usable else None,
        random_init_thresholds=shipped.get("random_init_thresholds") if random_usable else None,
        stored_baselines=shipped.get("stored_baselines") if with_baselines else None,
        with_baselines=with_baselines,
        overlay_dir=output,
    )


def model_settings(benchmark: SyntheticBenchmark, result: dict[str, Any]) -> dict[str, Any]:
    """A scored model's `demo.json` settings: the protocol record, and the inference options of `groupvit segment`
    and `groupvit app` for it: the scale whose validation sweep scored best (the lower one on a tie; the lowest when
    none was swept) as the short side, with that scale's threshold. Never the test split."""
    record = threshold_record(benchmark, result)
    curves = record["validation_miou_by_threshold"]
    swept = [scale for scale in benchmark.scales if f"{scale}x" in curves]
    best = max(swept, key=lambda s: (max(curves[f"{s}x"].values()), -s)) if swept else min(benchmark.scales)
    options = {
        "short_side": benchmark.options(best)["short_side"],
        "background_threshold": record["thresholds"][f"{best}x"],
    }
    return {"options": options, "preset": benchmark.preset, RECORD: record}


def threshold_record(benchmark: SyntheticBenchmark, result: dict[str, Any]) -> dict[str, Any]:
    """What `demo.json` stores so that later runs skip the validation sweeps (see :func:`stored_record`)."""
    scales = [key for key in result["model"] if key.endswith("x")]
    record: dict[str, Any] = {
        "benchmark": benchmark.to_dict(),
        "thresholds": {key: result["model"][key]["background_threshold"] for key in scales},
        "validation_miou_by_threshold": {
            key: result["model"][key]["validation_miou_by_threshold"]
            for key in scales
            if "validation_miou_by_threshold" in result["model"][key]
        },
    }
    random_init = result.get("baselines", {}).get("random_init")
    if random_init:
        record["random_init_thresholds"] = {f"{benchmark.headline_scale}x": random_init["background_threshold"]}
    return record


def train_fresh(args: argparse.Namespace, output: Path) -> tuple[str, dict[str, Any]]:
    """Train with the quick demo recipe from scratch: its stages in order, each starting from the previous one's
    output; the last one's goes to `output` (the validation thresholds are chosen when it is scored)."""
    from groupvit.training.trainer import load_training_config, train

    previous: Path | None = None
    stages: list[dict[str, Any]] = []
    for index, name in enumerate(QUICK_RECIPE):
        last = index == len(QUICK_RECIPE) - 1
        folder = output if last else output.with_name(f"{output.name}-stage{index + 1}")
        origin = str(previous) if previous is not None else None
        overrides: dict[str, Any] = {"output_dir": str(folder), "report_to": "none", "seed": args.seed}
        if origin is not None:
            overrides["init_from"] = origin
        if args.train_steps:
            overrides["max_steps"] = args.train_steps
        summary = train(load_training_config(str(run_config_path(name)), overrides))
        stages.append({"run_file": name, "output_dir": str(folder), "init_from": origin, **summary})
        previous = folder
    return str(output), {"train_stages": stages, "train_wall_time_s": sum(stage["wall_time_s"] for stage in stages)}


def segment_user_images(model: str, images: list[str], labels: list[str], settings: dict, output: Path) -> None:
    from groupvit.cli.shipped_model import inference_options
    from groupvit.processing_groupvit import to_rgb_image
    from groupvit.segmentation import GroupViTSegmenter
    from groupvit.segmentation.visualization import overlay

    segmenter = GroupViTSegmenter.from_pretrained(model)
    options = inference_options(segmenter.model.config.vision_config.image_size, settings)
    for path in images:
        image = to_rgb_image(path)
        result = segmenter.segment(image, labels, background_first=True, **options)[0]
        picture = overlay(image, result.label_map, result.labels, background_index=0)
        target = output / f"{Path(path).stem}_overlay.png"
        picture.save(target)
        print(f"{path}: {', '.join(result.masks())} -> {target}")


def aggregate(paths: list[str], output: Path) -> int:
    """Mean and range of several runs. Results of `--train` runs (one per training seed) aggregate their freshly
    trained models: the `--model` they also scored is the same model in every run."""
    runs = [json.loads(Path(path).read_text()) for path in paths]
    trained = [path for path, run in zip(paths, runs, strict=True) if "trained" in run]
    if trained and len(trained) != len(runs):
        others = sorted(set(paths) - set(trained))
        return report_error("groupvit demo", f"cannot aggregate --train results {trained} with others {others}")
    what = "freshly trained models (--train)" if trained else "models"
    values = aggregate_results([run["trained"] for run in runs] if trained else runs)
    print(f"== {what}: mean and [min, max] over {len(runs)} runs ==")
    print(format_aggregate(values))
    output.mkdir(parents=True, exist_ok=True)
    record = {"runs": paths, "aggregated": "trained" if trained else "model", "aggregate": values}
    (output / "aggregate.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {output}/aggregate.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    output = Path(args.output)
    if args.aggregate:
        return aggregate(args.aggregate, output)
    missing = [path for path in args.images if not Path(path).is_file()]
    if missing:
        return report_error("groupvit demo", f"image file(s) not found: {', '.join(missing)}")
    output.mkdir(parents=True, exist_ok=True)
    benchmark = SyntheticBenchmark(
        num_test=args.num_test,
        num_validation=args.num_validation,
        seed=args.data_seed,
        num_color_train=args.num_color_train,
        probes=tuple(p.strip() for p in args.probes.split(",") if p.strip()),
    )
    try:
        model, settings = resolve_model(args.model)
        result = benchmark_model(model, benchmark, args, output, with_baselines=not args.no_baselines)
    except (ValueError, OSError) as error:
        return report_error("groupvit demo", f"cannot run the model {args.model!r}: {error}")
    headline = f"{benchmark.headline_scale}x"
    results: dict[str, Any] = {
        "model_name": args.model,
        "settings": settings,
        **result,
        "test": result["model"][headline],
        "thresholds_record": threshold_record(benchmark, result),
    }
    print(f"== {args.model} model ==")
    print(format_benchmark(result))
    print(f"-- {args.model} model at {headline}, per class --")
    print(format_report(EvaluationReport(**_report_fields(result["model"][headline]))))
    if args.train:
        trained_dir, info = train_fresh(args, output / "trained_model")
        trained_out = output / "trained"
        trained_out.mkdir(exist_ok=True)
        trained = benchmark_model(trained_dir, benchmark, args, trained_out, with_baselines=False)
        fresh = model_settings(benchmark, trained)
        (Path(trained_dir) / DEMO_SETTINGS).write_text(json.dumps(fresh, indent=2, default=float))
        results["trained"] = {**info, "options": fresh["options"], **trained, "test": trained["model"][headline]}
        steps = " + ".join(str(stage["step"]) for stage in info["train_stages"])
        print(f"== freshly trained model ({steps} steps, {info['train_wall_time_s'] / 60:.1f} min of training) ==")
        print(format_benchmark(trained))
    if args.images:
        from groupvit.data.synthetic import get_spec

        labels = args.labels.split(",") if args.labels else list(get_spec(benchmark.preset).class_names)
        segment_user_images(model, args.images, [label.strip() for label in labels], settings, output)
    (output / "results.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"wrote {output}/results.json, overlay_grid.png, groups.png")
    return 0


def _report_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The `EvaluationReport` fields of a report dict that carries extra keys (threshold, validation curve)."""
    import dataclasses

    names = {field.name for field in dataclasses.fields(EvaluationReport)}
    return {key: value for key, value in values.items() if key in names}


if __name__ == "__main__":
    sys.exit(main())
