"""The `zero-shot-image-segmentation` pipeline: GroupViT's zero-shot semantic segmentation behind `pipeline(...)`.

Importing `groupvit` registers the task with transformers' `PIPELINE_REGISTRY`, so that

```python
>>> from transformers import pipeline
>>> segmenter = pipeline("zero-shot-image-segmentation", model="path/or/hub-id")  # doctest: +SKIP
>>> segmenter("cats.jpg", candidate_labels=["cat", "sofa"], background_threshold=0.9)  # doctest: +SKIP
[{'label': 'cat', 'score': 0.61, 'mask': <PIL.Image.Image image mode=L size=640x480>}, ...]

```

works with our `GroupViTModel` (which `AutoModel` resolves to once `groupvit` is imported). The computation is
:class:`groupvit.segmentation.segmenter.GroupViTSegmenter`'s: short side 448, 448/224 sliding windows, the original
group -> label scores and background rule; see that module for the details.
"""

from __future__ import annotations

import logging
import types
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers import Pipeline

from groupvit.processing_groupvit import IMAGE_URL_TIMEOUT
from groupvit.segmentation.protocols import (
    SegmentationOptions,
    check_background_threshold,
    check_templates,
    validate_labels,
)

logger = logging.getLogger(__name__)

__all__ = ["TASK", "ZeroShotImageSegmentationPipeline", "register_pipeline"]

TASK = "zero-shot-image-segmentation"

# call argument -> SegmentationOptions field
_OPTION_ARGUMENTS = {
    "hypothesis_template": "templates",
    "template_ensemble": "template_ensemble",
    "background_threshold": "background_threshold",
    "mode": "mode",
    "short_side": "short_side",
    "max_long_side": "max_long_side",
    "window": "window",
    "stride": "stride",
    "top_k": "top_k",
    "assignment": "assignment",
    "score_mode": "score_mode",
    "window_batch_size": "window_batch_size",
}


