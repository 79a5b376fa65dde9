"""Zero-shot semantic segmentation with GroupViT, following the original evaluation protocol.

:class:`GroupViTSegmenter` runs a [`GroupViTModel`] over an image the way the original `GroupViTSegInference` (mmseg
`EncoderDecoder`) does; the per-window math (pixel -> group -> label) is in :mod:`groupvit.segmentation.scoring`,
the options and dataset protocols in :mod:`groupvit.segmentation.protocols`, the window geometry in
:mod:`groupvit.segmentation.windows`.

Around the per-window math: the image's short side is resized to `short_side` (448; the long side capped at
`max_long_side`, 2048, as mmseg's `Resize(img_scale=(2048, 448), keep_ratio=True)`), normalised by the processor's
image processor, then cut into `window` x `window` crops with `stride` (448/224) whose logits are averaged where they
overlap (`mode="slide"`), or run at once (`mode="whole"`); the averaged logits are resized to the original image size
and arg-maxed.

Memory stays bounded whatever the image size and the number of labels: the logits are kept at the resolution of the
resized image (`(K, h, w)`, at most `short_side` x `max_long_side`), the pixel logits of a batch of windows are made
one window at a time, and the resize to the original size runs a few labels at a time with a running arg-max, so
the `(K, H, W)` logits at the original size never exist (:meth:`SegmentationResult.full_size_logits` makes them on
request). The label map is the same as arg-maxing the full resized logits.

Crops are fed to the model at their own size, as in mmseg 0.18 (no padding to the window size): a crop whose side is
not a multiple of the patch size is resized to the nearest multiple for the model, and the grouping maps are resized
back to the crop. So a window at least as large as the image gives exactly the `mode="whole"` result.

Example:
    ```python
    >>> import PIL.Image
    >>> from groupvit import GroupViTConfig, GroupViTModel, GroupViTProcessor
    >>> from groupvit.segmentation.segmenter import GroupViTSegmenter
    >>> model = GroupViTModel(GroupViTConfig.from_preset("groupvit-tiny")).eval()
    >>> segmenter = GroupViTSegmenter(model, GroupViTProcessor.from_bundled(image_size=32), short_side=32, window=32)
    >>> result = segmenter.segment(PIL.Image.new("RGB", (48, 40)), ["cat", "dog"], background_threshold=0.9)[0]
    >>> result.label_logits.shape, result.label_map.shape, result.labels
    (torch.Size([3, 32, 38]), torch.Size([40, 48]), ['cat', 'dog', 'background'])
    >>> result.full_size_logits().shape
    torch.Size([3, 40, 48])

    ```
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import PIL.Image
import torch
import torch.nn.functional as F

from groupvit.modeling_groupvit import GroupViTModel, _pair
from groupvit.processing_groupvit import IMAGE_URL_TIMEOUT, to_rgb_image
from groupvit.segmentation.protocols import BACKGROUND_LABEL, SegmentationOptions, check_templates, validate_labels
from groupvit.segmentation.scoring import (
    encode_label_prompts,
    group_label_scores,
    pixel_label_logits,
    stage_group_maps,
)
from groupvit.segmentation.windows import fit_to_patches, rescaled_size, sliding_windows
from groupvit.utils import eval_mode

logger = logging.getLogger(__name__)

__all__ = [
    "SEGMENTATION_MODEL_ATTRIBUTES",
    "GroupViTSegmenter",
    "SegmentationResult",
    "check_segmentation_model",
    "resize_logits",
    "upsampled_argmax",
]


@dataclass
class SegmentationResult:
    """Segmentation of one image.

    Args:
        labels: Class names indexed by `label_map`: the candidate labels, plus `"background"` at `background_index`
            when the background class is enabled (last by default, first with `background_first=True`).
        label_logits: `(K, h, w)` float32 logits at the resolution of the model input (the image after the
            short-side resize), `K = C` or `C + 1`; :meth:`full_size_logits` resizes them to the original size.
        label_map: `(H, W)` int64 arg-max of the logits resized to the original image size, an index into `labels`.
        scores: `(K,)` a confidence in `[0, 1]` per label (0 where it wins no pixel), see
            :meth:`GroupViTSegmenter.finalize`.
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

    def full_size_logits(self) -> torch.Tensor:
        """The `(K, H, W)` logits at the original image size (`label_map` is their arg-max); `K x H x W` floats."""
        return resize_logits(self.label_logits, tuple(self.label_map.shape))

    def masks(self) -> dict[str, torch.Tensor]:
        """`{label: (H, W) bool mask}` for every label that wins at least one pixel, in label order."""
        present = torch.bincount(self.label_map.flatten(), minlength=len(self.labels))
        return {label: self.label_map == i for i, label in enumerate(self.labels) if present[i] > 0}


