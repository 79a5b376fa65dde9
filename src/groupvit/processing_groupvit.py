"""Processor for GroupViT: CLIP image preprocessing plus CLIP's byte-level BPE tokenizer.

GroupViT (Xu et al., CVPR 2022) reuses CLIP's input pipeline unchanged: images are resized so that their shortest
side is 224 px (bicubic), center-cropped to 224x224, rescaled to ``[0, 1]`` and normalised with the OpenAI CLIP
mean/std; captions are lower-cased, byte-level BPE tokenised with CLIP's 49,408-token vocabulary, wrapped in
``<|startoftext|>`` / ``<|endoftext|>`` and limited to 77 tokens. This module wraps transformers' own
``CLIPImageProcessor`` and ``CLIPTokenizer`` in a :class:`~transformers.ProcessorMixin` subclass, and ships the
CLIP vocabulary inside the package (``groupvit/resources/clip_tokenizer``) so that a processor can be built
without any network access (:meth:`GroupViTProcessor.from_bundled`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import transformers
from transformers import BatchFeature, CLIPTokenizer, ProcessorMixin
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_transforms import convert_to_rgb
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.utils import is_torchvision_available, logging

__all__ = [
    "CLIP_BOS_TOKEN",
    "CLIP_EOS_TOKEN",
    "CLIP_IMAGE_MEAN",
    "CLIP_IMAGE_STD",
    "CLIP_MAX_LENGTH",
    "CLIP_VOCAB_SIZE",
    "GroupViTProcessor",
    "bundled_tokenizer",
    "bundled_tokenizer_files",
    "to_rgb_image",
]

logger = logging.get_logger(__name__)

CLIP_MAX_LENGTH = 77
"""CLIP's text context length (tokens, including ``<|startoftext|>`` and ``<|endoftext|>``)."""
CLIP_VOCAB_SIZE = 49408
"""Size of CLIP's BPE vocabulary: 256 bytes + 256 bytes with ``</w>`` + 48,894 merges + 2 special tokens."""
CLIP_BOS_TOKEN = "<|startoftext|>"
CLIP_EOS_TOKEN = "<|endoftext|>"
CLIP_IMAGE_MEAN: tuple[float, float, float] = tuple(OPENAI_CLIP_MEAN)
CLIP_IMAGE_STD: tuple[float, float, float] = tuple(OPENAI_CLIP_STD)

_RESOURCE_PACKAGE = "groupvit"
_RESOURCE_DIR = ("resources", "clip_tokenizer")
_IMAGE_BACKENDS = ("pil", "torchvision")


def bundled_tokenizer_files() -> dict[str, str]:
    """Return the contents of the CLIP vocabulary files shipped with the package.

    The files are read through :mod:`importlib.resources`, so this also works when the package is installed as a
    zip archive.

    Returns:
        A dict with keys ``"vocab.json"`` and ``"merges.txt"`` mapping to the files' text.

    Raises:
        FileNotFoundError: If the package data is missing (e.g. an install that dropped ``package_data``).
    """
    root = resources.files(_RESOURCE_PACKAGE).joinpath(*_RESOURCE_DIR)
    files = {}
    for name in ("vocab.json", "merges.txt"):
        entry = root.joinpath(name)
        if not entry.is_file():
            raise FileNotFoundError(
                f"bundled CLIP tokenizer file {name!r} not found in {root}; the package data was not installed "
                "(re-create it with scripts/build_clip_vocab.py)"
            )
        files[name] = entry.read_text(encoding="utf-8")
    return files


