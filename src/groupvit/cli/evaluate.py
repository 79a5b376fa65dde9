"""`groupvit evaluate` / `scripts/evaluate_segmentation.py`: zero-shot segmentation mIoU under named protocols.

Three sources of images:

- the benchmark suite (:mod:`groupvit.evaluation.suite`): `--protocol all` or a comma list of presets (`voc,ade20k`)
  with `--data_root DIR` holding mmsegmentation's layouts; writes `results.json` + `results.md` and prints the table,
- a `datasets` source with image + annotation columns: `--protocol voc --dataset DIR_OR_HUB_ID --split validation`,
- generated data: `--protocol synthetic`.

Runs under `accelerate launch` too: images are split across processes and the confusion matrices summed.
`--list_protocols` prints the presets. Exit status 2 for bad arguments or nothing to evaluate.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

from groupvit.cli import argument_parser
from groupvit.evaluation.evaluate import (
    evaluate_segmentation,
    format_report,
    load_annotated_dataset,
    samples_from_dataset,
    synthetic_protocol,
    synthetic_samples,
)
from groupvit.evaluation.suite import SUITE_PROTOCOLS, describe_protocols, run_suite
from groupvit.segmentation import GroupViTSegmenter

PROTOCOL_HELP = (
    f"'all' (the eight suite presets), one preset or a comma list of them ({', '.join(SUITE_PROTOCOLS)}; with "
    "--data_root, or one preset with --dataset), or 'synthetic' (generated data, the default)"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(
        "groupvit evaluate",
        description="Zero-shot semantic segmentation mIoU of a GroupViT model under named protocols.",
        epilog="Examples: groupvit evaluate --model nvidia/groupvit-gcc-yfcc --protocol all --data_root /data  |  "
        "groupvit evaluate --model DIR --protocol voc,ade20k --data_root /data --limit 50  |  "
        "groupvit evaluate --model nvidia/groupvit-gcc-yfcc --protocol voc --dataset ./voc_val  |  "
        "groupvit evaluate --model demo --protocol synthetic --synthetic_split test --num_samples 200  |  "
        "groupvit evaluate --list_protocols",
    )
    parser.add_argument("--list_protocols", action="store_true", help="print the suite's presets and exit")
    parser.add_argument("--model", default="demo", help="directory, Hub id, or 'demo' for the shipped demo model")
    parser.add_argument("--protocol", default="synthetic", help=PROTOCOL_HELP)
    parser.add_argument("--data_root", help="folder holding the suite's benchmarks in mmsegmentation's layouts")
    parser.add_argument("--limit", type=int, help="score at most N images per benchmark (a partial run)")
    parser.add_argument("--dataset", help="datasets source with image + annotation columns (Hub id or local path)")
    parser.add_argument("--split", default="validation", help="split of --dataset (default: validation)")
    parser.add_argument("--image_column", default="image", help="image column of --dataset (default: image)")
    parser.add_argument(
        "--annotation_column", default="annotation", help="label-map column of --dataset (default: annotation)"
    )
    parser.add_argument(
        "--synthetic_preset", default="objects", help="preset of the generated data (default: objects)"
    )
    parser.add_argument(
        "--synthetic_split", default="test", choices=["train", "validation", "test"], help="generated split to score"
    )
    parser.add_argument("--synthetic_seed", type=int, default=0, help="base seed of the generated data")
    parser.add_argument("--image_size", type=int, default=64, help="side of generated synthetic images")
    parser.add_argument("--num_samples", type=int, default=200, help="images to evaluate (synthetic, or a cap)")
    parser.add_argument("--background_threshold", type=float, help="override the protocol's threshold")
    parser.add_argument("--mode", choices=["whole", "slide"], help="override the protocol's inference mode")
    parser.add_argument("--short_side", type=int, help="override the protocol's resized short side (px)")
    parser.add_argument("--window", type=int, help="override the protocol's sliding-window size (px)")
    parser.add_argument("--stride", type=int, help="override the protocol's sliding-window stride (px)")
    parser.add_argument("--output", default="eval_output", help="results.json (and overlays or results.md) go here")
    parser.add_argument("--num_overlays", type=int, default=8, help="overlay pictures to write (default 8)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="model dtype")
    parser.add_argument("--no_baselines", action="store_true", help="synthetic: skip the baselines (baselines.json)")
    return parser.parse_args(argv)


def _suite_names(protocol: str) -> list[str] | str | None:
    """The suite presets `--protocol` names (`"all"` or a list), or None for a single-protocol run."""
    if protocol == "all":
        return "all"
    names = [name.strip() for name in protocol.split(",")]
    if len(names) > 1 or names[0] in SUITE_PROTOCOLS:
        return names
    return None


def _error(message: str | BaseException) -> int:
    from groupvit.cli import report_error

    return report_error("groupvit evaluate", message)


def main(argv: list[str] | None = None) -> int:
    """`groupvit evaluate` / `scripts/evaluate_segmentation.py` (also under `accelerate launch`)."""
    from accelerate import Accelerator

    from groupvit.cli.shipped_model import resolve_model
    from groupvit.segmentation import get_protocol

    args = parse_args(argv)
    if args.list_protocols:
        print("\n".join(describe_protocols()))
        return 0
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
    if args.limit is not None and args.limit <= 0:
        return _error(f"--limit must be a positive number of images, got {args.limit}")
    suite_names = _suite_names(args.protocol)
    use_suite = suite_names is not None and (
        args.data_root is not None or suite_names == "all" or len(suite_names) > 1
    )
    try:
        if use_suite:
            if args.data_root is None:
                return _error(f"--protocol {args.protocol} runs the benchmark suite: give --data_root DIR")
            if args.dataset is not None:
                return _error("--dataset evaluates one protocol; the suite (--data_root) reads the benchmark folders")
            if args.background_threshold is not None:
                return _error("--background_threshold changes one protocol; the suite keeps each preset's threshold")
            return _run_suite(args, suite_names, changes)
        model_path, defaults = resolve_model(args.model)
        limit = args.num_samples if args.limit is None else min(args.num_samples, args.limit)
        if args.protocol == "synthetic":
            protocol = synthetic_protocol(args.synthetic_preset, **{**defaults, **changes})
            samples: Any = synthetic_samples(
                args.synthetic_preset, args.synthetic_split, limit, args.image_size, args.synthetic_seed
            )
        else:
            if not args.dataset:
                return _error(
                    f"protocol {args.protocol!r} needs --dataset (a datasets source) or --data_root (the suite)"
                )
            from itertools import islice

            protocol = get_protocol(args.protocol)
            protocol = protocol.with_class_names(list(protocol.class_names), **changes)
            dataset = load_annotated_dataset(args.dataset, args.split)
            samples = islice(samples_from_dataset(dataset, args.image_column, args.annotation_column), limit)
        accelerator = Accelerator()
        dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
        segmenter = GroupViTSegmenter.from_pretrained(model_path, device=accelerator.device, dtype=dtype)
        output = Path(args.output)
        report = evaluate_segmentation(
            segmenter, samples, protocol, accelerator=accelerator, overlay_dir=output, num_overlays=args.num_overlays
        )
    except (ValueError, OSError) as error:  # OSError: a model or dataset that cannot be found or reached
        return _error(error)
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


def _run_suite(args: argparse.Namespace, names: list[str] | str, changes: dict[str, Any]) -> int:
    """The benchmark suite on `--data_root`; prints the Markdown table on the main process."""
    from accelerate import Accelerator

    from groupvit.cli.shipped_model import resolve_model

    accelerator = Accelerator()
    model_path, _ = resolve_model(args.model)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    segmenter = GroupViTSegmenter.from_pretrained(model_path, device=accelerator.device, dtype=dtype)
    suite = run_suite(
        segmenter,
        names,
        args.data_root,
        args.output,
        limit=args.limit,
        accelerator=accelerator,
        option_changes=changes,
        model_name=model_path,
    )
    if accelerator.is_main_process:
        print(suite.table)
    return 0
