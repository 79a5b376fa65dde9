"""ONNX export of GroupViT's two towers, and a segmenter that runs on ONNX Runtime without the PyTorch weights.

:func:`export_onnx` writes, into one directory:

- `image_model.onnx`: `pixel_values (batch, 3, height, width)` -> `image_embeds (batch, proj)` (projected, not
  normalised), `group_embeds (batch, groups, proj)` (the final segment tokens, projected, not normalised) and one soft
  grouping map per grouping stage, `grouping_1 (batch, G_1, num_patches)`, `grouping_2 (batch, G_2, G_1)`, ...
  The batch, height and width are dynamic: the position embedding is resized bicubically inside the graph (the model
  always interpolates while tracing), so any size whose sides are multiples of the patch size works.
- `text_model.onnx`: `input_ids (batch, length)`, `attention_mask (batch, length)` -> `text_embeds (batch, proj)`
  (projected, not normalised; the projection's BatchNorm uses its running statistics). Batch and length are dynamic.
- `groupvit_onnx.json`: the logit scale (`min(exp(logit_scale), max)`, already exponentiated), the patch size, the
  output names, the opset and the parity errors measured at export.
- the processor (`save_pretrained`): tokenizer and image processor.

Both graphs come from the TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`), opset 17 by default.

:class:`OnnxGroupViTSegmenter` loads such a directory with ONNX Runtime and segments images exactly as
:class:`groupvit.segmentation.segmenter.GroupViTSegmenter` does: the ONNX graphs replace the PyTorch towers, and the
protocol
(group scores, top-k restriction, background threshold, window averaging) is the same code, i.e. the pure torch
functions of :mod:`groupvit.segmentation.scoring` applied to the ONNX outputs.

Example:
    ```python
    >>> import tempfile
    >>> import PIL.Image
    >>> from groupvit import GroupViTConfig, GroupViTModel, GroupViTProcessor
    >>> from groupvit.segmentation.onnx import OnnxGroupViTSegmenter, export_onnx
    >>> model = GroupViTModel(GroupViTConfig.from_preset("groupvit-tiny"))
    >>> directory = tempfile.mkdtemp()
    >>> export = export_onnx(model, directory, processor=GroupViTProcessor.from_bundled(image_size=32))
    >>> max(export.parity.values()) < 1e-4
    True
    >>> segmenter = OnnxGroupViTSegmenter(directory, short_side=32, mode="whole")
    >>> result = segmenter.segment(PIL.Image.new("RGB", (48, 40)), ["cat", "dog"], background_threshold=0.9)[0]
    >>> result.label_map.shape, result.labels
    (torch.Size([40, 48]), ['cat', 'dog', 'background'])

    ```
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from groupvit.modeling_groupvit import GroupViTModel, _pair
from groupvit.segmentation.protocols import SegmentationOptions
from groupvit.segmentation.segmenter import GroupViTSegmenter
from groupvit.utils import eval_mode

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_OPSET",
    "IMAGE_MODEL_FILE",
    "METADATA_FILE",
    "TEXT_MODEL_FILE",
    "OnnxExport",
    "OnnxGroupViTSegmenter",
    "export_onnx",
    "image_output_names",
    "validate_onnx",
]

IMAGE_MODEL_FILE = "image_model.onnx"
TEXT_MODEL_FILE = "text_model.onnx"
METADATA_FILE = "groupvit_onnx.json"
DEFAULT_OPSET = 17
"""Default ONNX opset (the lowest one accepted: LayerNormalization is a single op from 17 on)."""
_FORMAT_VERSION = 1
_MIN_OPSET = 17
_VALIDATION_PROMPTS = ("a photo of a cat.", "a photo of many small dogs playing on the green grass.", "sky")


def image_output_names(num_groupings: int) -> list[str]:
    """Output names of the image graph: `image_embeds`, `group_embeds`, `grouping_1` ... `grouping_{num_groupings}`."""
    return ["image_embeds", "group_embeds", *(f"grouping_{i + 1}" for i in range(num_groupings))]


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError("ONNX support needs onnxruntime: pip install 'groupvit[onnx]'") from error
    return onnxruntime


# --------------------------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------------------------


class _ImageTower(nn.Module):
    """The vision tower with its projection, returning what segmentation needs (see the module doc)."""

    def __init__(self, model: GroupViTModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # while tracing the position embedding is always resized, so the graph keeps height and width dynamic
        vision = self.model.vision_model(pixel_values, interpolate_pos_encoding=True)
        image_embeds = self.model.visual_projection(vision.pooler_output)
        group_embeds = self.model.get_group_embeddings(vision.last_hidden_state)
        return (image_embeds, group_embeds, *vision.attentions)


class _TextTower(nn.Module):
    """The text tower with its projection: `(batch, length)` token ids and mask -> `(batch, proj)`."""

    def __init__(self, model: GroupViTModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.text_projection(self.model.text_model(input_ids, attention_mask).pooler_output)


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Args:
        directory: The output directory.
        image_model: Path of the image graph.
        text_model: Path of the text graph.
        metadata: The contents of `groupvit_onnx.json`.
        parity: Per output, the largest absolute difference between ONNX Runtime and PyTorch over the validation
            inputs (None when not validated).
    """

    directory: Path
    image_model: Path
    text_model: Path
    metadata: dict[str, Any]
    parity: dict[str, float] | None = None


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence the tracer's expected warnings: shape checks that become constants, the legacy-exporter notice."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*aten::index operator of advanced indexing.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        yield


