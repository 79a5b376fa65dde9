"""Zero-shot semantic segmentation with GroupViT, following the original evaluation protocol.

The procedure is that of the original `GroupViTSegInference` (mmseg `EncoderDecoder`), for one window:

1. **Pixel -> group.** The soft grouping maps of the stages, `(batch, G_k, N_k)`, are multiplied through
   (`A2 @ A1`: `(batch, 8, N_patches)` for GroupViT-S), reshaped to the patch grid, resized bilinearly
   (`align_corners=False`) to the window and arg-maxed over the groups (`assignment="hard"`; `"soft"` keeps the soft
   weights instead).
2. **Group -> label.** The final group tokens are projected and L2-normalised, the labels' text embeddings too, and
   with `s = min(exp(logit_scale), 100)`: `L = s * group @ text.T` `(G, C)`, `P_all = softmax_C(L)`; the `top_k`
   (5) labels of the image embedding's softmax keep their logits, the others are masked to `-inf`, giving `P_top`;
   the group score is `P_top * P_all`.
3. **Pixel logits.** Foreground logits are `onehot(pixel -> group) @ group_score`. With a background threshold `t`,
   `bg_thr = min(t, max group score)` and pixels whose best foreground score is below `bg_thr` get a background logit
   of 1 (all others 0). With `score_mode="cosine"` the group score is the raw cosine similarity and `t` is an absolute
   similarity threshold (useful for a single label, where the softmaxes are always 1).

Around it: the image's short side is resized to `short_side` (448; the long side capped at `max_long_side`, 2048, as
mmseg's `Resize(img_scale=(2048, 448), keep_ratio=True)`), normalised by the processor's image processor, then cut into
`window` x `window` crops with `stride` (448/224) whose logits are averaged where they overlap (`mode="slide"`), or
run at once (`mode="whole"`); the averaged logits are resized to the original image size and arg-maxed.

Crops are fed to the model at their own size, as in mmseg 0.18 (no padding to the window size): a crop whose side is
not a multiple of the patch size is resized to the nearest multiple for the model, and the grouping maps are resized
back to the crop. So a window at least as large as the image gives exactly the `mode="whole"` result.

Dataset protocols (class names, renames, thresholds, window sizes) are data: JSON files in
`groupvit/resources/protocols/`, loaded by :func:`get_protocol`; :func:`register_protocol` adds or replaces one.

Example:
    ```python
    >>> import PIL.Image
    >>> from groupvit import GroupViTConfig, GroupViTModel, GroupViTProcessor
    >>> from groupvit.segmentation.segmenter import GroupViTSegmenter
    >>> model = GroupViTModel(GroupViTConfig.from_preset("groupvit-tiny")).eval()
    >>> segmenter = GroupViTSegmenter(model, GroupViTProcessor.from_bundled(image_size=32), short_side=32, window=32)
    >>> result = segmenter.segment(PIL.Image.new("RGB", (48, 40)), ["cat", "dog"], background_threshold=0.9)[0]
    >>> result.label_logits.shape, result.label_map.shape, result.labels
    (torch.Size([3, 40, 48]), torch.Size([40, 48]), ['cat', 'dog', 'background'])

    ```
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from groupvit.modeling_groupvit import GroupViTModel

logger = logging.getLogger(__name__)

__all__ = [
    "BACKGROUND_LABEL",
    "DEFAULT_TEMPLATE",
    "GroupViTSegmenter",
    "SegmentationOptions",
    "SegmentationProtocol",
    "SegmentationResult",
    "available_protocols",
    "check_background_threshold",
    "expected_windows",
    "get_protocol",
    "group_label_scores",
    "load_rgb_image",
    "pixel_label_logits",
    "register_protocol",
    "rescaled_size",
    "sliding_windows",
    "stage_group_maps",
    "validate_labels",
    "encode_label_prompts",
]

BACKGROUND_LABEL = "background"
"""Name of the background class in results (it is never embedded as text)."""
DEFAULT_TEMPLATE = "a photo of a {}."
"""The original segmentation template (the `simple` set)."""

_MODES = ("slide", "whole")
_ENSEMBLES = ("projection_mean", "normalized_mean")
_ASSIGNMENTS = ("hard", "soft")
_SCORE_MODES = ("original", "cosine")


# --------------------------------------------------------------------------------------------------------------------
# Options and protocols
# --------------------------------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_template(template: Any) -> str:
    if not isinstance(template, str) or "{}" not in template:
        raise ValueError(f"a template must be a string containing '{{}}', got {template!r}")
    try:
        template.format("x")
    except (IndexError, KeyError, ValueError) as error:
        raise ValueError(f"template {template!r} cannot be formatted with one label: {error}") from error
    return template


def check_background_threshold(value: Any) -> float | None:
    """Return `value` as a float in `[0, 1]` (or None); raise ValueError naming the value otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"background_threshold must be None or a number in [0, 1], got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"background_threshold must be in [0, 1], got {value!r}")
    return value


