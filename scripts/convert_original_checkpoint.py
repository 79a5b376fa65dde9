"""Convert an original NVlabs GroupViT checkpoint (`.pth`) into a Hugging Face folder (safetensors + processor + card).

    python scripts/convert_original_checkpoint.py \\
        --checkpoint group_vit_gcc_yfcc_30e-879422e0.pth --output groupvit-gcc-yfcc \\
        --config GroupViT/configs/group_vit_gcc_yfcc_30e.yml --opaque_objects

The file is read with `torch.load(..., weights_only=True)` only. The NVlabs training checkpoints also pickle their
OmegaConf config, which that refuses; `--opaque_objects` loads such objects as inert placeholders (no code from the
file runs) and recovers the config's values from them. The architecture comes from, in this order: `--config` (the
original yaml, following its `_base_`, an original or our JSON config, or a preset name), the checkpoint's own
`config` entry, or GroupViT-S with the multi-label temperature kept if the checkpoint has one.

The converted weights must load into `GroupViTModel` with `strict=True` (only non-persistent buffers may be absent),
and a forward pass on a synthetic image must give finite logits, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from groupvit import GroupViTConfig, GroupViTModel, GroupViTProcessor, available_presets
from groupvit.cli import argument_parser
from groupvit.hub.conversion import (
    ConversionError,
    UnsafeCheckpointError,
    config_from_original,
    convert_original_state_dict,
    load_original_checkpoint,
    plain_config,
    unwrap_original_state_dict,
)
from groupvit.hub.model_card import render_model_card

logger = logging.getLogger("convert_original_checkpoint")

_OUR_CONFIG_KEYS = ("vision_config", "text_config", "projection_dim")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="original .pth checkpoint")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--config",
        default=None,
        help="original yaml/json config, our config.json, or a preset name (default: the checkpoint's config, else "
        "groupvit-s)",
    )
    parser.add_argument(
        "--opaque_objects",
        action="store_true",
        help="load Python objects stored in the checkpoint (e.g. its OmegaConf config) as inert placeholders instead "
        "of failing; no code from the file is run",
    )
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    parser.add_argument("--repo_id", default=None, help="Hub id shown in the model card's usage examples")
    parser.add_argument("--base_model", default=None, help="Hub id of the model this one derives from (model card)")
    parser.add_argument("--datasets", nargs="*", default=None, help="Hub ids of the training datasets (model card)")
    parser.add_argument("--results", type=Path, default=None, help="results.json of a segmentation evaluation")
    parser.add_argument(
        "--image_size", type=int, default=None, help="processor resize/crop size (default: the config's image size)"
    )
    return parser.parse_args(argv)


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def read_config_file(path: Path, depth: int = 0) -> dict[str, Any]:
    """Read a yaml or json config; an original yaml's `_base_` files (relative paths) are merged underneath."""
    if depth > 8:
        raise ValueError(f"{path}: _base_ nesting too deep")
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle) if path.suffix == ".json" else yaml.safe_load(handle)
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} does not hold a mapping")
    data = dict(data)
    bases = data.pop("_base_", None)
    if bases:
        merged: dict[str, Any] = {}
        for base in [bases] if isinstance(bases, str) else bases:
            merged = _deep_merge(merged, read_config_file(path.parent / base, depth + 1))
        data = _deep_merge(merged, data)
    return data


def resolve_config(
    config_arg: str | None, checkpoint: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
) -> GroupViTConfig:
    """Pick the target configuration (see the module docstring for the order)."""
    if config_arg is not None:
        path = Path(config_arg)
        if not path.exists() and config_arg in available_presets():
            logger.info("Using preset %s", config_arg)
            return GroupViTConfig.from_preset(config_arg)
        data = read_config_file(path)
        if any(key in data for key in _OUR_CONFIG_KEYS) or data.get("model_type") == "groupvit":
            logger.info("Using GroupViTConfig from %s", path)
            return GroupViTConfig.from_dict(data)
        logger.info("Using the original configuration from %s", path)
        return config_from_original(data)

    stored = plain_config(checkpoint.get("config"))
    if isinstance(stored, Mapping) and isinstance(stored.get("model", stored), Mapping):
        try:
            config = config_from_original(stored)
        except (ValueError, TypeError, KeyError) as error:
            logger.warning("Ignoring the checkpoint's config (%s)", error)
        else:
            logger.info("Using the configuration stored in the checkpoint")
            return config
    elif stored is not None:
        logger.warning("The checkpoint's config (%r) cannot be read; pass --config to be explicit", stored)

    logger.info("Using groupvit-s")
    return GroupViTConfig.from_preset("groupvit-s")


def _sanity_check(model: GroupViTModel, processor: GroupViTProcessor) -> torch.Tensor:
    """One forward pass on a synthetic gradient image; the logits must be finite."""
    size = processor.image_processor.crop_size["height"]
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    # (size, size, 3) RGB gradient
    pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size))], -1)
    inputs = processor(
        images=Image.fromarray(pixels.astype(np.uint8)),
        text=["a photo of a cat", "a photo of a dog"],
        return_tensors="pt",
        padding=True,
    )
    with torch.no_grad():
        logits = model(**inputs).logits_per_image
    if not torch.isfinite(logits).all():
        raise ValueError(f"the converted model gives non-finite logits: {logits}")
    return logits


def convert(args: argparse.Namespace) -> Path:
    """Load, convert, check and write; returns the output folder."""
    if args.output.exists() and any(args.output.iterdir()) and not args.overwrite:
        raise ValueError(f"{args.output} is not empty; pass --overwrite to write into it")
    checkpoint = load_original_checkpoint(args.checkpoint, opaque_objects=args.opaque_objects)
    state_dict = unwrap_original_state_dict(checkpoint)
    logger.info("Loaded %d tensors from %s", len(state_dict), args.checkpoint)
    config = resolve_config(args.config, checkpoint, state_dict)

    converted = convert_original_state_dict(state_dict, config)
    model = GroupViTModel(config)
    # strict: every parameter and persistent buffer is loaded; only non-persistent buffers (position_ids) are not
    model.load_state_dict(converted, strict=True)
    model.eval()
    logger.info("Converted %d tensors (%.2f M parameters)", len(converted), model.num_parameters() / 1e6)

    image_size = args.image_size or config.vision_config.image_size
    processor = GroupViTProcessor.from_bundled(image_size=image_size)
    logits = _sanity_check(model, processor)
    logger.info("Sanity check passed: logits_per_image on a synthetic image = %s", logits.tolist())

    args.output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.output)  # safetensors
    processor.save_pretrained(args.output)
    card = render_model_card(
        config,
        results=args.results,
        repo_id=args.repo_id,
        base_model=args.base_model,
        datasets=args.datasets,
    )
    card.save(args.output / "README.md")
    logger.info("Wrote %s", args.output)
    return args.output


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        convert(args)
    except (ConversionError, UnsafeCheckpointError, ValueError, FileNotFoundError) as error:
        logger.error("Conversion failed: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