def _load_processor(name_or_path: str | os.PathLike) -> Any:
    """The processor saved in `name_or_path`, or a `GroupViTProcessor` of its separately saved tokenizer and image
    processor."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    from groupvit.processing_groupvit import GroupViTProcessor

    try:
        processor = AutoProcessor.from_pretrained(name_or_path)
        if (
            getattr(processor, "tokenizer", None) is not None
            and getattr(processor, "image_processor", None) is not None
        ):
            return processor
    except (OSError, ValueError, TypeError) as error:
        logger.info("no processor in %s (%s); loading the tokenizer and image processor", name_or_path, error)
    return GroupViTProcessor(
        image_processor=AutoImageProcessor.from_pretrained(name_or_path),
        tokenizer=AutoTokenizer.from_pretrained(name_or_path),
    )


def _trace_towers(
    model: GroupViTModel,
    tokenizer: Any,
    image_size: tuple[int, int],
    output_names: list[str],
    image_path: Path,
    text_path: Path,
    opset: int,
) -> None:
    """Trace the image and text towers of `model` in eval mode into `image_path` and `text_path`."""
    height, width = image_size
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, model.config.vision_config.num_channels, height, width, generator=generator)
    # a padded batch, so that the graph keeps the padding mask (an all-ones mask could be optimised away)
    tokens = tokenizer(list(_VALIDATION_PROMPTS[:2]), padding=True, truncation=True, return_tensors="pt")
    with eval_mode(model), torch.no_grad(), _quiet_tracing():
        # the exporter restores the wrapper's training flag on every submodule afterwards, so the wrappers are put in
        # eval mode themselves (inside the context, which restores the model's own flag at the end)
        image_tower, text_tower = _ImageTower(model).eval(), _TextTower(model).eval()
        torch.onnx.export(
            image_tower,
            (pixel_values,),
            str(image_path),
            dynamo=False,
            opset_version=opset,
            input_names=["pixel_values"],
            output_names=output_names,
            dynamic_axes={
                "pixel_values": {0: "batch", 2: "height", 3: "width"},
                "image_embeds": {0: "batch"},
                "group_embeds": {0: "batch"},
                # the first stage's map covers the patches; later ones map groups to groups
                **{
                    name: {0: "batch", 2: "num_patches"} if i == 0 else {0: "batch"}
                    for i, name in enumerate(output_names[2:])
                },
            },
        )
        torch.onnx.export(
            text_tower,
            (tokens["input_ids"].long(), tokens["attention_mask"].long()),
            str(text_path),
            dynamo=False,
            opset_version=opset,
            input_names=["input_ids", "attention_mask"],
            output_names=["text_embeds"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "length"},
                "attention_mask": {0: "batch", 1: "length"},
                "text_embeds": {0: "batch"},
            },
        )


def _export_metadata(
    model: GroupViTModel, opset: int, image_size: tuple[int, int], output_names: list[str]
) -> dict[str, Any]:
    """The contents of :data:`METADATA_FILE` (without the parity errors)."""
    from groupvit import __version__

    vision_config = model.config.vision_config
    num_groupings = len(output_names) - 2
    with torch.no_grad():
        logit_scale = float(model.scaled(model.logit_scale.float()))
    return {
        "format_version": _FORMAT_VERSION,
        "image_model": IMAGE_MODEL_FILE,
        "text_model": TEXT_MODEL_FILE,
        "opset": opset,
        "logit_scale": logit_scale,
        "patch_size": list(_pair(vision_config.patch_size)),
        "traced_image_size": list(image_size),
        "config_image_size": list(_pair(vision_config.image_size)),
        "dynamic_image_size": True,
        "num_groupings": num_groupings,
        "num_groups": int(vision_config.num_output_groups[num_groupings - 1]) if num_groupings else None,
        "projection_dim": int(model.config.projection_dim),
        "image_inputs": ["pixel_values"],
        "image_outputs": output_names,
        "text_inputs": ["input_ids", "attention_mask"],
        "text_outputs": ["text_embeds"],
        "exporter": "torch.onnx.export(dynamo=False)",
        "versions": {"torch": torch.__version__, "groupvit": __version__},
    }


def export_onnx(
    model: GroupViTModel | str | os.PathLike,
    output_dir: str | os.PathLike,
    processor: Any = None,
    *,
    opset: int = DEFAULT_OPSET,
    image_size: int | Sequence[int] | None = None,
    validate: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> OnnxExport:
    """Export the image and text towers to ONNX, with the processor and the logit scale, and check them.

    Args:
        model: A `GroupViTModel` (float32), or a local directory / Hub id to load one from.
        output_dir: Directory to write into (created; existing files of the same names are replaced).
        processor: Processor (with `.tokenizer` and `.image_processor`) to save alongside; by default the one saved
            with `model` when it is a path.
        opset: ONNX opset version, at least 17.
        image_size: Height and width (or one int) of the dummy image traced; the graph keeps them dynamic. Default:
            the config's `image_size`.
        validate: Compare ONNX Runtime with PyTorch (see :func:`validate_onnx`) and raise when they differ.
        atol: Absolute tolerance of the validation.
        rtol: Relative tolerance of the validation (`|onnx - torch| <= atol + rtol * |torch|`).

    Returns:
        An :class:`OnnxExport`, with the parity errors when validated.

    Raises:
        ValueError: For an opset below 17, a non-float32 model, an image size that is not a multiple of the patch
            size, a missing processor, or (with `validate`) outputs that differ beyond the tolerance.
    """
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < _MIN_OPSET:
        raise ValueError(f"opset must be an int >= {_MIN_OPSET}, got {opset!r}")
    if isinstance(model, (str, os.PathLike)):
        source = model
        model = GroupViTModel.from_pretrained(source, dtype=torch.float32)
        if processor is None:
            processor = _load_processor(source)
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or getattr(processor, "image_processor", None) is None:
        raise ValueError("export_onnx needs a processor with a tokenizer and an image processor (pass processor=...)")
    if model.dtype != torch.float32:
        raise ValueError(f"export a float32 model (got {model.dtype}); cast it with model.float() first")

    vision_config = model.config.vision_config
    patch = _pair(vision_config.patch_size)
    height, width = _pair(image_size if image_size is not None else vision_config.image_size)
    if height % patch[0] or width % patch[1]:
        raise ValueError(f"image_size {height}x{width} must be a multiple of the patch size {patch[0]}x{patch[1]}")
    num_groupings = sum(1 for tokens in vision_config.num_group_tokens if tokens > 0)
    output_names = image_output_names(num_groupings)

    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    image_path, text_path = directory / IMAGE_MODEL_FILE, directory / TEXT_MODEL_FILE
    _trace_towers(model, tokenizer, (height, width), output_names, image_path, text_path, opset)

    try:
        import onnx

        onnx.checker.check_model(str(image_path))
        onnx.checker.check_model(str(text_path))
    except ImportError:
        logger.info("onnx is not installed; skipping onnx.checker")

    processor.save_pretrained(directory)
    metadata = _export_metadata(model, opset, (height, width), output_names)
    parity = None
    if validate:
        second_size = (
            max(patch[0], (height * 3 // 2) // patch[0] * patch[0]),
            max(patch[1], width // patch[1] * patch[1]),
        )
        parity = validate_onnx(
            model, directory, tokenizer, image_sizes=[(height, width), second_size], atol=atol, rtol=rtol
        )
        metadata["parity"] = {"max_abs_error": parity, "atol": atol, "rtol": rtol}
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    logger.info("exported GroupViT to %s (opset %d)", directory, opset)
    return OnnxExport(directory, image_path, text_path, metadata, parity)


def validate_onnx(
    model: GroupViTModel,
    directory: str | os.PathLike,
    tokenizer: Any,
    *,
    image_sizes: Sequence[tuple[int, int]] = ((224, 224),),
    prompts: Sequence[str] = _VALIDATION_PROMPTS,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> dict[str, float]:
    """Run the exported graphs and the PyTorch model on the same inputs and compare every output.

    The image graph sees a batch of 2 at the first size and a batch of 1 at each other size (to exercise the dynamic
    axes); the text graph sees all `prompts` padded together and the last one alone.

    Args:
        model: The PyTorch model that was exported.
        directory: The export directory.
        tokenizer: The tokenizer that was saved with it.
        image_sizes: `(height, width)` pairs to test, multiples of the patch size.
        prompts: Texts to test.
        atol: Absolute tolerance.
        rtol: Relative tolerance.

    Returns:
        Per output name, the largest absolute difference.

    Raises:
        ValueError: When an output is not within `atol + rtol * |torch|`, naming it and the error.
    """
    ort = _onnxruntime()
    directory = Path(directory)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    image_session = ort.InferenceSession(str(directory / IMAGE_MODEL_FILE), options, ["CPUExecutionProvider"])
    text_session = ort.InferenceSession(str(directory / TEXT_MODEL_FILE), options, ["CPUExecutionProvider"])
    image_tower, text_tower = _ImageTower(model), _TextTower(model)
    names = [output.name for output in image_session.get_outputs()]
    errors: dict[str, float] = {}
    failures: list[str] = []

    def compare(name: str, expected: torch.Tensor, actual: np.ndarray, where: str) -> None:
        expected = expected.float().numpy()
        if expected.shape != actual.shape:
            failures.append(f"{name} at {where}: shape {actual.shape}, expected {expected.shape}")
            return
        error = float(np.abs(actual - expected).max())
        errors[name] = max(errors.get(name, 0.0), error)
        if not np.allclose(actual, expected, atol=atol, rtol=rtol):
            failures.append(f"{name} at {where}: max abs error {error:.3g}")

    generator = torch.Generator().manual_seed(1)
    with eval_mode(model), torch.no_grad():
        for index, (height, width) in enumerate(image_sizes):
            batch = 2 if index == 0 else 1
            pixel_values = torch.randn(
                batch, model.config.vision_config.num_channels, height, width, generator=generator
            )
            actual = image_session.run(names, {"pixel_values": pixel_values.numpy()})
            for name, expected, value in zip(names, image_tower(pixel_values), actual, strict=True):
                compare(name, expected, value, f"{batch}x{height}x{width}")
        for texts in (list(prompts), list(prompts[-1:])):
            tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            input_ids, attention_mask = tokens["input_ids"].long(), tokens["attention_mask"].long()
            (actual,) = text_session.run(
                ["text_embeds"], {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
            )
            compare("text_embeds", text_tower(input_ids, attention_mask), actual, f"{tuple(input_ids.shape)} tokens")
    for name, error in errors.items():
        logger.info("ONNX parity %s: max abs error %.3g", name, error)
    if failures:
        raise ValueError(f"ONNX Runtime and PyTorch differ (atol={atol}, rtol={rtol}): " + "; ".join(failures))
    return errors


# --------------------------------------------------------------------------------------------------------------------
# Runtime
# --------------------------------------------------------------------------------------------------------------------


class OnnxGroupViTSegmenter(GroupViTSegmenter):
    """Zero-shot segmentation from an :func:`export_onnx` directory, on ONNX Runtime (no PyTorch weights needed).


    A :class:`groupvit.segmentation.segmenter.GroupViTSegmenter` whose text and image towers are the two ONNX graphs:
    it overrides only how prompts and image windows are embedded, so image preparation, sliding windows, the protocol
    and the results are the PyTorch segmenter's own code (torch on CPU for that small part).

    Args:
        directory: A directory written by :func:`export_onnx`.
        options: Default :class:`~groupvit.segmentation.protocols.SegmentationOptions`.
        providers: ONNX Runtime execution providers (default: CPU).
        session_options: An `onnxruntime.SessionOptions` for both sessions.
        **option_changes: Changes to `options`, e.g. `mode="whole"`, `background_threshold=0.95`.

    Example:
        ```python
        >>> segmenter = OnnxGroupViTSegmenter("groupvit-onnx/", mode="whole")  # doctest: +SKIP
        >>> result = segmenter.segment("cat.jpg", ["cat", "sofa"], background_threshold=0.9)[0]  # doctest: +SKIP
        >>> result.label_map.shape, result.labels  # doctest: +SKIP
        (torch.Size([480, 640]), ['cat', 'sofa', 'background'])

        ```
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        options: SegmentationOptions | None = None,
        providers: Sequence[str] | None = None,
        session_options: Any = None,
        **option_changes: Any,
    ) -> None:
        ort = _onnxruntime()
        self.directory = Path(directory)
        metadata_path = self.directory / METADATA_FILE
        if not metadata_path.is_file():
            raise FileNotFoundError(f"{metadata_path} not found: {directory} is not a groupvit ONNX export")
        self.metadata: dict[str, Any] = json.loads(metadata_path.read_text(encoding="utf-8"))
        if self.metadata.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported export format {self.metadata.get('format_version')!r} in {metadata_path}")
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        self.image_session = ort.InferenceSession(
            str(self.directory / self.metadata["image_model"]), session_options, providers=providers
        )
        self.text_session = ort.InferenceSession(
            str(self.directory / self.metadata["text_model"]), session_options, providers=providers
        )
        processor = _load_processor(self.directory)
        self.tokenizer, self.image_processor = processor.tokenizer, processor.image_processor
        self._patch_size: tuple[int, int] = _pair(self.metadata["patch_size"])
        # float32, as the PyTorch segmenter's `model.scaled(model.logit_scale.float())`
        self.logit_scale = torch.tensor(self.metadata["logit_scale"], dtype=torch.float32)
        self.image_outputs: list[str] = list(self.metadata["image_outputs"])
        self.options = (options or SegmentationOptions()).replace(**option_changes)

    # ---- the graphs ------------------------------------------------------------------------------------------------

    def run_image_model(self, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
        """Run the image graph on `(batch, 3, h, w)` float32 pixel values (sides multiples of the patch size).

        Returns:
            `image_embeds` `(batch, proj)`, `group_embeds` `(batch, G, proj)` (both projected, not normalised) and
            `grouping_1` ... `grouping_k` (the soft grouping maps, `(batch, G_k, N_k)`).
        """
        values = np.ascontiguousarray(pixel_values, dtype=np.float32)
        outputs = self.image_session.run(self.image_outputs, {"pixel_values": values})
        return dict(zip(self.image_outputs, outputs, strict=True))

    def run_text_model(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """Run the text graph: `(batch, length)` token ids (and mask) -> projected, not normalised `(batch, proj)`."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask, dtype=np.int64)
        return self.text_session.run(["text_embeds"], {"input_ids": input_ids, "attention_mask": mask})[0]

    # ---- the hooks of GroupViTSegmenter ------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def patch_size(self) -> tuple[int, int]:
        return self._patch_size

    def _inference_context(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def _embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="np")
        return torch.from_numpy(self.run_text_model(tokens["input_ids"], tokens.get("attention_mask")))

    def _embed_windows(
        self, pixel_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
        outputs = {name: torch.from_numpy(value) for name, value in self.run_image_model(pixel_values.numpy()).items()}
        groupings = tuple(outputs[name] for name in self.image_outputs[2:])
        return outputs["group_embeds"], outputs["image_embeds"], groupings, self.logit_scale

    def __repr__(self) -> str:
        return f"{type(self).__name__}(directory={str(self.directory)!r}, options={self.options})"