@dataclass(frozen=True)
class SegmentationOptions:
    """How to segment; the defaults are the original protocol without a background class.

    Args:
        templates: Prompt templates, each with one `{}` for the label; several form an ensemble.
        template_ensemble: `"projection_mean"` (original: average the templates' un-normalised projected text
            embeddings, then L2-normalise) or `"normalized_mean"` (CLIP-style: normalise each, average, normalise).
        background_threshold: `None` for no background class, else a threshold in `[0, 1]` (see the module doc).
        background_first: Put the background at index 0 of the logits and label map (the datasets' convention)
            instead of after the labels.
        mode: `"slide"` (windows of `window` px with `stride`, logits averaged) or `"whole"` (the resized image at
            once).
        short_side: Resize the image's short side to this many pixels first (None: keep the size).
        max_long_side: Cap on the resized long side (None: no cap).
        window: Sliding-window size in pixels of the resized image.
        stride: Sliding-window stride in pixels, at most `window` (None: `window // 2`, i.e. 224 for 448).
        top_k: Labels kept by the image-level top-k restriction (`min(top_k, C)`; None: all).
        assignment: `"hard"` (arg-max pixel -> group, original) or `"soft"` (soft grouping weights).
        score_mode: `"original"` (`P_top * P_all`, relative background threshold) or `"cosine"` (raw group-text
            cosine similarity, absolute background threshold).
        window_batch_size: Windows run through the model at once.
        resample: PIL filter for the short-side resize (`"bilinear"` as mmseg, or `"bicubic"`).

    Example:
        ```python
        >>> SegmentationOptions(background_threshold=0.95, mode="whole").window
        448

        ```
    """

    templates: tuple[str, ...] = (DEFAULT_TEMPLATE,)
    template_ensemble: str = "projection_mean"
    background_threshold: float | None = None
    background_first: bool = False
    mode: str = "slide"
    short_side: int | None = 448
    max_long_side: int | None = 2048
    window: int = 448
    stride: int | None = None
    top_k: int | None = 5
    assignment: str = "hard"
    score_mode: str = "original"
    window_batch_size: int = 8
    resample: str = "bilinear"

    def __post_init__(self) -> None:
        templates = (self.templates,) if isinstance(self.templates, str) else tuple(self.templates)
        if not templates:
            raise ValueError("templates must hold at least one template")
        object.__setattr__(self, "templates", tuple(_check_template(t) for t in templates))
        object.__setattr__(self, "background_threshold", check_background_threshold(self.background_threshold))
        for name, allowed in (
            ("template_ensemble", _ENSEMBLES),
            ("mode", _MODES),
            ("assignment", _ASSIGNMENTS),
            ("score_mode", _SCORE_MODES),
            ("resample", ("bilinear", "bicubic")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("short_side", "max_long_side", "top_k", "stride"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value <= 0):
                raise ValueError(f"{name} must be None or a positive int, got {value!r}")
        for name in ("window", "window_batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.stride is not None and self.stride > self.window:
            raise ValueError(f"stride ({self.stride}) must not exceed window ({self.window}): pixels would be skipped")
        if not isinstance(self.background_first, bool):
            raise ValueError(f"background_first must be a bool, got {self.background_first!r}")

    @property
    def with_background(self) -> bool:
        return self.background_threshold is not None

    @property
    def window_stride(self) -> int:
        """The sliding-window stride: `stride`, or half the window when it is None."""
        return self.stride if self.stride is not None else max(1, self.window // 2)

    def replace(self, **changes: Any) -> SegmentationOptions:
        """A copy with `changes` applied (validated); unknown names raise ValueError."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown segmentation option(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SegmentationOptions:
        return cls().replace(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["templates"] = list(self.templates)
        return values


@dataclass(frozen=True)
class SegmentationProtocol:
    """A named evaluation protocol: the dataset's class names, their prompt renames and the inference options.

    Args:
        name: Registry key, e.g. `"voc"`.
        class_names: The dataset's foreground class names in label order (background excluded).
        renames: Dataset name -> prompt name (e.g. `diningtable` -> `table`), applied by :attr:`labels`.
        options: Inference options (threshold as in the original code, template, window...).
        background_threshold_paper: The threshold the paper reports, where it differs from the code's.
        description: Where the numbers come from.

    Example:
        ```python
        >>> voc = get_protocol("voc")
        >>> len(voc.labels), voc.labels[10], voc.options.background_threshold
        (20, 'table', 0.95)

        ```
    """

    name: str
    class_names: tuple[str, ...]
    renames: Mapping[str, str] = field(default_factory=dict)
    options: SegmentationOptions = field(default_factory=SegmentationOptions)
    background_threshold_paper: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"protocol name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "renames", dict(self.renames))
        if isinstance(self.options, Mapping):
            object.__setattr__(self, "options", SegmentationOptions.from_dict(self.options))
        unknown = set(self.renames) - set(self.class_names)
        if unknown:
            raise ValueError(f"protocol {self.name!r}: renames name classes it does not have: {sorted(unknown)}")
        if self.class_names:
            validate_labels(self.labels, self.options.with_background)

    @property
    def labels(self) -> list[str]:
        """The prompt names (renames applied), in label order."""
        return [self.renames.get(name, name) for name in self.class_names]

    def with_class_names(self, class_names: Sequence[str], **option_changes: Any) -> SegmentationProtocol:
        """A copy with other class names (and optionally other options), e.g. to fill the `synthetic` preset."""
        return dataclasses.replace(
            self,
            class_names=tuple(class_names),
            renames={k: v for k, v in self.renames.items() if k in class_names},
            options=self.options.replace(**option_changes),
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SegmentationProtocol:
        values = dict(values)
        values["options"] = SegmentationOptions.from_dict(values.get("options", {}))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "class_names": list(self.class_names),
            "renames": dict(self.renames),
            "background_threshold_paper": self.background_threshold_paper,
            "options": self.options.to_dict(),
        }


_PROTOCOLS: dict[str, SegmentationProtocol] = {}
_BUILTINS_LOADED = False


def _load_builtin_protocols() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    root = resources.files("groupvit").joinpath("resources", "protocols")
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            protocol = SegmentationProtocol.from_dict(json.loads(entry.read_text(encoding="utf-8")))
            _PROTOCOLS.setdefault(protocol.name, protocol)
    _BUILTINS_LOADED = True


def register_protocol(protocol: SegmentationProtocol, overwrite: bool = False) -> SegmentationProtocol:
    """Add `protocol` to the registry under `protocol.name` (replace an existing one only with `overwrite`)."""
    _load_builtin_protocols()
    if protocol.name in _PROTOCOLS and not overwrite:
        raise ValueError(f"protocol {protocol.name!r} is already registered; pass overwrite=True to replace it")
    _PROTOCOLS[protocol.name] = protocol
    return protocol


def get_protocol(name: str) -> SegmentationProtocol:
    """The registered protocol `name` (`voc`, `context`, `coco_object`, `synthetic`, or one registered later)."""
    _load_builtin_protocols()
    if name not in _PROTOCOLS:
        raise ValueError(f"unknown segmentation protocol {name!r}; available: {available_protocols()}")
    return _PROTOCOLS[name]


def available_protocols() -> list[str]:
    _load_builtin_protocols()
    return sorted(_PROTOCOLS)


def validate_labels(labels: Any, with_background: bool = False) -> list[str]:
    """Return `labels` as a list of strings; raise ValueError for an empty list, a non-string, an empty string or a
    duplicate, and for a label named `background` when the background class is enabled."""
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise ValueError(f"candidate labels must be a list of strings, got {labels!r}")
    labels = list(labels)
    if not labels:
        raise ValueError("candidate labels are empty; pass at least one label")
    seen: set[str] = set()
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"every candidate label must be a non-empty string, got {label!r}")
        if label in seen:
            raise ValueError(f"duplicate candidate label {label!r}")
        seen.add(label)
    if with_background and BACKGROUND_LABEL in seen:
        raise ValueError(
            f"candidate label {BACKGROUND_LABEL!r} is reserved for the background class when a background threshold "
            "is set; rename it or disable the threshold"
        )
    return labels


# --------------------------------------------------------------------------------------------------------------------
# Images and windows
# --------------------------------------------------------------------------------------------------------------------


def load_rgb_image(image: Any, timeout: float | None = None) -> PIL.Image.Image:
    """Load one image (file path, http(s) URL, PIL image or `HxW[xC]` uint8 array) as a non-empty RGB PIL image.

    Raises:
        ValueError: naming the offending value, for anything else, a missing file or an empty image.
    """
    source = image
    if isinstance(image, (str, os.PathLike)):
        location = os.fspath(image)
        if isinstance(location, str) and location.startswith(("http://", "https://")):
            from transformers.image_utils import load_image

            image = load_image(location, timeout=timeout)
        elif os.path.isfile(location):
            with PIL.Image.open(location) as opened:
                opened.load()
                image = opened.copy()
        else:
            raise ValueError(f"image {source!r} is neither an existing file nor an http(s) URL")
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3)):
            raise ValueError(
                f"array images must be uint8 HxW or HxWx3, got dtype {image.dtype} and shape {tuple(image.shape)}"
            )
        if image.size == 0:
            raise ValueError(f"image array is empty: shape {tuple(image.shape)}")
        squeeze = image.ndim == 3 and image.shape[-1] == 1
        image = PIL.Image.fromarray(np.ascontiguousarray(image.squeeze(-1) if squeeze else image))
    if not isinstance(image, PIL.Image.Image):
        text = repr(source)
        text = text if len(text) <= 80 else text[:77] + "..."
        raise ValueError(
            f"unsupported image {text} of type {type(source).__name__}: pass a file path, an http(s) URL, a PIL "
            "image or a uint8 array"
        )
    if image.width == 0 or image.height == 0:
        raise ValueError(f"image {source!r} is empty: size {image.size}")
    if image.mode != "RGB":
        from transformers.image_transforms import convert_to_rgb

        image = convert_to_rgb(image)  # alpha composited on white, as transformers' `do_convert_rgb`
    return image


def rescaled_size(height: int, width: int, short_side: int | None, max_long_side: int | None) -> tuple[int, int]:
    """`(height, width)` after a keep-ratio resize to `short_side`, with the long side capped at `max_long_side`.

    Rounds as `mmcv.imrescale` does (`int(x * scale + 0.5)`).
    """
    if short_side is None:
        return height, width
    scale = short_side / min(height, width)
    if max_long_side is not None:
        scale = min(scale, max_long_side / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def sliding_windows(height: int, width: int, window: int, stride: int) -> list[tuple[int, int, int, int]]:
    """mmseg's slide-inference crops `(y1, y2, x1, x2)`; the last row/column is shifted back to end at the border."""
    rows = max(height - window + stride - 1, 0) // stride + 1
    cols = max(width - window + stride - 1, 0) // stride + 1
    boxes = []
    for row in range(rows):
        for col in range(cols):
            y2, x2 = min(row * stride + window, height), min(col * stride + window, width)
            boxes.append((max(y2 - window, 0), y2, max(x2 - window, 0), x2))
    return boxes


def _fit_to_patches(pixel_values: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """Resize `(batch, 3, h, w)` bilinearly so that both sides are (nearest, at least one) multiples of the patch."""
    height, width = pixel_values.shape[-2:]
    target = (
        max(patch_size[0], round(height / patch_size[0]) * patch_size[0]),
        max(patch_size[1], round(width / patch_size[1]) * patch_size[1]),
    )
    if target == (height, width):
        return pixel_values
    return F.interpolate(pixel_values, size=target, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------------------------------------
# The protocol, as pure functions
# --------------------------------------------------------------------------------------------------------------------


def stage_group_maps(
    groupings: Sequence[torch.Tensor], grid_size: tuple[int, int], batch_size: int = 1
) -> tuple[torch.Tensor, ...]:
    """Chain the stages' soft groupings and lay them on the patch grid.

    Args:
        groupings: Per grouping stage `(batch, G_k, N_k)`, where `N_1` is the number of patches and `N_k = G_{k-1}`.
            Empty for a model without grouping stages (a plain ViT): then every patch is its own group.
        grid_size: The patch grid `(grid_h, grid_w)`, `grid_h * grid_w = N_1`.
        batch_size: Batch of the identity map returned when `groupings` is empty.

    Returns:
        Per stage, `(batch, G_k, grid_h, grid_w)` float32: how much each patch belongs to each group of that stage.
    """
    grid_h, grid_w = grid_size
    if not groupings:
        # (N, N) identity -> (batch, N, grid_h, grid_w): patch i belongs to "group" i
        identity = torch.eye(grid_h * grid_w).reshape(1, grid_h * grid_w, grid_h, grid_w)
        return (identity.expand(batch_size, -1, -1, -1),)
    maps, chained = [], None
    for grouping in groupings:
        grouping = grouping.float()
        # (batch, G_k, G_{k-1}) @ (batch, G_{k-1}, N) -> (batch, G_k, N)
        chained = grouping if chained is None else grouping @ chained
        batch, groups, num_patches = chained.shape
        if num_patches != grid_h * grid_w:
            raise ValueError(f"grouping covers {num_patches} patches, but the patch grid is {grid_h}x{grid_w}")
        # (batch, G_k, N) -> (batch, G_k, grid_h, grid_w)
        maps.append(chained.reshape(batch, groups, grid_h, grid_w))
    return tuple(maps)


def group_label_scores(
    group_embeds: torch.Tensor,
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    top_k: int | None = 5,
    score_mode: str = "original",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score every group against every label.

    Args:
        group_embeds: `(batch, G, D)` L2-normalised group embeddings.
        image_embeds: `(batch, D)` L2-normalised image embeddings.
        text_embeds: `(C, D)` L2-normalised label embeddings.
        logit_scale: `s = min(exp(logit_scale), max)`, already exponentiated.
        top_k: Labels kept by the image-level restriction (None: all).
        score_mode: `"original"` (`P_top * P_all`) or `"cosine"` (the cosine similarities).

    Returns:
        `group_scores` `(batch, G, C)` and the image-level label probabilities `(batch, C)` (softmax of
        `s * image @ text.T`).
    """
    group_embeds, image_embeds, text_embeds = group_embeds.float(), image_embeds.float(), text_embeds.float()
    # (batch, G, D) @ (D, C) -> (batch, G, C)
    cosine = group_embeds @ text_embeds.t()
    # (batch, D) @ (D, C) -> (batch, C)
    image_probs = (image_embeds @ text_embeds.t() * logit_scale).softmax(-1)
    if score_mode == "cosine":
        return cosine, image_probs
    if score_mode != "original":
        raise ValueError(f"score_mode must be one of {_SCORE_MODES}, got {score_mode!r}")
    group_logits = cosine * logit_scale
    p_all = group_logits.softmax(-1)
    num_labels = text_embeds.shape[0]
    k = num_labels if top_k is None else min(top_k, num_labels)
    # (batch, k) -> (batch, C) boolean mask of the image's top-k labels
    keep = torch.zeros_like(image_probs, dtype=torch.bool).scatter_(-1, image_probs.topk(k, dim=-1).indices, True)
    p_top = group_logits.masked_fill(~keep[:, None, :], float("-inf")).softmax(-1)
    return p_top * p_all, image_probs


def encode_label_prompts(
    embed: Callable[[list[str]], torch.Tensor],
    labels: Sequence[str],
    options: SegmentationOptions,
    templates: Sequence[str] | str | None = None,
    template_ensemble: str | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Embed every label in every template and ensemble the templates: `(C, D)` float32, L2-normalised.

    Shared by the PyTorch and the ONNX segmenters, which differ only in `embed`.

    Args:
        embed: Projected (not normalised) text embeddings `(N, D)` of a list of prompts.
        labels: The label names.
        options: Defaults for `templates` and `template_ensemble`.
        templates: Templates with `{}`; several are ensembled.
        template_ensemble: `"projection_mean"` (original: average the projections, then normalise) or
            `"normalized_mean"` (normalise each, average, normalise).
        batch_size: Prompts per `embed` call.
    """
    opts = options.replace(
        **{k: v for k, v in (("templates", templates), ("template_ensemble", template_ensemble)) if v is not None}
    )
    labels = validate_labels(labels)
    prompts = [template.format(label) for label in labels for template in opts.templates]
    embeds = torch.cat([embed(prompts[i : i + batch_size]).float() for i in range(0, len(prompts), batch_size)])
    # (C * T, D) -> (C, T, D)
    embeds = embeds.reshape(len(labels), len(opts.templates), -1)
    if opts.template_ensemble == "normalized_mean":
        embeds = F.normalize(embeds, dim=-1)
    return F.normalize(embeds.mean(1), dim=-1)


def pixel_label_logits(
    pixel_group_maps: torch.Tensor,
    group_scores: torch.Tensor,
    background_threshold: float | None = None,
    assignment: str = "hard",
    score_mode: str = "original",
) -> torch.Tensor:
    """Per-pixel label logits from pixel->group maps and group scores.

    Args:
        pixel_group_maps: `(batch, G, H, W)` group weights per pixel (arg-maxed when `assignment="hard"`).
        group_scores: `(batch, G, C)` from :func:`group_label_scores`.
        background_threshold: None, or the threshold in `[0, 1]`: relative (`min(t, max group score)`) for
            `score_mode="original"`, absolute for `"cosine"`.
        assignment: `"hard"` (one-hot of the arg-max group) or `"soft"`.
        score_mode: Which threshold rule applies.

    Returns:
        `(batch, C, H, W)`, or `(batch, C + 1, H, W)` with the background logit (0 or 1) last.
    """
    batch, groups, height, width = pixel_group_maps.shape
    num_labels = group_scores.shape[-1]
    group_scores = group_scores.float()
    if assignment == "hard":
        # the one-hot product picks each pixel's group row: (batch, H*W) -> (batch, H*W, C)
        index = pixel_group_maps.argmax(1).reshape(batch, height * width)
        foreground = group_scores.gather(1, index[..., None].expand(-1, -1, num_labels))
        # (batch, H*W, C) -> (batch, C, H, W)
        foreground = foreground.transpose(1, 2).reshape(batch, num_labels, height, width)
    elif assignment == "soft":
        foreground = torch.einsum("bghw,bgc->bchw", pixel_group_maps.float(), group_scores)
    else:
        raise ValueError(f"assignment must be one of {_ASSIGNMENTS}, got {assignment!r}")
    if background_threshold is None:
        return foreground
    if score_mode == "cosine":
        threshold = group_scores.new_full((batch,), background_threshold)
    else:
        # at least the best group stays foreground
        threshold = group_scores.flatten(1).amax(1).clamp(max=background_threshold)
    # (batch, H, W) -> (batch, 1, H, W)
    background = (foreground.amax(1) < threshold[:, None, None]).to(foreground.dtype)[:, None]
    return torch.cat([foreground, background], dim=1)


# --------------------------------------------------------------------------------------------------------------------
# Results and the segmenter
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class SegmentationResult:
    """Segmentation of one image.

    Args:
        labels: Class names indexed by `label_map`: the candidate labels, plus `"background"` at `background_index`
            when the background class is enabled (last by default, first with `background_first=True`).
        label_logits: `(K, H, W)` float32 logits at the original image size, `K = C` or `C + 1`.
        label_map: `(H, W)` int64 arg-max of `label_logits`, an index into `labels`.
        scores: `(K,)` mean logit of each label over the pixels it wins (0 where it wins none).
        image_scores: `(C,)` image-level label probabilities (softmax of the scaled image-text similarities), averaged
            over the windows.
        background_index: Index of the background in `labels`, or None.
        group_maps: Per grouping stage, the chained soft maps `(G_k, grid_h, grid_w)` on the patch grid of the model
            input, when one window covered the image (`mode="whole"`, or a window at least as large as the image);
            None otherwise (the groups of different windows are unrelated).
    """

    labels: list[str]
    label_logits: torch.Tensor
    label_map: torch.Tensor
    scores: torch.Tensor
    image_scores: torch.Tensor
    background_index: int | None = None
    group_maps: tuple[torch.Tensor, ...] | None = None

    def masks(self) -> dict[str, torch.Tensor]:
        """`{label: (H, W) bool mask}` for every label that wins at least one pixel, in label order."""
        present = torch.bincount(self.label_map.flatten(), minlength=len(self.labels))
        return {label: self.label_map == i for i, label in enumerate(self.labels) if present[i] > 0}


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run in eval mode (BatchNorm running statistics, no dropout), then restore a training model."""
    if not model.training:
        yield
        return
    model.eval()
    try:
        yield
    finally:
        model.train()


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (int(value), int(value)) if _is_int(value) else (int(value[0]), int(value[1]))


class GroupViTSegmenter:
    """Zero-shot semantic segmentation with a [`GroupViTModel`] and its tokenizer / image processor.

    Args:
        model: The model (any device and dtype; inference runs in eval mode without gradients).
        processor: A processor with `.tokenizer` and `.image_processor` (e.g. `GroupViTProcessor`).
        tokenizer: The tokenizer, if `processor` is not given (or to override it).
        image_processor: The image processor whose rescale factor and mean/std normalise the images.
        options: Default :class:`SegmentationOptions`.
        **option_changes: Changes to `options`, e.g. `background_threshold=0.95`.

    Example:
        ```python
        >>> import PIL.Image
        >>> from groupvit import GroupViTConfig, GroupViTModel, GroupViTProcessor
        >>> model = GroupViTModel(GroupViTConfig.from_preset("groupvit-tiny"))
        >>> segmenter = GroupViTSegmenter(model, GroupViTProcessor.from_bundled(32), short_side=32, window=32)
        >>> [r.label_map.shape for r in segmenter([PIL.Image.new("RGB", (40, 32))] * 2, ["sky", "tree"])]
        [torch.Size([32, 40]), torch.Size([32, 40])]

        ```
    """

    def __init__(
        self,
        model: GroupViTModel,
        processor: Any = None,
        *,
        tokenizer: Any = None,
        image_processor: Any = None,
        options: SegmentationOptions | None = None,
        **option_changes: Any,
    ) -> None:
        if not isinstance(model, GroupViTModel):
            raise TypeError(
                f"GroupViTSegmenter needs a groupvit.GroupViTModel, got {type(model).__module__}."
                f"{type(model).__name__}; load the checkpoint with groupvit.GroupViTModel.from_pretrained"
            )
        self.model = model
        self.tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
        self.image_processor = (
            image_processor if image_processor is not None else getattr(processor, "image_processor", None)
        )
        if self.tokenizer is None or self.image_processor is None:
            raise ValueError("GroupViTSegmenter needs a tokenizer and an image processor (or a processor with both)")
        self.options = (options or SegmentationOptions()).replace(**option_changes)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        options: SegmentationOptions | None = None,
        **option_changes: Any,
    ) -> GroupViTSegmenter:
        """Load the model and processor from a local directory or a Hub id."""
        from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

        model = GroupViTModel.from_pretrained(name_or_path, dtype=dtype)
        if device is not None:
            model.to(device)
        tokenizer = image_processor = None
        try:
            processor = AutoProcessor.from_pretrained(name_or_path)
            tokenizer = getattr(processor, "tokenizer", None)
            image_processor = getattr(processor, "image_processor", None)
        except (OSError, ValueError, TypeError) as error:
            logger.info("no processor in %s (%s); loading the tokenizer and image processor", name_or_path, error)
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(name_or_path)
        if image_processor is None:
            image_processor = AutoImageProcessor.from_pretrained(name_or_path)
        return cls(model, tokenizer=tokenizer, image_processor=image_processor, options=options, **option_changes)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    # ---- text ------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_labels(
        self,
        labels: Sequence[str],
        templates: Sequence[str] | str | None = None,
        template_ensemble: str | None = None,
        batch_size: int = 256,
    ) -> torch.Tensor:
        """L2-normalised label embeddings `(C, D)` float32 on the model's device.

        Args:
            labels: The label names.
            templates: Templates with `{}` (default: the options'); several are ensembled.
            template_ensemble: `"projection_mean"` (original) or `"normalized_mean"` (default: the options').
            batch_size: Prompts per text-model call.
        """

        with self._inference_context():
            return encode_label_prompts(
                self._embed_prompts, labels, self.options, templates, template_ensemble, batch_size
            )

    def _embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Projected (not normalised) text embeddings `(N, D)` float32 of a list of prompts."""
        tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        output = self.model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask")
        )
        return output.pooler_output.float()

    def _inference_context(self) -> contextlib.AbstractContextManager:
        """Eval mode for the model (BatchNorm running statistics), restored afterwards."""
        return _eval_mode(self.model)

    # ---- images ----------------------------------------------------------------------------------------------------

    def prepare_image(
        self, image: Any, options: SegmentationOptions | None = None, timeout: float | None = None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Load, resize (short side) and normalise one image.

        Returns:
            `pixel_values` `(1, 3, h, w)` float32 at the resized size, normalised by the image processor (its rescale
            factor, mean and std; no resize or crop), and the original `(height, width)`.
        """
        opts = options or self.options
        image = load_rgb_image(image, timeout=timeout)
        original_size = (image.height, image.width)
        height, width = rescaled_size(*original_size, opts.short_side, opts.max_long_side)
        if (height, width) != original_size:
            resample = PIL.Image.Resampling.BILINEAR if opts.resample == "bilinear" else PIL.Image.Resampling.BICUBIC
            image = image.resize((width, height), resample=resample)
        pixel_values = self.image_processor(
            images=[image], do_resize=False, do_center_crop=False, return_tensors="pt"
        )["pixel_values"]
        return pixel_values.float(), original_size

    # ---- model -----------------------------------------------------------------------------------------------------

    @property
    def patch_size(self) -> tuple[int, int]:
        return _pair(self.model.config.vision_config.patch_size)

    def _embed_windows(
        self, pixel_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
        """Run the image tower on `(B, 3, h, w)` crops (sides multiples of the patch size).

        Returns:
            Projected, not normalised `group_embeds` `(B, G, D)` and `image_embeds` `(B, D)`, the soft groupings of
            every stage, and the scale `s = min(exp(logit_scale), max)`.
        """
        model = self.model
        vision = model.vision_model(pixel_values.to(self.dtype), interpolate_pos_encoding=True)
        group_embeds = model.get_group_embeddings(vision.last_hidden_state)
        image_embeds = model.visual_projection(vision.pooler_output)
        return group_embeds, image_embeds, vision.attentions, model.scaled(model.logit_scale.float())

    def _forward_windows(
        self, crops: torch.Tensor, text_embeds: torch.Tensor, opts: SegmentationOptions
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """Logits `(B, K, h, w)`, image probabilities `(B, C)` and stage maps of a batch of same-size crops."""
        height, width = crops.shape[-2:]
        patch = self.patch_size
        pixel_values = _fit_to_patches(crops.to(self.device, torch.float32), patch)
        grid = (pixel_values.shape[-2] // patch[0], pixel_values.shape[-1] // patch[1])
        group_embeds, image_embeds, groupings, logit_scale = self._embed_windows(pixel_values)
        # logits in float32 whatever the model dtype (bf16 softmaxes of scaled similarities lose the ranking)
        group_embeds = F.normalize(group_embeds.float(), dim=-1)
        image_embeds = F.normalize(image_embeds.float(), dim=-1)
        group_scores, image_probs = group_label_scores(
            group_embeds, image_embeds, text_embeds, logit_scale, opts.top_k, opts.score_mode
        )
        maps = stage_group_maps(groupings, grid, batch_size=pixel_values.shape[0])
        maps = tuple(m.to(group_embeds.device) for m in maps)
        # (B, G, grid_h, grid_w) -> (B, G, h, w)
        pixel_maps = F.interpolate(maps[-1], size=(height, width), mode="bilinear", align_corners=False)
        logits = pixel_label_logits(
            pixel_maps, group_scores, opts.background_threshold, opts.assignment, opts.score_mode
        )
        return logits, image_probs, maps

    @torch.inference_mode()
    def predict_logits(
        self,
        pixel_values: Sequence[torch.Tensor],
        text_embeds: torch.Tensor,
        options: SegmentationOptions | None = None,
    ) -> list[dict[str, Any]]:
        """Window-averaged logits of prepared images at their resized size.

        Windows of every image are batched together (by size, `window_batch_size` at a time).

        Args:
            pixel_values: Per image `(1, 3, h, w)` from :meth:`prepare_image`.
            text_embeds: `(C, D)` from :meth:`encode_labels`.
            options: Options (default: the segmenter's).

        Returns:
            Per image a dict with `logits` `(K, h, w)` float32 (background last), `image_scores` `(C,)` and
            `group_maps` (tuple of `(G_k, grid_h, grid_w)`, or None when the image took several windows).
        """
        opts = options or self.options
        text_embeds = text_embeds.to(self.device, torch.float32)
        num_classes = text_embeds.shape[0] + int(opts.with_background)
        jobs: dict[tuple[int, int], list[tuple[int, tuple[int, int, int, int]]]] = defaultdict(list)
        sums, counts, image_scores, group_maps, num_windows = [], [], [], [], []
        for index, values in enumerate(pixel_values):
            if values.ndim != 4 or values.shape[0] != 1:
                raise ValueError(f"pixel_values #{index} must have shape (1, 3, h, w), got {tuple(values.shape)}")
            height, width = values.shape[-2:]
            if opts.mode == "whole":
                boxes = [(0, height, 0, width)]
            else:
                boxes = sliding_windows(height, width, opts.window, opts.window_stride)
            for box in boxes:
                jobs[(box[1] - box[0], box[3] - box[2])].append((index, box))
            num_windows.append(len(boxes))
            sums.append(torch.zeros(num_classes, height, width, device=self.device))
            counts.append(torch.zeros(1, height, width, device=self.device))
            image_scores.append(torch.zeros(text_embeds.shape[0], device=self.device))
            group_maps.append(None)
        with self._inference_context():
            for crop_jobs in jobs.values():
                for start in range(0, len(crop_jobs), opts.window_batch_size):
                    chunk = crop_jobs[start : start + opts.window_batch_size]
                    # (B, 3, h, w): same-size crops of one or more images
                    crops = torch.cat([pixel_values[i][..., y1:y2, x1:x2] for i, (y1, y2, x1, x2) in chunk])
                    logits, probs, maps = self._forward_windows(crops, text_embeds, opts)
                    for j, (i, (y1, y2, x1, x2)) in enumerate(chunk):
                        sums[i][:, y1:y2, x1:x2] += logits[j]
                        counts[i][:, y1:y2, x1:x2] += 1
                        image_scores[i] += probs[j]
                        group_maps[i] = tuple(m[j] for m in maps)
        outputs = []
        for i in range(len(pixel_values)):
            outputs.append(
                {
                    "logits": sums[i] / counts[i],
                    "image_scores": image_scores[i] / num_windows[i],
                    "group_maps": group_maps[i] if num_windows[i] == 1 else None,
                }
            )
        return outputs

    def finalize(
        self,
        prediction: Mapping[str, Any],
        original_size: tuple[int, int],
        labels: Sequence[str],
        options: SegmentationOptions | None = None,
    ) -> SegmentationResult:
        """Resize one image's window-averaged logits to its original size and take the arg-max.

        Args:
            prediction: One entry of :meth:`predict_logits`.
            original_size: `(height, width)` of the image before resizing.
            labels: The candidate labels.
            options: Options (default: the segmenter's).
        """
        opts = options or self.options
        logits = prediction["logits"].float()
        if tuple(logits.shape[-2:]) != tuple(original_size):
            # (K, h, w) -> (K, H, W)
            logits = F.interpolate(logits[None], size=tuple(original_size), mode="bilinear", align_corners=False)[0]
        labels = list(labels)
        background_index = None
        if opts.with_background:
            if opts.background_first:
                logits = torch.cat([logits[-1:], logits[:-1]])
                labels, background_index = [BACKGROUND_LABEL, *labels], 0
            else:
                labels, background_index = [*labels, BACKGROUND_LABEL], len(labels)
        if logits.shape[0] != len(labels):
            raise ValueError(f"got logits for {logits.shape[0]} classes but {len(labels)} labels")
        label_map = logits.argmax(0)
        # mean winning logit per label: (H*W,) scattered by label
        winning = logits.gather(0, label_map[None]).flatten()
        pixels = torch.bincount(label_map.flatten(), minlength=len(labels)).to(logits.dtype)
        totals = torch.zeros(len(labels), dtype=logits.dtype, device=logits.device)
        totals.scatter_add_(0, label_map.flatten(), winning)
        group_maps = prediction.get("group_maps")
        return SegmentationResult(
            labels=labels,
            label_logits=logits.cpu(),
            label_map=label_map.cpu(),
            scores=(totals / pixels.clamp(min=1)).cpu(),
            image_scores=prediction["image_scores"].float().cpu(),
            background_index=background_index,
            group_maps=None if group_maps is None else tuple(m.cpu() for m in group_maps),
        )

    def segment(
        self,
        images: Any,
        labels: Sequence[str],
        *,
        options: SegmentationOptions | None = None,
        text_embeds: torch.Tensor | None = None,
        **option_changes: Any,
    ) -> list[SegmentationResult]:
        """Segment one image or a list of images into `labels` (+ background).

        Args:
            images: One image or a list (file paths, URLs, PIL images, uint8 arrays); any sizes.
            labels: Candidate label names, embedded once for all images and windows.
            options: Options for this call (default: the segmenter's).
            text_embeds: Precomputed `(C, D)` normalised label embeddings (skips the text model).
            **option_changes: Changes to the options for this call, e.g. `mode="whole"`.

        Returns:
            One :class:`SegmentationResult` per image.
        """
        opts = (options or self.options).replace(**option_changes)
        labels = validate_labels(labels, opts.with_background)
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        if not images:
            raise ValueError("no images given")
        if text_embeds is None:
            text_embeds = self.encode_labels(labels, opts.templates, opts.template_ensemble)
        elif text_embeds.ndim != 2 or text_embeds.shape[0] != len(labels):
            raise ValueError(f"text_embeds must have shape ({len(labels)}, D), got {tuple(text_embeds.shape)}")
        prepared = [self.prepare_image(image, opts) for image in images]
        predictions = self.predict_logits([values for values, _ in prepared], text_embeds, opts)
        return [self.finalize(p, size, labels, opts) for p, (_, size) in zip(predictions, prepared, strict=True)]

    __call__ = segment

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={type(self.model).__name__}, options={self.options})"


def expected_windows(height: int, width: int, options: SegmentationOptions) -> int:
    """Number of model windows for an image of `height` x `width` (before the short-side resize)."""
    height, width = rescaled_size(height, width, options.short_side, options.max_long_side)
    if options.mode == "whole":
        return 1
    return len(sliding_windows(height, width, options.window, options.window_stride))
