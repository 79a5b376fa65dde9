"""`groupvit evaluate` / `scripts/evaluate_segmentation.py`: zero-shot segmentation mIoU under a named protocol.

Runs under `accelerate launch` too: images are split across processes and the confusion matrices summed.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from groupvit.evaluation.evaluate import (
    evaluate_segmentation,
    format_report,
    samples_from_dataset,
    synthetic_protocol,
    synthetic_samples,
)
from groupvit.segmentation import GroupViTSegmenter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="groupvit evaluate",
        description="Zero-shot semantic segmentation mIoU of a GroupViT model under a named protocol.",
        epilog="Examples: groupvit evaluate --model nvidia/groupvit-gcc-yfcc --protocol voc --dataset ./voc_val  |  "
        "groupvit evaluate --model demo --protocol synthetic --synthetic-split test --num-samples 200",
    )
    parser.add_argument("--model", default="demo", help="directory, Hub id, or 'demo' for the shipped demo model")
    parser.add_argument("--protocol", default="synthetic", help="voc | context | coco_object | synthetic")
    parser.add_argument("--dataset", help="datasets source with image + annotation columns (Hub id or local path)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--annotation-column", default="annotation")
    parser.add_argument("--synthetic-preset", default="objects")
    parser.add_argument("--synthetic-split", default="test", choices=["train", "validation", "test"])
    parser.add_argument("--synthetic-seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64, help="side of generated synthetic images")
    parser.add_argument("--num-samples", type=int, default=200, help="images to evaluate (synthetic, or a cap)")
    parser.add_argument("--background-threshold", type=float, help="override the protocol's threshold")
    parser.add_argument("--mode", choices=["whole", "slide"])
    parser.add_argument("--short-side", type=int)
    parser.add_argument("--window", type=int)
    parser.add_argument("--stride", type=int)
    parser.add_argument("--output", default="eval_output", help="results.json and overlay PNGs go here")
    parser.add_argument("--num-overlays", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--no-baselines", action="store_true", help="synthetic: skip the baselines (baselines.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """`groupvit evaluate` / `scripts/evaluate_segmentation.py` (also under `accelerate launch`)."""
    from accelerate import Accelerator

    from groupvit.cli.shipped_model import resolve_model
    from groupvit.segmentation import get_protocol

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    changes = {
        key: value
        for key, value in {
            "background_threshold": args.background_threshold,
            "mode": args.mode,
            "short_side": args.short_side,
            "window": args.window,
            "stride": args.stride,
        }.items()
        if value is not None
    }
    model_path, defaults = resolve_model(args.model)
    if args.protocol == "synthetic":
        protocol = synthetic_protocol(args.synthetic_preset, **{**defaults, **changes})
        samples = synthetic_samples(
            args.synthetic_preset, args.synthetic_split, args.num_samples, args.image_size, args.synthetic_seed
        )
    else:
        if not args.dataset:
            print(f"groupvit evaluate: --dataset is required for protocol {args.protocol!r}")
            return 2
        from itertools import islice

        from groupvit.data.streams import load_hf_dataset

        protocol = get_protocol(args.protocol)
        protocol = protocol.with_class_names(list(protocol.class_names), **changes)
        dataset = load_hf_dataset(args.dataset, split=args.split)
        samples = islice(samples_from_dataset(dataset, args.image_column, args.annotation_column), args.num_samples)
    accelerator = Accelerator()
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    segmenter = GroupViTSegmenter.from_pretrained(model_path, device=accelerator.device, dtype=dtype)
    output = Path(args.output)
    report = evaluate_segmentation(
        segmenter, samples, protocol, accelerator=accelerator, overlay_dir=output, num_overlays=args.num_overlays
    )
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        report.save(output / "results.json")
        print(format_report(report))
    if args.protocol == "synthetic" and not args.no_baselines and accelerator.is_main_process:
        from groupvit.evaluation.benchmark import SyntheticBenchmark, compute_baselines, format_rows

        bench = SyntheticBenchmark(args.synthetic_preset, args.image_size, args.synthetic_seed, args.num_samples)
        baselines, rows = compute_baselines(bench)
        (output / "baselines.json").write_text(json.dumps({"benchmark": bench.to_dict(), **baselines}, default=float))
        print(f"baselines (docs/protocol_synthetic.md):\n{format_rows(rows)}")
    return 0