def bundled_tokenizer(model_max_length: int = CLIP_MAX_LENGTH, **kwargs: Any) -> CLIPTokenizer:
    """Build CLIP's BPE tokenizer from the vocabulary shipped with the package (no network access).

    The tokenizer matches the Hub GroupViT/CLIP tokenizers: lower-casing, CLIP's pre-tokenisation regex, byte-level
    BPE with the ``</w>`` end-of-word suffix, ``<|startoftext|>`` (49406) / ``<|endoftext|>`` (49407) around each
    sequence and ``<|endoftext|>`` as padding and unknown token.

    Args:
        model_max_length: Maximum sequence length used by ``truncation=True`` / ``padding="max_length"``.
        **kwargs: Extra keyword arguments for :class:`transformers.CLIPTokenizer` (e.g. ``padding_side``).

    Returns:
        A fresh :class:`transformers.CLIPTokenizer` (the ``tokenizers``-backed implementation).

    Example:
        >>> tok = bundled_tokenizer()
        >>> tok("a photo of a cat").input_ids
        [49406, 320, 1125, 539, 320, 2368, 49407]
    """
    files = bundled_tokenizer_files()
    vocab = json.loads(files["vocab.json"])
    lines = files["merges.txt"].split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    # tokenizers>=0.21 only accepts merges as pairs (a list of "a b" strings is rejected).
    merges = [tuple(line.split(" ")) for line in lines if line]
    kwargs.setdefault("bos_token", CLIP_BOS_TOKEN)
    kwargs.setdefault("eos_token", CLIP_EOS_TOKEN)
    kwargs.setdefault("unk_token", CLIP_EOS_TOKEN)
    kwargs.setdefault("pad_token", CLIP_EOS_TOKEN)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length, **kwargs)


def _clip_image_processor(image_size: int = 224, image_backend: str = "pil", **kwargs: Any) -> BaseImageProcessor:
    """Build transformers' CLIP image processor for ``image_size`` with the requested backend."""
    defaults: dict[str, Any] = {
        "size": {"shortest_edge": image_size},
        "crop_size": {"height": image_size, "width": image_size},
    }
    defaults.update(kwargs)
    return _image_processor_class("CLIPImageProcessor", image_backend)(**defaults)


def _image_processor_class(base_name: str, image_backend: str) -> type[BaseImageProcessor]:
    """Resolve ``base_name`` (e.g. ``CLIPImageProcessor``) to its class for ``image_backend``."""
    if image_backend not in _IMAGE_BACKENDS:
        raise ValueError(f"image_backend must be one of {_IMAGE_BACKENDS}, got {image_backend!r}")
    if image_backend == "pil":
        name = base_name + "Pil"
    elif is_torchvision_available():
        name = base_name
    else:
        raise ValueError("image_backend='torchvision' requested but torchvision is not installed")
    cls = getattr(transformers, name, None)
    if cls is None:
        raise ValueError(f"transformers has no image processor class {name!r}")
    return cls


def _image_backend_of(image_processor: Any) -> str | None:
    """Return ``"pil"`` / ``"torchvision"`` for transformers' backend image processors, else ``None``."""
    backend = getattr(image_processor, "backend", None)
    return backend if backend in _IMAGE_BACKENDS else None


def _with_image_backend(image_processor: BaseImageProcessor, image_backend: str) -> BaseImageProcessor:
    """Return ``image_processor`` re-instantiated with ``image_backend`` (same settings), if it differs."""
    current = _image_backend_of(image_processor)
    if current is None or current == image_backend:
        return image_processor
    if image_backend == "torchvision" and not is_torchvision_available():
        logger.warning("processor was saved with the torchvision image backend, which is not installed; using PIL")
        return image_processor
    base_name = type(image_processor).__name__.removesuffix("Pil")
    try:
        cls = _image_processor_class(base_name, image_backend)
    except ValueError:
        logger.warning(f"cannot switch {type(image_processor).__name__} to the {image_backend!r} image backend")
        return image_processor
    return cls.from_dict(image_processor.to_dict())