class ZeroShotImageSegmentationPipeline(Pipeline):
    """Zero-shot semantic segmentation: one mask per candidate label, plus background when a threshold is given.

    Inputs, as the `zero-shot-object-detection` pipeline takes them:
        - `segmenter(image, candidate_labels=["cat", "dog"])` or `candidate_labels="cat, dog"` (comma-separated);
        - `segmenter({"image": image, "candidate_labels": [...]})`;
        - a list of images with one label list for all (`candidate_labels=[...]`) or one per image
          (`candidate_labels=[[...], [...]]`), or a list of such dicts.

        An image is a path, an http(s) URL (waited for `timeout` seconds, 10 by default), a PIL image (any size and
        mode, 16-bit included) or an array/tensor (see :func:`groupvit.processing_groupvit.to_rgb_image`).

    Call arguments (at construction they become the defaults):
        candidate_labels: The label names: a list, or one comma-separated string. Refused (ValueError naming the
            label): an empty label, two labels that are the same up to case and spaces, a prompt longer than the
            text model's context; see :func:`groupvit.segmentation.protocols.validate_labels`.
        hypothesis_template: The prompt, with `{}` for the label (default `"a photo of a {}."`); a list of templates
            is ensembled as in the original (mean of the un-normalised text projections).
        background_threshold: None (default) for no background, else in `[0, 1]`: pixels whose best label score is
            below `min(threshold, best group score)` become `"background"` (0.95 on VOC in the original code).
        mode: `"slide"` (default; `window`/`stride` windows, 448/224) or `"whole"`.
        short_side: Short side the image is resized to before inference (448; None keeps the size).
        window, stride: Sliding-window size and stride in pixels of the resized image (stride default: half the
            window).
        top_k, assignment, score_mode, template_ensemble, max_long_side, window_batch_size: See
            :class:`groupvit.segmentation.protocols.SegmentationOptions`.
        timeout: Seconds to wait for an image URL (default 10; None waits forever).
        batch_size: Images segmented together (default 1): their windows go through the model in batches of
            `window_batch_size`, whatever the images' sizes.

    Returns:
        For one image, a list of `{"label": str, "score": float, "mask": PIL.Image}` for every label that wins at
        least one pixel (candidate order, background last); `mask` is a mode `"L"` image (255 inside, 0 outside) at
        the original image size. `score` is a confidence in `[0, 1]` to threshold: for a label, the mean over its
        mask of the winning group's score for that label (`P_top * P_all`: how well the group matches the label, and
        the label rather than the others); for the background, 1 minus the mean best label score over the
        background pixels. For a list of images, a list of such lists.

    Raises:
        ValueError: For a bad argument or a bad image, naming it (and the image's index in a list).

    Example:
        ```python
        >>> import PIL.Image
        >>> from transformers import pipeline
        >>> import groupvit
        >>> model = groupvit.GroupViTModel(groupvit.GroupViTConfig.from_preset("groupvit-tiny"))
        >>> segmenter = pipeline(
        ...     "zero-shot-image-segmentation", model=model, processor=groupvit.GroupViTProcessor.from_bundled(32)
        ... )
        >>> out = segmenter(PIL.Image.new("RGB", (60, 40)), candidate_labels="cat, dog", short_side=32, window=32)
        >>> sorted(out[0]), out[0]["mask"].size
        (['label', 'mask', 'score'], (60, 40))
        >>> batch = [{"image": PIL.Image.new("RGB", (60, 40)), "candidate_labels": ["sky"]}] * 2
        >>> len(segmenter(batch, batch_size=2, short_side=32, window=32))
        2

        ```
    """

    _load_processor = False
    _load_image_processor = None
    _load_feature_extractor = False
    _load_video_processor = False
    _load_tokenizer = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.processor is not None:
            self.tokenizer = self.tokenizer or getattr(self.processor, "tokenizer", None)
            self.image_processor = self.image_processor or getattr(self.processor, "image_processor", None)
        if self.tokenizer is None or self.image_processor is None:
            raise ValueError(
                f"the {TASK} pipeline needs a tokenizer and an image processor: pass `processor=` (or `tokenizer=` "
                "and `image_processor=`) when the model is not loaded from a directory or Hub id that has them"
            )
        # imported here so that registering the task (`import groupvit`) does not load the segmenter
        from groupvit.segmentation.segmenter import GroupViTSegmenter

        # TypeError for a model without GroupViTModel's methods (duck-typed: remote-code classes are accepted)
        self.segmenter = GroupViTSegmenter(
            self.model, tokenizer=self.tokenizer, image_processor=self.image_processor, options=SegmentationOptions()
        )
        self._text_embeds: dict[tuple[Any, ...], torch.Tensor] = {}

    def __call__(self, images: Any = None, candidate_labels: Any = None, **kwargs: Any) -> Any:
        if images is None:
            images = kwargs.pop("inputs", None)
        if images is None:
            raise ValueError(f"the {TASK} pipeline needs images")
        batch_size = kwargs.pop("batch_size", None)
        batch_size = self._batch_size if batch_size is None else batch_size
        batch_size = 1 if batch_size is None else batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(images, types.GeneratorType):
            images = list(images)
        single = not isinstance(images, (list, tuple))
        items = _input_items([images] if single else list(images), candidate_labels, single)
        params = {**self._preprocess_params, **self._sanitize_parameters(**kwargs)[0]}
        default_labels = params.pop("candidate_labels", None)
        # label embeddings are computed once per call for all its images
        self._text_embeds = {}
        outputs = []
        try:
            for start in range(0, len(items), batch_size):
                batch = []
                for index, image, labels in items[start : start + batch_size]:
                    labels = default_labels if labels is None else validate_labels(_split_labels(labels, index))
                    batch.append(self.preprocess(image, candidate_labels=labels, index=index, **params))
                outputs += [self.postprocess(output) for output in self._forward_batch(batch)]
        finally:
            self._text_embeds = {}
        return outputs[0] if single else outputs

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        preprocess_params: dict[str, Any] = {}
        for name, value in kwargs.items():
            if name == "candidate_labels":
                preprocess_params[name] = validate_labels(_split_labels(value))
            elif name == "timeout":
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if value is not None and (not number or value <= 0):
                    raise ValueError(f"timeout must be None or a positive number of seconds, got {value!r}")
                preprocess_params[name] = value
            elif name in _OPTION_ARGUMENTS:
                if name == "hypothesis_template":
                    value = check_templates(value, name)
                elif name == "background_threshold":
                    value = check_background_threshold(value)
                preprocess_params[_OPTION_ARGUMENTS[name]] = value
            else:
                raise ValueError(f"unknown argument {name!r} for the {TASK} pipeline")
        return preprocess_params, {}, {}

    def preprocess(
        self,
        image: Any,
        candidate_labels: list[str] | None = None,
        timeout: float | None = IMAGE_URL_TIMEOUT,
        index: int | None = None,
        **option_changes: Any,
    ) -> dict[str, Any]:
        options = self.segmenter.options.replace(**option_changes)
        if candidate_labels is None:
            where = "" if index is None else f" (image #{index})"
            raise ValueError(f"the {TASK} pipeline needs candidate_labels{where}")
        labels = validate_labels(candidate_labels, options.with_background)
        pixel_values, original_size = self.segmenter.prepare_image(image, options, timeout=timeout, index=index)
        return {
            "pixel_values": pixel_values,
            "original_size": original_size,
            "candidate_labels": labels,
            "options": options,
        }

    def _forward_batch(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Window-averaged logits of prepared images; images with the same labels and options share model calls."""
        groups: dict[tuple[Any, ...], list[int]] = {}
        for position, inputs in enumerate(batch):
            groups.setdefault((tuple(inputs["candidate_labels"]), inputs["options"]), []).append(position)
        outputs: list[dict[str, Any]] = [{} for _ in batch]
        for (labels, options), positions in groups.items():
            key = (labels, options.templates, options.template_ensemble)
            if key not in self._text_embeds:
                self._text_embeds[key] = self.segmenter.encode_labels(
                    list(labels), options.templates, options.template_ensemble
                )
            pixel_values = [batch[p]["pixel_values"] for p in positions]
            predictions = self.segmenter.predict_logits(pixel_values, self._text_embeds[key], options)
            for position, prediction in zip(positions, predictions, strict=True):
                inputs = batch[position]
                outputs[position] = {
                    **prediction,
                    "original_size": inputs["original_size"],
                    "candidate_labels": inputs["candidate_labels"],
                    "options": options,
                }
        return outputs

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        return self._forward_batch([model_inputs])[0]

    def postprocess(self, model_outputs: dict[str, Any]) -> list[dict[str, Any]]:
        result = self.segmenter.finalize(
            model_outputs, model_outputs["original_size"], model_outputs["candidate_labels"], model_outputs["options"]
        )
        label_map = result.label_map.numpy()
        present = np.bincount(label_map.ravel(), minlength=len(result.labels))
        outputs = []
        for index, label in enumerate(result.labels):
            if present[index] == 0:
                continue
            # bool -> uint8 in place of an int64 temporary (8 bytes a pixel)
            mask = PIL.Image.fromarray((label_map == index).view(np.uint8) * np.uint8(255))  # mode "L"
            outputs.append({"label": label, "score": float(result.scores[index]), "mask": mask})
        return outputs


def _split_labels(labels: Any, index: int | None = None) -> Any:
    """A comma-separated string -> its stripped, non-empty names; anything else unchanged (validated later)."""
    if isinstance(labels, str):
        names = [name.strip() for name in labels.split(",")]
        if not all(names):
            where = "" if index is None else f" of image #{index}"
            raise ValueError(f"candidate labels{where} {labels!r} hold an empty name between commas")
        return names
    return labels


def _input_items(images: list[Any], candidate_labels: Any, single: bool) -> list[tuple[int, Any, Any]]:
    """`(index, image, labels or None)` for every input: plain images, `{"image", "candidate_labels"}` dicts, and
    call-level labels that are one list for all images or one list per image."""
    if not images:
        raise ValueError("images is an empty list")
    per_image = (
        not single
        and isinstance(candidate_labels, (list, tuple))
        and len(candidate_labels) > 0
        and all(isinstance(labels, (list, tuple)) for labels in candidate_labels)
    )
    if per_image and len(candidate_labels) != len(images):
        raise ValueError(
            f"got {len(candidate_labels)} candidate label lists for {len(images)} images; give one list per image "
            "or one list for all"
        )
    items = []
    for index, image in enumerate(images):
        labels = candidate_labels[index] if per_image else candidate_labels
        if isinstance(image, dict):
            unknown = set(image) - {"image", "candidate_labels"}
            if "image" not in image or unknown:
                raise ValueError(
                    f"input #{index} must be an image or a dict with 'image' and optionally 'candidate_labels', got "
                    f"keys {sorted(image)}"
                )
            labels = image.get("candidate_labels", labels)
            image = image["image"]
        items.append((index, image, labels))
    return items


def register_pipeline() -> None:
    """Register the `zero-shot-image-segmentation` task with transformers (idempotent)."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    current = PIPELINE_REGISTRY.supported_tasks.get(TASK)
    if current is not None and current.get("impl") is ZeroShotImageSegmentationPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=ZeroShotImageSegmentationPipeline, pt_model=AutoModel, type="multimodal"
    )


# importing this module (which `import groupvit` does) registers the task
register_pipeline()