SEGMENTATION_MODEL_ATTRIBUTES = (
    "config",
    "vision_model",
    "text_model",
    "visual_projection",
    "logit_scale",
    "get_group_embeddings",
    "get_text_features",
    "scaled",
)
"""What :class:`GroupViTSegmenter` uses of a model: any object with these (a `groupvit.GroupViTModel`, or the same
class loaded again as remote code with `trust_remote_code=True`, a different class object) can be segmented with."""


def check_segmentation_model(model: Any) -> None:
    """Raise TypeError naming what is missing when `model` lacks :data:`SEGMENTATION_MODEL_ATTRIBUTES`.

    A duck-typed check rather than `isinstance(model, GroupViTModel)`: a model loaded with `trust_remote_code=True`
    is an instance of the Hub copy of the class, not of this package's.
    """
    missing = [name for name in SEGMENTATION_MODEL_ATTRIBUTES if not hasattr(model, name)]
    if missing:
        raise TypeError(
            f"GroupViTSegmenter needs a groupvit.GroupViTModel (or a model with its {', '.join(missing)}), got "
            f"{type(model).__module__}.{type(model).__name__}; load the checkpoint with "
            "groupvit.GroupViTModel.from_pretrained"
        )


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`(K, h, w)` logits resized bilinearly (`align_corners=False`) to `size`, float32 (itself when same size)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits.float()
    # (K, h, w) -> (K, H, W)
    return F.interpolate(logits[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]


def upsampled_argmax(
    logits: torch.Tensor,
    size: tuple[int, int],
    background_index: int | None = None,
    max_elements: int = 1 << 24,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Arg-max over labels of `(K, h, w)` logits resized bilinearly to `size`, without making the `(K, H, W)` tensor.

    The labels are resized in chunks of about `max_elements` values (one label at a time for a large image) and
    folded into a running maximum, so peak memory is a few `H x W` planes whatever `K`. The result equals
    `F.interpolate(logits[None], size, mode="bilinear", align_corners=False)[0].argmax(0)` (ties go to the first
    label, as `argmax`), since bilinear resizing treats every channel alone.

    Args:
        logits: `(K, h, w)` logits.
        size: `(H, W)` to resize to.
        background_index: The background row, if any: it gets a chunk of its own and stays out of `best_label`.
        max_elements: Resized values per chunk.

    Returns:
        `label_map` `(H, W)` int64, the winning logit `(H, W)`, and the best non-background logit `(H, W)` (None
        without a background row).
    """
    num_labels = logits.shape[0]
    height, width = size
    resize = tuple(logits.shape[-2:]) != (height, width)
    step = max(1, max_elements // (height * width))
    cuts = {0, num_labels, *range(0, num_labels, step)}
    if background_index is not None:
        cuts |= {background_index, background_index + 1}
    cuts = sorted(cuts)
    best = label_map = best_label = None
    for start, stop in zip(cuts[:-1], cuts[1:], strict=True):
        part = logits[start:stop]
        if resize:
            part = resize_logits(part, size)
        if stop - start == 1:
            value, index = part[0], None
        else:
            value, index = part.max(0)  # first maximum on ties, as argmax
        if best is None:
            best = value.clone()
            label_map = index + start if index is not None else torch.full_like(value, start, dtype=torch.int64)
        else:
            better = value > best  # strictly: an earlier label keeps a tie
            torch.maximum(best, value, out=best)
            if index is None:
                label_map.masked_fill_(better, start)
            else:
                label_map = torch.where(better, index + start, label_map)
        if background_index is not None and start != background_index:
            best_label = value.clone() if best_label is None else torch.maximum(best_label, value, out=best_label)
        del part, value, index
    return label_map, best, best_label


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
        check_segmentation_model(model)
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

        templates = self.options.templates if templates is None else check_templates(templates)
        validate_labels(labels, tokenizer=self.tokenizer, templates=templates, max_length=self._text_context)
        with self._inference_context():
            return encode_label_prompts(
                self._embed_prompts, labels, self.options, templates, template_ensemble, batch_size
            )

    @property
    def _text_context(self) -> int | None:
        """Tokens the text model reads (its position embeddings), or None when unknown."""
        text_config = getattr(getattr(getattr(self, "model", None), "config", None), "text_config", None)
        return getattr(text_config, "max_position_embeddings", None)

    def _embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Projected (not normalised) text embeddings `(N, D)` float32 of a list of prompts."""
        tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        output = self.model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask")
        )
        return output.pooler_output.float()

    def _inference_context(self) -> contextlib.AbstractContextManager:
        """Eval mode for the model (BatchNorm running statistics), restored afterwards."""
        return eval_mode(self.model)

    # ---- images ----------------------------------------------------------------------------------------------------

    def prepare_image(
        self,
        image: Any,
        options: SegmentationOptions | None = None,
        timeout: float | None = IMAGE_URL_TIMEOUT,
        index: int | None = None,
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Load, resize (short side) and normalise one image (`timeout`: seconds to wait for a URL; `index`: the
        image's position in a batch, named in errors).

        Returns:
            `pixel_values` `(1, 3, h, w)` float32 at the resized size, normalised by the image processor (its rescale
            factor, mean and std; no resize or crop), and the original `(height, width)`.
        """
        opts = options or self.options
        image = to_rgb_image(image, index=index, timeout=timeout)
        original_size = (image.height, image.width)
        height, width = rescaled_size(*original_size, opts.short_side, opts.max_long_side)
        # resized here with PIL, not by the image processor: its size rule is not mmseg's (see `rescaled_size`)
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
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """Pixel -> group maps `(B, G, h, w)`, group scores `(B, G, C)`, image probabilities `(B, C)` and stage
        maps of a batch of same-size crops (the `(K, h, w)` pixel logits are made one window at a time)."""
        height, width = crops.shape[-2:]
        patch = self.patch_size
        pixel_values = fit_to_patches(crops.to(self.device, torch.float32), patch)
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
        return pixel_maps, group_scores, image_probs, maps

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
                    pixel_maps, group_scores, probs, maps = self._forward_windows(crops, text_embeds, opts)
                    for j, (i, (y1, y2, x1, x2)) in enumerate(chunk):
                        # (1, K, h, w) for this window only: the batch's logits would be B x K x h x w floats
                        logits = pixel_label_logits(
                            pixel_maps[j : j + 1],
                            group_scores[j : j + 1],
                            opts.background_threshold,
                            opts.assignment,
                            opts.score_mode,
                        )[0]
                        sums[i][:, y1:y2, x1:x2] += logits
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

        The resize runs a few labels at a time (about `2**24` resized values per step) with a running arg-max, so
        memory is `O(H x W)` whatever the number of labels; the label map equals the arg-max of all the resized
        logits (ties go to the first label).

        The `scores` are confidences in `[0, 1]` (with `score_mode="original"`): for a label, the mean over the
        pixels it wins of its logit there, i.e. of the winning group's score `P_top * P_all` (how strongly the
        group matches the label, relative to the other labels); for the background, `1 -` the mean best label logit
        over the background pixels (1 when no label matches there at all). A label that wins no pixel scores 0.
        With `score_mode="cosine"` the label scores are mean cosine similarities instead (in `[-1, 1]`).

        Args:
            prediction: One entry of :meth:`predict_logits`.
            original_size: `(height, width)` of the image before resizing.
            labels: The candidate labels.
            options: Options (default: the segmenter's).
        """
        opts = options or self.options
        logits = prediction["logits"].float()
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
        label_map, winning, best_label = upsampled_argmax(logits, tuple(original_size), background_index)
        flat = label_map.flatten()
        pixels = torch.bincount(flat, minlength=len(labels)).to(logits.dtype)
        # mean winning logit per label: (H*W,) scattered by label
        totals = torch.zeros(len(labels), dtype=logits.dtype, device=logits.device).scatter_add_(
            0, flat, winning.flatten()
        )
        scores = totals / pixels.clamp(min=1)
        if background_index is not None and pixels[background_index] > 0:
            # 1 - mean best label logit over the background pixels
            best_total = torch.zeros_like(totals).scatter_add_(0, flat, best_label.flatten())[background_index]
            scores[background_index] = 1.0 - best_total / pixels[background_index]
        group_maps = prediction.get("group_maps")
        return SegmentationResult(
            labels=labels,
            label_logits=logits.cpu(),
            label_map=label_map.cpu(),
            scores=scores.cpu(),
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
        prepared = [self.prepare_image(image, opts, index=i) for i, image in enumerate(images)]
        predictions = self.predict_logits([values for values, _ in prepared], text_embeds, opts)
        return [self.finalize(p, size, labels, opts) for p, (_, size) in zip(predictions, prepared, strict=True)]

    __call__ = segment

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={type(self.model).__name__}, options={self.options})"
