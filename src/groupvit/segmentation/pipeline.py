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
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers import Pipeline

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

    Call arguments (at construction they become the defaults):
        images: A path, an http(s) URL, a PIL image (any size), or a list of them.
        candidate_labels: The label names (non-empty, no duplicates).
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
        timeout: Seconds to wait for an image URL.

    Returns:
        For one image, a list of `{"label": str, "score": float, "mask": PIL.Image}` for every label that wins at
        least one pixel (candidate order, background last); `mask` is a mode `"L"` image (255 inside, 0 outside) at
        the original image size, and `score` the mean logit of the label over its mask. For a list of images, a list
        of such lists.

    Example:
        ```python
        >>> import PIL.Image
        >>> from transformers import pipeline
        >>> import groupvit
        >>> model = groupvit.GroupViTModel(groupvit.GroupViTConfig.from_preset("groupvit-tiny"))
        >>> segmenter = pipeline(
        ...     "zero-shot-image-segmentation", model=model, processor=groupvit.GroupViTProcessor.from_bundled(32)
        ... )
        >>> out = segmenter(PIL.Image.new("RGB", (60, 40)), candidate_labels=["cat", "dog"], short_side=32, window=32)
        >>> sorted(out[0]), out[0]["mask"].size
        (['label', 'mask', 'score'], (60, 40))

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
        if self._batch_size not in (None, 1):
            logger.warning("batch_size is ignored: windows are batched inside the model call (window_batch_size)")
            self._batch_size = 1
        # imported here so that registering the task (`import groupvit`) does not load the segmenter
        from groupvit.segmentation.segmenter import GroupViTSegmenter

        # TypeError for a model that is not groupvit.GroupViTModel
        self.segmenter = GroupViTSegmenter(
            self.model, tokenizer=self.tokenizer, image_processor=self.image_processor, options=SegmentationOptions()
        )
        self._text_embeds: dict[tuple[Any, ...], torch.Tensor] = {}

    def __call__(self, images: Any = None, candidate_labels: list[str] | None = None, **kwargs: Any) -> Any:
        if images is None:
            images = kwargs.pop("inputs", None)
        if images is None:
            raise ValueError(f"the {TASK} pipeline needs images")
        if isinstance(images, tuple):
            images = list(images)
        if isinstance(images, list) and not images:
            raise ValueError("images is an empty list")
        if kwargs.pop("batch_size", None) not in (None, 1):
            logger.warning("batch_size is ignored: windows are batched inside the model call (window_batch_size)")
        if candidate_labels is not None:
            kwargs["candidate_labels"] = candidate_labels
        # label embeddings are computed once per call for all its images
        self._text_embeds = {}
        try:
            return super().__call__(images, batch_size=1, **kwargs)
        finally:
            self._text_embeds = {}

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        preprocess_params: dict[str, Any] = {}
        for name, value in kwargs.items():
            if name == "candidate_labels":
                preprocess_params[name] = validate_labels(value)
            elif name == "timeout":
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
        timeout: float | None = None,
        **option_changes: Any,
    ) -> dict[str, Any]:
        options = self.segmenter.options.replace(**option_changes)
        if candidate_labels is None:
            raise ValueError(f"the {TASK} pipeline needs candidate_labels")
        labels = validate_labels(candidate_labels, options.with_background)
        pixel_values, original_size = self.segmenter.prepare_image(image, options, timeout=timeout)
        return {
            "pixel_values": pixel_values,
            "original_size": original_size,
            "candidate_labels": labels,
            "options": options,
        }

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        options: SegmentationOptions = model_inputs["options"]
        labels = model_inputs["candidate_labels"]
        key = (tuple(labels), options.templates, options.template_ensemble)
        if key not in self._text_embeds:
            self._text_embeds[key] = self.segmenter.encode_labels(labels, options.templates, options.template_ensemble)
        prediction = self.segmenter.predict_logits([model_inputs["pixel_values"]], self._text_embeds[key], options)[0]
        return {
            **prediction,
            "original_size": model_inputs["original_size"],
            "candidate_labels": labels,
            "options": options,
        }

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
