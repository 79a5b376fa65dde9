"""`groupvit segment IMAGE... --labels L1,L2 --model M`: zero-shot segmentation of image files and URLs.

Per image it writes `<stem>_overlay.png` (colours over the image, with a legend), `<stem>_labels.png` (the label
map: pixel value = index into the JSON's `labels`; mode "L", or "I;16" beyond 256 labels) and `<stem>.json` (labels,
per-label score and pixel share, the background index, the image size and source), and prints each label's pixel
share. An image that cannot be read (missing or corrupt file, decompression bomb, URL that fails or does not answer
within `--timeout` seconds) is reported on stderr and skipped; the others are still segmented, and the exit status is
then 2.

Order of the checks: the flags, then the images (local files must exist before anything heavy happens: with no
usable image the model is never loaded), then the model (a missing folder, an unknown or offline Hub id: one line,
exit status 2). URLs are fetched one by one while segmenting, so an unreachable URL is reported then.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from groupvit.cli import argument_parser

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argument_parser(
        "groupvit segment",
        description="Zero-shot semantic segmentation with GroupViT. For each image, writes <stem>_overlay.png "
        "(label colours with a legend), <stem>_labels.png (the label map: pixel value = label index) and <stem>.json "
        "(labels, scores, pixel shares) and prints the pixel share of each label. Unreadable images are reported "
        "and skipped (exit status 2).",
        epilog='Example: groupvit segment cats.jpg --labels "cat,sofa,remote" --model nvidia/groupvit-gcc-yfcc '
        "--background_threshold 0.9 --output out/",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or http(s) URLs")
    parser.add_argument(
        "--model", required=True, help='model directory, Hub id (with its processor), or "demo" (the shipped model)'
    )
    parser.add_argument("--labels", help='comma-separated label names, e.g. "cat,dog,grass"')
    parser.add_argument(
        "--protocol",
        help="a dataset protocol (voc, context, coco_object, ...) supplying labels, template, threshold and windows; "
        "the other flags override it",
    )
    parser.add_argument("--output", default=".", help="output directory (default: the current directory)")
    background = parser.add_mutually_exclusive_group()
    background.add_argument(
        "--background_threshold",
        type=float,
        default=None,
        metavar="F",
        help="add a background class: pixels whose best label score is below min(F, best group score) "
        "(0.95 on VOC in the original code); default: the protocol's, else the model's validated one (the demo "
        "model's demo.json, as `groupvit demo` and `groupvit app`), else no background",
    )
    background.add_argument("--no_background", action="store_true", help="no background class, whatever the default")
    parser.add_argument(
        "--template",
        action="append",
        metavar="T",
        help='prompt template with {} for the label (default "a photo of a {}."); repeat for an ensemble',
    )
    parser.add_argument("--mode", choices=("slide", "whole"), help="sliding windows (default) or the whole image")
    parser.add_argument("--short_side", type=int, metavar="N", help="resize the short side to N px (default 448)")
    parser.add_argument("--window", type=int, metavar="N", help="sliding-window size in px (default 448)")
    parser.add_argument(
        "--stride", type=int, metavar="N", help="sliding-window stride in px (default: half the window)"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="seconds to wait for an image URL (default 10)"
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), default="float32", help="model dtype (default float32)"
    )
    return parser


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _stem(image: str, used: set[str]) -> str:
    path = urlparse(image).path if _is_url(image) else image
    stem = Path(path).stem or "image"
    unique, n = stem, 1
    while unique in used:
        unique, n = f"{stem}_{n}", n + 1
    used.add(unique)
    return unique


def _write_result(source: str, image: Any, result: Any, prefix: Path, alpha: float) -> None:
    """Write `<prefix>_overlay.png`, `<prefix>_labels.png` and `<prefix>.json`; print each label's pixel share."""
    import json

    import numpy as np
    import PIL.Image

    from groupvit.segmentation.visualization import overlay

    overlay(image, result.label_map, result.labels, alpha=alpha, background_index=result.background_index).save(
        f"{prefix}_overlay.png"
    )
    label_map = result.label_map.numpy()
    if len(result.labels) <= 256:
        PIL.Image.fromarray(label_map.astype(np.uint8)).save(f"{prefix}_labels.png")
    else:
        PIL.Image.fromarray(label_map.astype(np.uint16)).save(f"{prefix}_labels.png")
    pixels = np.bincount(label_map.ravel(), minlength=len(result.labels))
    shares = 100.0 * pixels / label_map.size
    summary = {
        "source": source,
        "width": image.width,
        "height": image.height,
        "labels": list(result.labels),
        "background_index": result.background_index,
        "scores": [float(v) for v in result.scores],
        "pixel_percent": [float(v) for v in shares],
        "label_map": Path(f"{prefix}_labels.png").name,
    }
    Path(f"{prefix}.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("wrote %s_*", prefix)
    width = max(len("label"), *(len(label) for label in result.labels))
    print(f"{source} ({image.width}x{image.height})")
    print(f"  {'label':<{width}}  {'pixels %':>8}")
    for index in np.argsort(-pixels, kind="stable"):
        print(f"  {result.labels[index]:<{width}}  {shares[index]:8.2f}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `groupvit segment IMAGE... --labels L1,L2 --model M [options]`.

    Returns:
        0 on success, 2 for invalid arguments or unreadable images.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.labels is None and args.protocol is None:
        parser.error("give --labels (or --protocol)")

    import torch

    from groupvit.cli import report_error
    from groupvit.cli.shipped_model import inference_options, resolve_model
    from groupvit.processing_groupvit import to_rgb_image
    from groupvit.segmentation import GroupViTSegmenter, SegmentationOptions, get_protocol, validate_labels

    changes = {
        "templates": tuple(args.template) if args.template else None,
        "mode": args.mode,
        "short_side": args.short_side,
        "window": args.window,
        "stride": args.stride,
        "background_threshold": args.background_threshold,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.no_background:
        changes["background_threshold"] = None
    if args.protocol is not None:
        try:
            protocol = get_protocol(args.protocol)
        except ValueError as error:
            return report_error(parser.prog, error)
        labels, base = protocol.labels, protocol.options.replace(background_first=False)
    else:
        labels, base = [], SegmentationOptions()
    try:
        if args.labels is not None:
            labels = [label.strip() for label in args.labels.split(",")]
        options = base.replace(**changes)  # the flags, checked before the model loads
        labels = validate_labels(labels, options.with_background)
        if not 0.0 <= args.alpha <= 1.0:
            raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
        if not args.timeout > 0:
            raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    except ValueError as error:
        parser.error(str(error))

    failed = [source for source in args.images if not _is_url(source) and not Path(source).is_file()]
    for source in failed:
        reason = "is a folder, not an image file" if Path(source).is_dir() else "no such file"
        print(f"{parser.prog}: error: {source}: {reason}", file=sys.stderr)
    images = [source for source in args.images if source not in failed]
    if not images:
        return 2

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model, settings = resolve_model(args.model)
        segmenter = GroupViTSegmenter.from_pretrained(model, device=device, dtype=getattr(torch, args.dtype))
    except (ValueError, OSError) as error:
        return report_error(parser.prog, f"cannot load the model {args.model!r}: {error}")
    if args.protocol is None:
        # the model's own defaults (as `groupvit demo` and `groupvit app` use them), under the flags
        defaults = inference_options(segmenter.model.config.vision_config.image_size, settings)
        try:
            options = base.replace(**defaults).replace(**changes)
            labels = validate_labels(labels, options.with_background)
        except ValueError as error:
            parser.error(str(error))
    try:  # the prompt-length check needs the model's tokenizer
        text_embeds = segmenter.encode_labels(labels, options.templates, options.template_ensemble)
    except ValueError as error:
        parser.error(str(error))
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for source in images:
        try:
            image = to_rgb_image(source, timeout=args.timeout)
            result = segmenter.segment(image, labels, options=options, text_embeds=text_embeds)[0]
        except (ValueError, OSError) as error:
            print(f"groupvit segment: error: {source}: {error}", file=sys.stderr)
            failed.append(source)
            continue
        _write_result(source, image, result, output / _stem(source, used), args.alpha)
    if failed:
        print(f"groupvit segment: {len(failed)} of {len(args.images)} images failed: {failed}", file=sys.stderr)
        return 2
    return 0
