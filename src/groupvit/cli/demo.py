"""`groupvit demo`: segmentation from captions alone, on a laptop.

Runs the shipped demo model (trained on synthetic image-caption pairs; the masks were never used in training) through
the zero-shot segmenter on the synthetic test split, scores it against the masks, and writes to `--output`:
`results.json` (mIoU, per-class IoU, classification accuracy, groups used), `overlay_grid.png` (image | ground truth |
prediction, with a legend), `groups.png` (group assignments of both stages) and an overlay per user image.
`--train` first trains a fresh model from scratch with the same script and recipe, and reports it next to the
shipped one.
"""

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from groupvit.cli import report_error
from groupvit.cli.shipped_model import DEMO_SETTINGS, resolve_model, run_config_path
from groupvit.evaluation.evaluate import (
    evaluate_segmentation,
    format_report,
    select_background_threshold,
    synthetic_protocol,
    synthetic_samples,
)

logger = logging.getLogger(__name__)

PRESET = "objects"
IMAGE_SIZE = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="groupvit demo",
        description="Segment synthetic test images (and yours) with the shipped GroupViT demo model and score it.",
    )
    parser.add_argument("images", nargs="*", help="your own images to segment (paths)")
    parser.add_argument("--model", default="demo", help="'demo' (shipped), a directory or a Hub id")
    parser.add_argument("--output", default="demo_output", help="folder for results.json and the pictures")
    parser.add_argument("--labels", help="comma-separated labels for your images (default: the demo classes)")
    parser.add_argument("--num-test", type=int, default=200, help="synthetic test images to score")
    parser.add_argument("--num-validation", type=int, default=100, help="validation images for the threshold")
    parser.add_argument("--train", action="store_true", help="also train a fresh model from scratch first")
    parser.add_argument("--train-steps", type=int, help="optimizer steps of --train (default: the recipe's 600)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic splits and of --train")
    return parser.parse_args(argv)


def score_model(model: str, args: argparse.Namespace, output: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Evaluate one model on the synthetic test split, writing its overlays into `output`."""
    from groupvit.segmentation import GroupViTSegmenter

    segmenter = GroupViTSegmenter.from_pretrained(model)
    protocol = synthetic_protocol(PRESET, **settings)
    test = synthetic_samples(PRESET, "test", args.num_test, IMAGE_SIZE, args.seed)
    report = evaluate_segmentation(segmenter, test, protocol, overlay_dir=output, num_overlays=8)
    report.save(output / "results.json")
    return report.to_dict()


def train_fresh(args: argparse.Namespace, output: Path) -> tuple[str, dict[str, Any]]:
    """Train with the demo recipe, then fix the background threshold on the validation split."""
    from groupvit.segmentation import GroupViTSegmenter
    from groupvit.training.trainer import load_training_config, train

    overrides: dict[str, Any] = {"output_dir": str(output), "report_to": "none", "seed": args.seed}
    if args.train_steps:
        overrides["max_steps"] = args.train_steps
    summary = train(load_training_config(str(run_config_path()), overrides))
    validation = list(synthetic_samples(PRESET, "validation", args.num_validation, IMAGE_SIZE, args.seed))
    segmenter = GroupViTSegmenter.from_pretrained(str(output))
    threshold, scores = select_background_threshold(segmenter, validation, synthetic_protocol(PRESET))
    settings = {"background_threshold": threshold}
    record = {"options": settings, "validation_miou_by_threshold": scores, "preset": PRESET}
    (output / DEMO_SETTINGS).write_text(json.dumps(record, indent=2))
    return str(output), {"train_summary": summary, **record}


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    output = Path(args.output)
    missing = [path for path in args.images if not Path(path).is_file()]
    if missing:
        return report_error("groupvit demo", f"image file(s) not found: {', '.join(missing)}")
    try:
        model, settings = resolve_model(args.model)
        results: dict[str, Any] = {"model": args.model, "preset": PRESET, "settings": settings}
        output.mkdir(parents=True, exist_ok=True)
        results["test"] = score_model(model, args, output, settings)
    except (ValueError, OSError) as error:
        return report_error("groupvit demo", f"cannot run the model {args.model!r}: {error}")
    print(f"== {args.model} model on {args.num_test} synthetic test images ==")
    print(format_report(_as_report(results["test"])))
    if args.train:
        trained_dir, info = train_fresh(args, output / "trained_model")
        trained_out = output / "trained"
        trained_out.mkdir(exist_ok=True)
        results["trained"] = {**info, "test": score_model(trained_dir, args, trained_out, info["options"])}
        print(f"== freshly trained model ({info['train_summary']['step']} steps) ==")
        print(format_report(_as_report(results["trained"]["test"])))
    if args.images:
        from groupvit.data.synthetic import get_spec

        labels = args.labels.split(",") if args.labels else list(get_spec(PRESET).class_names)
        segment_user_images(model, args.images, [label.strip() for label in labels], settings, output)
    (output / "results.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"wrote {output}/results.json, overlay_grid.png, groups.png")
    return 0


def _as_report(values: dict[str, Any]) -> Any:
    from groupvit.evaluation.evaluate import EvaluationReport

    return EvaluationReport(**values)


if __name__ == "__main__":
    sys.exit(main())
