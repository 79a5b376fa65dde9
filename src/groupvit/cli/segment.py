"""`groupvit segment IMAGE... --labels L1,L2 --model M`: zero-shot segmentation of image files.

Writes `<stem>_overlay.png` (colours over the image, with a legend) and `<stem>_mask_<label>.png` (mode "L",
255 = label) per image, and prints each label's pixel share.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groupvit segment",
        description="Zero-shot semantic segmentation with GroupViT. For each image, writes <stem>_overlay.png "
        "(label colours with a legend) and <stem>_mask_<label>.png (255 where the label wins) and prints the "
        "pixel share of each label.",
        epilog='Example: groupvit segment cats.jpg --labels "cat,sofa,remote" --model nvidia/groupvit-gcc-yfcc '
        "--background-threshold 0.9 --output out/",
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
        "--background-threshold",
        type=float,
        default=None,
        metavar="F",
        help="add a background class: pixels whose best label score is below min(F, best group score) "
        "(0.95 on VOC in the original code); default: the protocol's, else the model's validated one (the demo "
        "model's demo.json, as `groupvit demo` and `groupvit app`), else no background",
    )
    background.add_argument("--no-background", action="store_true", help="no background class, whatever the default")
    parser.add_argument(
        "--template",
        action="append",
        metavar="T",
        help='prompt template with {} for the label (default "a photo of a {}."); repeat for an ensemble',
    )
    parser.add_argument("--mode", choices=("slide", "whole"), help="sliding windows (default) or the whole image")
    parser.add_argument("--short-side", type=int, metavar="N", help="resize the short side to N px (default 448)")
    parser.add_argument("--window", type=int, metavar="N", help="sliding-window size in px (default 448)")
    parser.add_argument(
        "--stride", type=int, metavar="N", help="sliding-window stride in px (default: half the window)"
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), default="float32", help="model dtype (default float32)"
    )
    return parser


def _stem(image: str, used: set[str]) -> str:
    path = urlparse(image).path if image.startswith(("http://", "https://")) else image
    stem = Path(path).stem or "image"
    unique, n = stem, 1
    while unique in used:
        unique, n = f"{stem}_{n}", n + 1
    used.add(unique)
    return unique


def _safe(label: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]+", "_", label).strip("_") or "label"


def _write_result(source: str, image: Any, result: Any, prefix: Path, alpha: float) -> None:
    """Write `<prefix>_overlay.png` and one `<prefix>_mask_<label>.png` per label; print each label's pixel share."""
    import numpy as np
    import PIL.Image

    from groupvit.segmentation.visualization import overlay

    overlay(image, result.label_map, result.labels, alpha=alpha, background_index=result.background_index).save(
        f"{prefix}_overlay.png"
    )
    label_map = result.label_map.numpy()
    pixels = np.bincount(label_map.ravel(), minlength=len(result.labels))
    for index, label in enumerate(result.labels):
        mask = ((label_map == index) * 255).astype(np.uint8)
        PIL.Image.fromarray(mask).save(f"{prefix}_mask_{_safe(label)}.png")
    logger.info("wrote %s_*", prefix)
    width = max(len("label"), *(len(label) for label in result.labels))
    print(f"{source} ({image.width}x{image.height})")
    print(f"  {'label':<{width}}  {'pixels %':>8}")
    for index in np.argsort(-pixels, kind="stable"):
        print(f"  {result.labels[index]:<{width}}  {100.0 * pixels[index] / label_map.size:8.2f}")


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
    try:
        if args.protocol is not None:
            protocol = get_protocol(args.protocol)
            labels, base = protocol.labels, protocol.options.replace(background_first=False)
        else:
            labels, base = [], SegmentationOptions()
        if args.labels is not None:
            labels = [label.strip() for label in args.labels.split(",")]
        options = base.replace(**changes)  # the flags, checked before the model loads
        labels = validate_labels(labels, options.with_background)
        if not 0.0 <= args.alpha <= 1.0:
            raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    except ValueError as error:
        parser.error(str(error))

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, settings = resolve_model(args.model)
    segmenter = GroupViTSegmenter.from_pretrained(model, device=device, dtype=getattr(torch, args.dtype))
    if args.protocol is None:
        # the model's own defaults (as `groupvit demo` and `groupvit app` use them), under the flags
        defaults = inference_options(segmenter.model.config.vision_config.image_size, settings)
        try:
            options = base.replace(**defaults).replace(**changes)
            labels = validate_labels(labels, options.with_background)
        except ValueError as error:
            parser.error(str(error))
    text_embeds = segmenter.encode_labels(labels, options.templates, options.template_ensemble)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    status = 0
    for source in args.images:
        try:
            image = to_rgb_image(source)
        except (ValueError, OSError) as error:
            print(f"groupvit segment: error: cannot read {source}: {error}", file=sys.stderr)
            status = 2
            continue
        result = segmenter.segment(image, labels, options=options, text_embeds=text_embeds)[0]
        _write_result(source, image, result, output / _stem(source, used), args.alpha)
    return status