def _describe(value: Any) -> str:
    """Short ``repr`` of a user value for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _array_to_pil(array: np.ndarray, source: str) -> PIL.Image.Image:
    """Convert an ``HxW``, ``HxWxC`` or ``CxHxW`` array (C in 1, 3, 4) to an RGB PIL image.

    ``uint16`` arrays are 16-bit images (``[0, 65535]``, scaled to 8 bits); other integer arrays must hold values in
    ``[0, 255]``; floating-point arrays are read as ``[0, 1]`` when their maximum is at most 1, otherwise as
    ``[0, 255]``. RGBA arrays lose their alpha channel.
    """
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(
            f"image {source} must have shape HxW, HxWxC or CxHxW (C in 1, 3, 4); got shape {tuple(array.shape)}"
        )
    if array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image {source} must have 1, 3 or 4 channels first or last; got shape {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image {source} is empty: shape {tuple(array.shape)}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):  # bool is neither
        raise ValueError(f"image {source} must have an integer or floating-point dtype, got {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"image {source} contains NaN or infinite values")
        lo, hi = float(array.min()), float(array.max())
        if lo < 0.0 or hi > 255.0:
            raise ValueError(
                f"floating-point image {source} must hold values in [0, 1] or [0, 255], got range [{lo:g}, {hi:g}] "
                "(pass raw, un-normalised pixels)"
            )
        scale = 255.0 if hi <= 1.0 else 1.0
        array = np.clip(np.rint(array.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    elif array.dtype == np.uint16:
        array = _sixteen_to_eight_bits(array)
    elif array.dtype != np.uint8:
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"integer image {source} must hold values in [0, 255], got range [{lo}, {hi}]")
        array = array.astype(np.uint8)
    channels = array.shape[-1]
    if channels == 1:
        array = np.repeat(array, 3, axis=-1)
    elif channels == 4:
        array = array[..., :3]
    return PIL.Image.fromarray(np.ascontiguousarray(array), mode="RGB")


IMAGE_URL_TIMEOUT = 10.0
"""Seconds :func:`to_rgb_image` waits for an image URL by default."""
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _sixteen_to_eight_bits(array: np.ndarray) -> np.ndarray:
    """``[0, 65535]`` integers to ``uint8`` (``round(v / 257)``: 0 -> 0, 65535 -> 255, linear in between)."""
    return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _fetch(url: str, source: str, timeout: float | None) -> PIL.Image.Image:
    """Download an image URL (redirects followed), failing after ``timeout`` seconds without an answer."""
    import io

    import httpx

    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
    except httpx.TimeoutException as error:
        raise ValueError(f"image {source} {url}: no answer within {timeout} s ({type(error).__name__})") from error
    except httpx.HTTPError as error:
        raise ValueError(f"image {source} {url}: download failed: {error}") from error
    return PIL.Image.open(io.BytesIO(response.content))


def _open(location: str, source: str, timeout: float | None) -> PIL.Image.Image:
    """Open a file or URL lazily (header only: pixels are decoded later)."""
    try:
        if location.startswith(("http://", "https://")):
            return _fetch(location, source, timeout)
        return PIL.Image.open(location)
    except (OSError, PIL.Image.DecompressionBombError) as error:
        raise ValueError(f"image {source} {location} cannot be read: {error}") from error


def to_rgb_image(
    image: Any, index: int | None = None, timeout: float | None = IMAGE_URL_TIMEOUT, max_pixels: int | None = None
) -> PIL.Image.Image:
    """Validate one image and convert it to a non-empty RGB PIL image: the package's one image-to-RGB routine.

    Args:
        image: A file path or http(s) URL (EXIF orientation applied), a PIL image (alpha composited on white, as
            transformers' `do_convert_rgb`; 16-bit modes `"I;16"`/`"I"` scaled from `[0, 65535]`), or an `HxW`,
            `HxWxC` or `CxHxW` numpy array / torch tensor (C in 1, 3, 4; uint8, uint16 in `[0, 65535]`, other
            integers in `[0, 255]`, floats in `[0, 1]` or `[0, 255]`).
        index: Position of the image in a batch, for error messages.
        timeout: Seconds to wait for a URL to answer (None: forever).
        max_pixels: Refuse a file, URL or PIL image of more pixels, checked on the header before the pixels are
            decoded (PIL's decompression-bomb limit, `PIL.Image.MAX_IMAGE_PIXELS`, applies as well).

    Raises:
        ValueError: naming the offending value, for anything else, a missing, corrupt or truncated file, a URL that
            fails or does not answer within `timeout`, an image over `max_pixels` or an empty image.

    Example:
        ```python
        >>> to_rgb_image(np.zeros((2, 3), dtype=np.uint8)).size, to_rgb_image(PIL.Image.new("RGBA", (4, 1))).mode
        ((3, 2), 'RGB')

        ```
    """
    source = f"{'' if index is None else f'#{index} '}({type(image).__name__})"
    location = None
    if isinstance(image, (str, os.PathLike)):
        location = os.fspath(image)
        if isinstance(location, str) and (location.startswith(("http://", "https://")) or os.path.isfile(location)):
            image = _open(location, source, timeout)
        else:
            raise ValueError(
                f"image {source} is a string/path but not an existing file or http(s) URL: {_describe(image)}. "
                "Images must be PIL images, numpy arrays or torch tensors; pass captions with `text=`."
            )
    if isinstance(image, PIL.Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"image {source} is empty: size {image.size}")
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise ValueError(
                f"image {source} is {image.width}x{image.height} = {image.width * image.height} pixels, over the "
                f"limit of {max_pixels}"
            )
        if location is not None:
            try:
                image = PIL.ImageOps.exif_transpose(image)  # decodes the pixels
            except (OSError, SyntaxError, PIL.Image.DecompressionBombError) as error:
                raise ValueError(f"image {source} {location} cannot be decoded: {error}") from error
        if image.mode in _SIXTEEN_BIT_MODES:
            # PIL's own convert("RGB") clips these to [0, 255]: a 16-bit image would come out nearly white
            values = np.asarray(image)
            if values.min() < 0 or values.max() > 65535:
                raise ValueError(
                    f"image {source} of mode {image.mode!r} must hold 16-bit values in [0, 65535], got range "
                    f"[{values.min()}, {values.max()}]"
                )
            return PIL.Image.fromarray(_sixteen_to_eight_bits(values)).convert("RGB")
        # Same conversion as transformers' `do_convert_rgb` (alpha composited on white).
        return image if image.mode == "RGB" else convert_to_rgb(image)
    if isinstance(image, torch.Tensor):
        return _array_to_pil(image.detach().cpu().numpy(), source)
    if isinstance(image, np.ndarray):
        return _array_to_pil(image, source)
    raise ValueError(
        f"image {source} has unsupported type {type(image).__module__}.{type(image).__qualname__}: "
        f"{_describe(image)}. Expected a PIL.Image.Image, numpy.ndarray or torch.Tensor."
    )


def _prepare_images(images: Any) -> list[PIL.Image.Image]:
    """Validate ``images`` (one image, a batch array/tensor or a sequence) into a list of RGB PIL images."""
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) == 0:
        raise ValueError("`images` is empty; pass at least one image or leave `images=None`")
    return [to_rgb_image(image, i) for i, image in enumerate(images)]


def _prepare_text(text: Any) -> str | list[str]:
    """Validate ``text``: a string or a non-empty list/tuple of strings."""
    if isinstance(text, str):
        return text
    if not isinstance(text, (list, tuple)):
        raise ValueError(f"`text` must be a string or a list of strings, got {type(text).__name__}: {_describe(text)}")
    if len(text) == 0:
        raise ValueError("`text` is an empty list; pass at least one caption or leave `text=None`")
    for i, caption in enumerate(text):
        if not isinstance(caption, str):
            raise ValueError(f"caption #{i} must be a string, got {type(caption).__name__}: {_describe(caption)}")
    return list(text)


class GroupViTProcessor(ProcessorMixin):
    r"""GroupViT processor: a CLIP image processor and CLIP's BPE tokenizer behind one ``__call__``.

    Images go through transformers' ``CLIPImageProcessor`` (shortest side resized to 224 with bicubic
    interpolation, 224x224 center crop, rescale to ``[0, 1]``, OpenAI CLIP mean/std normalisation); text goes through
    ``CLIPTokenizer`` with ``<|endoftext|>`` padding and truncation to 77 tokens by default. PIL images of any mode
    (converted to RGB), ``HxWx3``/``CxHxW`` numpy arrays and torch tensors (uint8 in ``[0, 255]`` or float in
    ``[0, 1]``), 4-D batches and image file paths are accepted.

    :meth:`from_bundled` builds the processor from the vocabulary shipped in the package, without network access;
    ``save_pretrained`` / ``from_pretrained`` round-trip through a local directory (``processor_config.json``,
    ``tokenizer.json``, ``tokenizer_config.json``), recording ``processor_class: GroupViTProcessor`` so that
    ``AutoProcessor`` finds the class once it is registered.

    Args:
        image_processor: A transformers image processor; defaults to a 224-px ``CLIPImageProcessor`` (PIL backend).
        tokenizer: A CLIP tokenizer; defaults to :func:`bundled_tokenizer`.
        image_backend: ``"pil"`` or ``"torchvision"``; if given, ``image_processor`` is converted to that backend.
            Defaults to the backend of ``image_processor``. It is saved with the processor so that a reload uses the
            same backend (PIL and torchvision bicubic resizing differ slightly).

    Example:
        >>> import PIL.Image
        >>> processor = GroupViTProcessor.from_bundled()
        >>> image = PIL.Image.new("RGB", (320, 240), (255, 0, 0))
        >>> batch = processor(
        ...     text=["a photo of a cat", "a photo of a dog"], images=image, return_tensors="pt", padding=True
        ... )
        >>> batch["input_ids"].tolist()[0]
        [49406, 320, 1125, 539, 320, 2368, 49407]
        >>> tuple(batch["pixel_values"].shape)
        (1, 3, 224, 224)
    """

    # Lowest-priority defaults of ProcessorMixin._merge_kwargs: truncate captions to the tokenizer's
    # model_max_length (77) unless the caller passes `truncation=`.
    text_kwargs = {"truncation": True}

    def __init__(
        self,
        image_processor: BaseImageProcessor | None = None,
        tokenizer: CLIPTokenizer | None = None,
        image_backend: str | None = None,
        **kwargs: Any,
    ) -> None:
        if image_backend is not None and image_backend not in _IMAGE_BACKENDS:
            raise ValueError(f"image_backend must be one of {_IMAGE_BACKENDS}, got {image_backend!r}")
        if image_processor is None:
            image_processor = _clip_image_processor(image_backend=image_backend or "pil")
        elif image_backend is not None:
            image_processor = _with_image_backend(image_processor, image_backend)
        if tokenizer is None:
            tokenizer = bundled_tokenizer()
        self.image_backend = _image_backend_of(image_processor)
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_bundled(
        cls,
        image_size: int = 224,
        max_length: int = CLIP_MAX_LENGTH,
        image_backend: str = "pil",
        **image_processor_kwargs: Any,
    ) -> GroupViTProcessor:
        """Build the processor from the CLIP vocabulary shipped with the package (no network access).

        Args:
            image_size: Shortest-side resize target and square center-crop size, in pixels.
            max_length: Tokenizer ``model_max_length`` (truncation / ``padding="max_length"`` length).
            image_backend: ``"pil"`` (default; PIL bicubic resize as in the original GroupViT/CLIP pipelines) or
                ``"torchvision"`` (requires torchvision).
            **image_processor_kwargs: Overrides for ``CLIPImageProcessor`` (e.g. ``do_center_crop=False``,
                ``image_mean=...``).

        Returns:
            A new :class:`GroupViTProcessor`.
        """
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
            raise ValueError(f"image_size must be a positive int, got {_describe(image_size)}")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ValueError(f"max_length must be an int >= 2, got {_describe(max_length)}")
        image_processor = _clip_image_processor(image_size, image_backend, **image_processor_kwargs)
        return cls(image_processor=image_processor, tokenizer=bundled_tokenizer(max_length))

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        videos: Any = None,
        audio: Any = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Tokenise captions and/or preprocess images.

        Args:
            images: One image or a list of images (PIL image, ``HxWxC``/``CxHxW`` numpy array or torch tensor, or an
                image file path), or a 4-D batch array/tensor.
            text: One caption or a non-empty list of captions.
            videos: Not supported; must be ``None``.
            audio: Not supported; must be ``None``.
            **kwargs: Tokenizer / image-processor options, e.g. ``return_tensors="pt"``, ``padding=True`` or
                ``"max_length"``, ``truncation=False``, ``max_length=...``.

        Returns:
            A :class:`~transformers.BatchFeature` with ``input_ids`` and ``attention_mask`` (when ``text`` is given)
            and ``pixel_values`` of shape ``(num_images, 3, H, W)`` (when ``images`` is given).

        Raises:
            ValueError: If neither ``text`` nor ``images`` is given, ``text`` is empty or holds a non-string, or an
                image has an unsupported type, shape, dtype or value range.
        """
        if videos is not None or audio is not None:
            raise ValueError(f"{type(self).__name__} only processes `text` and `images`")
        if text is None and images is None:
            raise ValueError(f"{type(self).__name__} needs `text`, `images` or both; got neither")
        if text is not None:
            text = _prepare_text(text)
        if images is not None:
            images = _prepare_images(images)
        return super().__call__(images=images, text=text, **kwargs)
