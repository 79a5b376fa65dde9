"""Zero-shot segmentation: the paper's protocol, the `zero-shot-image-segmentation` pipeline, ONNX inference, drawing.

    protocols.py      SegmentationOptions, SegmentationProtocol and their registry; label/template/threshold checks
    windows.py        short-side resize, sliding windows, crops fitted to the patch size
    scoring.py        the per-window math: pixel -> group maps, group -> label scores, pixel logits, groups used
    segmenter.py      GroupViTSegmenter (windows batched through the model) and SegmentationResult
    pipeline.py       the transformers pipeline (registered by `import groupvit`)
    onnx.py           export of the two towers, OnnxGroupViTSegmenter
    visualization.py  colours, overlays, legends, grids

Every public name is importable from here (`from groupvit.segmentation import GroupViTSegmenter`); the submodules are
imported on first use, so `import groupvit` (which registers the pipeline) loads neither the segmenter nor ONNX nor
the drawing code.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_EXPORTS = {
    "BACKGROUND_LABEL": "protocols",
    "DEFAULT_TEMPLATE": "protocols",
    "SegmentationOptions": "protocols",
    "SegmentationProtocol": "protocols",
    "available_protocols": "protocols",
    "check_background_threshold": "protocols",
    "check_template": "protocols",
    "check_templates": "protocols",
    "get_protocol": "protocols",
    "register_protocol": "protocols",
    "validate_labels": "protocols",
    "normalize_label": "protocols",
    "expected_windows": "windows",
    "fit_to_patches": "windows",
    "rescaled_size": "windows",
    "sliding_windows": "windows",
    "chained_stages": "scoring",
    "count_used_groups": "scoring",
    "encode_label_prompts": "scoring",
    "group_label_scores": "scoring",
    "pixel_label_logits": "scoring",
    "stage_group_maps": "scoring",
    "GroupViTSegmenter": "segmenter",
    "SegmentationResult": "segmenter",
    "TASK": "pipeline",
    "ZeroShotImageSegmentationPipeline": "pipeline",
    "OnnxGroupViTSegmenter": "onnx",
    "export_onnx": "onnx",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
