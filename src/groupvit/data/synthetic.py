"""Deterministic synthetic image–caption–mask data for tests, demos and small-scale training.

Two presets are registered (see :func:`get_spec` / :func:`list_specs`):

* ``"shapes"`` – coloured geometric shapes (circle, square, triangle, cross, star, diamond, heart) in one of eight
  colours on a textured grey background, 1–3 objects per image, captions such as ``"a red circle and a blue
  triangle"``. Classes are the *shapes*; colours are nuisance words that vary independently of the class, which makes
  this the harder benchmark for text-supervised grouping.
* ``"objects"`` – eight categories that behave like real object classes: each has a characteristic appearance that
  combines shape, colour palette and texture (``sun``: yellow/orange disc with a radial gradient and optional rays;
  ``leaf``: green pointed ellipse with vein lines; ``brick``: red-brown rectangle with a brick-and-mortar pattern;
  ``ball``: shaded striped disc; ``fish``: blue-grey body with tail and eye; ``flower``: pink/purple/white petals
  around a yellow centre; ``tree``: dark-green conifer or round canopy on a brown trunk; ``mushroom``: red/brown cap
  with white spots on a beige stem). Objects vary in size, aspect, rotation and hue and are placed (1–3 per image)
  on cluttered backgrounds (smooth colour noise, stripes, gradients, plus faint random blobs and scribbles that are
  *not* any category). Captions come from many templates and mention the categories among other words
  (``"a photo of a sun and a leaf on a messy table."``, ``"there is a fish next to a ball."``).

Determinism: sample ``i`` depends only on ``(seed, i)`` through ``numpy.random.default_rng([*seed_words, i])``, so
the same seed yields byte-identical images, masks and captions regardless of generation order or batching.

Splits (:func:`make_split`): ``train``, ``validation`` and ``test`` use different seed streams
(``(seed, 0)``, ``(seed, 1)`` and ``(seed, 2)``, see :func:`split_seed`). ``train`` and ``validation`` are drawn
from the same ("standard") distribution; ``test`` uses the ``"shifted"`` variant, a controlled distribution shift:

* a wider / shifted object scale range (``spec.test_scale_range`` instead of ``spec.scale_range``);
* held-out background families (``spec.test_backgrounds``: e.g. checkerboard, plaid and wood grain for ``objects``,
  a woven grey texture for ``shapes``) that never appear in train/validation;
* a different layout prior: more objects per image (``spec.test_count_weights``).

Masks are ``uint8`` arrays of shape ``(H, W)`` with ``0`` = background and ``1..C`` = class index, in the order of
``spec.class_names``. Objects never occlude more than ``spec.max_occlusion`` of an earlier object, so every class
named in a caption has mask pixels and vice versa.

Recoloured splits (``make_split(..., recolor=...)``), the objectness probe: the same images, masks and captions,
with every object's colours changed after drawing (background pixels are untouched, byte for byte):

* ``"swap"`` – each category takes another category's palette, by a fixed derangement (``spec.palette_swap``; for
  ``objects``: sun <-> fish, leaf <-> brick, tree <-> mushroom, ball <-> flower). Every object pixel's hue is rotated
  by the difference of the two categories' reference hues and its saturation and value are scaled by their ratios
  (``spec.palettes``), so a yellow sun turns blue-grey like a fish and a green leaf red-brown like a brick.
* ``"random"`` – every object's hue is rotated by a random quarter to three-quarter turn (saturation and value kept),
  drawn from its own stream ``(seed, index, RECOLOR_STREAM)``, so the standard draws are unchanged.
* ``"swap_hue"`` / ``"swap_sv"`` – the two halves of ``"swap"``: only its hue rotation, or only its saturation and
  value scaling (applied one after the other they give ``"swap"``). They tell which colour cue a model reads.
* ``"jitter"`` – every object gets a random hue (rotated by up to a full turn), and its saturation and value scaled by
  ``exp(U(-0.8, 0.8))`` and ``exp(U(-0.6, 0.6))``, from the same stream as ``"random"``. A training augmentation
  (``data.synthetic_recolor`` with ``data.synthetic_recolor_share``): colour stops naming the category, so shape has
  to; ``recolor_share`` picks which samples of a split are recoloured (stream ``(seed, index,
  RECOLOR_SHARE_STREAM)``).

A model that learned the categories' shapes keeps segmenting them; one that learned colours does not.

Writers: :func:`write_webdataset_shards` (img2dataset-layout tar shards with byte-deterministic headers),
:func:`to_hf_dataset` (an in-memory :class:`datasets.Dataset`) and :func:`save_imagefolder` (a folder loadable with
``datasets.load_dataset("imagefolder", data_dir=...)``).
"""

from __future__ import annotations

import colorsys
import io
import json
import logging
import math
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # pragma: no cover
    import datasets

logger = logging.getLogger(__name__)

__all__ = [
    "RECOLORS",
    "RECOLOR_SHARE_STREAM",
    "RECOLOR_STREAM",
    "SPLITS",
    "VARIANTS",
    "SyntheticSample",
    "SyntheticSpec",
    "SyntheticSplit",
    "colorize_mask",
    "generate_sample",
    "generate_samples",
    "get_spec",
    "list_specs",
    "make_split",
    "recolor_objects",
    "register_spec",
    "save_imagefolder",
    "split_seed",
    "to_hf_dataset",
    "write_webdataset_shards",
]

SeedLike = int | Sequence[int]
Split = Literal["train", "validation", "test"]
Variant = Literal["standard", "shifted"]
Recolor = Literal["swap", "random", "swap_hue", "swap_sv", "jitter"]

SPLITS: tuple[str, ...] = get_args(Split)
VARIANTS: tuple[str, ...] = get_args(Variant)
_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}
_SPLIT_VARIANTS = {"train": "standard", "validation": "standard", "test": "shifted"}

RECOLORS: tuple[str, ...] = get_args(Recolor)
RECOLOR_STREAM = 7919
"""Last seed word of the random stream of ``recolor="random"`` and ``"jitter"`` (after ``(seed..., index)``)."""
RECOLOR_SHARE_STREAM = 104729
"""Last seed word of the stream that picks a split's recoloured samples when ``recolor_share < 1``."""

# Fixed tar header fields so that shards are byte-identical across runs and machines.
_TAR_MTIME = 0
_TAR_MODE = 0o644


# --------------------------------------------------------------------------------------------------------------------
# Specs and registry
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticSpec:
    """Description of a synthetic data distribution (a preset).

    Attributes:
        name: Registry name of the preset.
        renderer: Which family of object drawers to use: ``"shapes"`` or ``"objects"``.
        class_names: Category names; mask value ``k`` (1-based) is ``class_names[k - 1]``.
        description: One-line human description.
        min_objects: Minimum number of objects (distinct classes) per image.
        max_objects: Maximum number of objects (distinct classes) per image.
        count_weights: Probability of each object count ``min_objects..max_objects`` (standard variant).
        test_count_weights: Same for the shifted (test) variant.
        scale_range: Object radius as a fraction of the image size (standard variant).
        test_scale_range: Object radius range for the shifted (test) variant.
        backgrounds: Background families used by the standard variant.
        test_backgrounds: Held-out background families used by the shifted variant.
        colors: ``(name, (r, g, b))`` colours for the ``"shapes"`` renderer (ignored by ``"objects"``).
        templates: Caption templates with an ``{objects}`` (or ``{Objects}``, capitalised) placeholder.
        pair_templates: Extra templates for exactly two objects with ``{a}``/``{A}`` and ``{b}`` placeholders.
        size_adjective_prob: Probability of prefixing "small"/"big" when the object is in the bottom/top quarter of
            the scale range.
        max_occlusion: Maximum fraction of an already placed object that a later object may cover.
        max_attempts: Placement attempts per object before it is dropped (rare; it is then absent from image,
            mask and caption alike).
        palettes: ``(class name, (hue, saturation, value))`` reference colour of each class in ``[0, 1]``, used by
            ``recolor="swap"``.
        palette_swap: ``(class name, class name)`` pairs: a derangement of ``class_names`` (every class maps to
            another one); under ``recolor="swap"`` a class takes the palette of the class it maps to.
    """

    name: str
    renderer: str
    class_names: tuple[str, ...]
    description: str = ""
    min_objects: int = 1
    max_objects: int = 3
    count_weights: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)
    test_count_weights: tuple[float, ...] = (0.2, 0.3, 0.5)
    scale_range: tuple[float, float] = (0.12, 0.22)
    test_scale_range: tuple[float, float] = (0.10, 0.26)
    backgrounds: tuple[str, ...] = ("grey_noise",)
    test_backgrounds: tuple[str, ...] = ("grey_weave",)
    colors: tuple[tuple[str, tuple[int, int, int]], ...] = ()
    templates: tuple[str, ...] = ("{objects}",)
    pair_templates: tuple[str, ...] = ()
    size_adjective_prob: float = 0.0
    max_occlusion: float = 0.25
    max_attempts: int = 25
    palettes: tuple[tuple[str, tuple[float, float, float]], ...] = ()
    palette_swap: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.renderer not in _DRAWERS:
            raise ValueError(f"Unknown renderer {self.renderer!r}; expected one of {sorted(_DRAWERS)}")
        unknown = [c for c in self.class_names if c not in _DRAWERS[self.renderer]]
        if unknown:
            raise ValueError(f"Renderer {self.renderer!r} cannot draw classes {unknown}")
        if not 1 <= self.min_objects <= self.max_objects <= len(self.class_names):
            raise ValueError("Need 1 <= min_objects <= max_objects <= number of classes")
        n_counts = self.max_objects - self.min_objects + 1
        if len(self.count_weights) != n_counts or len(self.test_count_weights) != n_counts:
            raise ValueError(f"count_weights/test_count_weights must have {n_counts} entries")
        for bg in (*self.backgrounds, *self.test_backgrounds):
            if bg not in _BACKGROUNDS:
                raise ValueError(f"Unknown background {bg!r}; expected one of {sorted(_BACKGROUNDS)}")
        if self.renderer == "shapes" and not self.colors:
            raise ValueError("The 'shapes' renderer needs at least one colour")
        if self.palette_swap:
            sources, targets = [a for a, _ in self.palette_swap], [b for _, b in self.palette_swap]
            if sorted(sources) != sorted(self.class_names) or sorted(targets) != sorted(self.class_names):
                raise ValueError(f"palette_swap {self.palette_swap} must map every class of {self.class_names} once")
            fixed = [a for a, b in self.palette_swap if a == b]
            if fixed:
                raise ValueError(f"palette_swap must be a derangement, but {fixed} map to themselves")
            missing = sorted(set(self.class_names) - {name for name, _ in self.palettes})
            if missing:
                raise ValueError(f"palette_swap needs a reference colour in palettes for {missing}")

    @property
    def num_classes(self) -> int:
        """Number of foreground classes ``C`` (mask values are ``0..C``)."""
        return len(self.class_names)

    def class_index(self, name: str) -> int:
        """Return the 1-based mask value of class ``name``."""
        return self.class_names.index(name) + 1


_REGISTRY: dict[str, SyntheticSpec] = {}


def register_spec(spec: SyntheticSpec, overwrite: bool = False) -> SyntheticSpec:
    """Add ``spec`` to the preset registry under ``spec.name``.

    Args:
        spec: The spec to register.
        overwrite: Replace an existing spec with the same name instead of raising.

    Returns:
        The registered spec.

    Raises:
        ValueError: If the name is taken and ``overwrite`` is false.
    """
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(f"Synthetic preset {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_specs() -> list[str]:
    """Names of all registered presets, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str | SyntheticSpec) -> SyntheticSpec:
    """Look up a preset by name (a :class:`SyntheticSpec` is returned unchanged).

    Raises:
        ValueError: If no preset named ``name`` exists; the message names it and lists the available presets.
    """
    if isinstance(name, SyntheticSpec):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown synthetic preset {name!r}; available presets: {list_specs()}") from None


# --------------------------------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class SyntheticSample:
    """One generated example.

    Attributes:
        image: RGB PIL image of size ``(S, S)``.
        caption: Caption naming every object present (and only those).
        mask: ``uint8`` array ``(S, S)``; 0 = background, ``k`` = ``spec.class_names[k - 1]``.
        classes: Names of the classes present, in order of mention in the caption.
        index: Sample index within its seed stream.
        attributes: Per-object extra words used in the caption (e.g. colour for ``shapes``), aligned with
            ``classes``.
    """

    image: Image.Image
    caption: str
    mask: np.ndarray
    classes: list[str]
    index: int = 0
    attributes: list[str] = field(default_factory=list)

    @property
    def mask_image(self) -> Image.Image:
        """The mask as a mode ``"L"`` PIL image (pixel value = class index)."""
        return Image.fromarray(self.mask)


def split_seed(seed: int, split: str) -> tuple[int, int]:
    """Seed words used by :func:`make_split` for ``split`` (``(seed, 0|1|2)`` for train/validation/test)."""
    if split not in _SPLIT_IDS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}")
    return (int(seed), _SPLIT_IDS[split])


def _seed_words(seed: SeedLike) -> list[int]:
    if isinstance(seed, int | np.integer):
        return [int(seed)]
    words = [int(s) for s in seed]
    if not words:
        raise ValueError("seed must be an int or a non-empty sequence of ints")
    return words


def generate_sample(
    spec: str | SyntheticSpec,
    index: int,
    seed: SeedLike = 0,
    image_size: int = 64,
    variant: Variant = "standard",
    recolor: Recolor | None = None,
) -> SyntheticSample:
    """Generate sample ``index`` of the stream ``seed`` for a preset.

    The result depends only on ``(spec, seed, index, image_size, variant, recolor)``: the random generator is
    ``numpy.random.default_rng([*seed, index])`` (and ``[*seed, index, RECOLOR_STREAM]`` for ``recolor="random"``).

    Args:
        spec: Preset name or spec.
        index: Non-negative sample index.
        seed: An int or a sequence of ints (e.g. :func:`split_seed`).
        image_size: Side length ``S`` of the square image in pixels (>= 16).
        variant: ``"standard"`` (train/validation distribution) or ``"shifted"`` (test distribution: other scale
            range, held-out backgrounds, more objects).
        recolor: None, or recolour the objects (one of :data:`RECOLORS`, see the module docstring); image
            layout, mask and caption stay those of ``recolor=None``.

    Returns:
        A :class:`SyntheticSample` with a ``(S, S)`` RGB image and ``(S, S)`` uint8 mask.
    """
    spec = get_spec(spec)
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; expected one of {VARIANTS}")
    _check_recolor(spec, recolor)
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    size = int(image_size)
    rng = np.random.default_rng([*_seed_words(seed), int(index)])
    shifted = variant == "shifted"

    backgrounds = spec.test_backgrounds if shifted else spec.backgrounds
    scale_lo, scale_hi = spec.test_scale_range if shifted else spec.scale_range
    weights = np.asarray(spec.test_count_weights if shifted else spec.count_weights, dtype=np.float64)

    # Background: float32 (S, S, 3) in [0, 255] (not yet clipped).
    bg_name = backgrounds[int(rng.integers(len(backgrounds)))]
    canvas = _BACKGROUNDS[bg_name](rng, size)
    labels = np.zeros((size, size), dtype=np.uint8)

    count = spec.min_objects + int(rng.choice(len(weights), p=weights / weights.sum()))
    class_ids = rng.permutation(spec.num_classes)[:count]
    drawers = _DRAWERS[spec.renderer]
    xs, ys = _pixel_grid(size)

    placed: list[tuple[str, str]] = []  # (class name, attribute words)
    areas: dict[int, int] = {}  # class value -> pixels when it was drawn
    for cid in class_ids:
        name = spec.class_names[int(cid)]
        value = int(cid) + 1
        drawer = drawers[name]
        for _ in range(spec.max_attempts):
            params = drawer.sample_params(rng)
            scale = float(rng.uniform(scale_lo, scale_hi))
            radius = scale * size
            extent = drawer.extent(params) * radius
            margin = min(extent, size / 2 - 1)
            cx = float(rng.uniform(margin, size - margin))
            cy = float(rng.uniform(margin, size - margin))
            theta = float(rng.uniform(-1.0, 1.0)) * drawer.max_rotation
            win = _window(cx, cy, extent, extent, size)
            dx = xs[win] - cx
            dy = ys[win] - cy
            cos_t, sin_t = math.cos(theta), math.sin(theta)
            u = (dx * cos_t + dy * sin_t) / radius
            v = (-dx * sin_t + dy * cos_t) / radius
            if params.get("flip", False):
                u = -u
            shape = drawer.mask(u, v, params)
            area = int(shape.sum())
            if area < 6:
                continue
            window = labels[win]
            if not _occlusion_ok(labels, window, shape, areas, spec.max_occlusion):
                continue
            colour = drawer.paint(u, v, params, 1.0 / radius, rng)  # (h, w, 3) float
            attribute = ""
            if spec.renderer == "shapes":
                cname, rgb = spec.colors[int(rng.integers(len(spec.colors)))]
                jitter = rng.uniform(-14, 14, size=3)
                colour = colour * (np.asarray(rgb, dtype=np.float32) + jitter).astype(np.float32)
                attribute = cname
            elif spec.size_adjective_prob > 0 and rng.random() < spec.size_adjective_prob:
                rel = (scale - scale_lo) / max(scale_hi - scale_lo, 1e-6)
                attribute = "small" if rel < 0.25 else ("big" if rel > 0.75 else "")
            region = canvas[win]
            region[shape] = colour[shape]
            window[shape] = value
            areas[value] = area
            placed.append((name, attribute))
            break
        else:
            logger.debug("Dropped %s from sample %d after %d placement attempts", name, index, spec.max_attempts)

    # Every placed class keeps >= (1 - max_occlusion) of its pixels, but guard anyway so captions and masks agree.
    present = set(np.unique(labels).tolist())
    placed = [(n, a) for n, a in placed if spec.class_index(n) in present]
    if recolor is not None:
        recolor_rng = np.random.default_rng([*_seed_words(seed), int(index), RECOLOR_STREAM])
        canvas = recolor_objects(spec, canvas, labels, recolor, recolor_rng)

    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(rng.uniform(2.0, 5.0))  # sensor noise
    image = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))
    caption = _make_caption(spec, placed, rng)
    return SyntheticSample(
        image=image,
        caption=caption,
        mask=labels,
        classes=[n for n, _ in placed],
        index=int(index),
        attributes=[a for _, a in placed],
    )


def _occlusion_ok(
    labels: np.ndarray, window: np.ndarray, shape: np.ndarray, areas: dict[int, int], max_occlusion: float
) -> bool:
    """Whether drawing ``shape`` on ``window`` (a view of ``labels``) keeps earlier objects mostly visible."""
    covered = window[shape]
    if not covered.any():
        return True
    values, counts = np.unique(covered[covered > 0], return_counts=True)
    for value, n_cov in zip(values.tolist(), counts.tolist(), strict=True):
        visible_after = int((labels == value).sum()) - n_cov
        if visible_after < (1.0 - max_occlusion) * areas[value]:
            return False
    return True


def generate_samples(
    spec: str | SyntheticSpec,
    num_samples: int,
    seed: SeedLike = 0,
    image_size: int = 64,
    start: int = 0,
    variant: Variant = "standard",
    recolor: Recolor | None = None,
) -> Iterator[SyntheticSample]:
    """Yield samples ``start .. start + num_samples - 1`` of a seed stream (see :func:`generate_sample`)."""
    for i in range(start, start + num_samples):
        yield generate_sample(spec, i, seed=seed, image_size=image_size, variant=variant, recolor=recolor)


class SyntheticSplit(Sequence[SyntheticSample]):
    """A lazy, indexable split: ``split[i]`` generates sample ``i`` on demand (nothing is cached).

    Attributes:
        spec: The preset.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        num_samples: Number of samples.
        image_size: Image side length in pixels.
        seed: Seed words of the split stream (see :func:`split_seed`).
        variant: ``"standard"`` for train/validation, ``"shifted"`` for test.
        recolor: None, or how the objects are recoloured (one of :data:`RECOLORS`).
        recolor_share: Share of the samples that are recoloured (1: all); which ones depends on the seed and the index
            only.
    """

    def __init__(
        self,
        spec: SyntheticSpec,
        split: str,
        num_samples: int,
        image_size: int,
        base_seed: int,
        recolor: Recolor | None = None,
        recolor_share: float = 1.0,
    ) -> None:
        _check_recolor(spec, recolor)
        if not 0.0 < recolor_share <= 1.0:
            raise ValueError(f"recolor_share must be in (0, 1], got {recolor_share!r}")
        if recolor is None and recolor_share != 1.0:
            raise ValueError(f"recolor_share={recolor_share!r} needs a recolor mode; recolor is None")
        self.spec = spec
        self.split = split
        self.num_samples = int(num_samples)
        self.image_size = int(image_size)
        self.base_seed = int(base_seed)
        self.seed = split_seed(base_seed, split)
        self.variant: Variant = _SPLIT_VARIANTS[split]  # type: ignore[assignment]
        self.recolor = recolor
        self.recolor_share = float(recolor_share)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> SyntheticSample:  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]  # type: ignore[return-value]
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for split of size {self.num_samples}")
        return self._sample(index)

    def __iter__(self) -> Iterator[SyntheticSample]:
        for i in range(self.num_samples):
            yield self._sample(i)

    def is_recolored(self, index: int) -> bool:
        """Whether sample ``index`` is drawn recoloured (always, when ``recolor_share`` is 1)."""
        if self.recolor is None or self.recolor_share >= 1.0:
            return self.recolor is not None
        pick = np.random.default_rng([*_seed_words(self.seed), int(index), RECOLOR_SHARE_STREAM]).random()
        return bool(pick < self.recolor_share)

    def _sample(self, index: int) -> SyntheticSample:
        recolor = self.recolor if self.is_recolored(index) else None
        return generate_sample(
            self.spec, index, seed=self.seed, image_size=self.image_size, variant=self.variant, recolor=recolor
        )

    def info(self) -> dict[str, Any]:
        """JSON-serialisable description of the split (written next to shards / folders)."""
        return {
            "preset": self.spec.name,
            "split": self.split,
            "variant": self.variant,
            "num_samples": self.num_samples,
            "image_size": self.image_size,
            "seed": list(self.seed),
            "class_names": list(self.spec.class_names),
            "recolor": self.recolor,
            "recolor_share": self.recolor_share,
        }

    def __repr__(self) -> str:
        recolor = f", recolor={self.recolor!r}" if self.recolor else ""
        if self.recolor_share < 1.0:
            recolor += f", recolor_share={self.recolor_share!r}"
        return (
            f"SyntheticSplit(preset={self.spec.name!r}, split={self.split!r}, num_samples={self.num_samples}, "
            f"image_size={self.image_size}, seed={self.seed}{recolor})"
        )


def make_split(
    spec: str | SyntheticSpec,
    split: Split,
    num_samples: int,
    image_size: int = 64,
    seed: int = 0,
    recolor: Recolor | None = None,
    recolor_share: float = 1.0,
) -> SyntheticSplit:
    """Create a lazy split of a preset.

    Each split has its own seed stream (:func:`split_seed`): ``train`` and ``validation`` sample the standard
    distribution, ``test`` the shifted one (held-out backgrounds, other scale range, more objects per image; see the
    module docstring).

    Args:
        spec: Preset name or spec.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        num_samples: Number of samples in the split.
        image_size: Image side length in pixels.
        seed: Base seed shared by the three splits of one dataset.
        recolor: None, or one of :data:`RECOLORS`: the same split with the objects recoloured (the objectness
            probe; see :func:`recolor_objects`), or ``"jitter"``, the training augmentation.
        recolor_share: Share of the samples that are recoloured (see :meth:`SyntheticSplit.is_recolored`).

    Returns:
        A :class:`SyntheticSplit` (a ``Sequence[SyntheticSample]``).

    Example:
        >>> probe = make_split("objects", "test", 2, recolor="swap")
        >>> plain = make_split("objects", "test", 2)
        >>> probe[0].caption == plain[0].caption, (probe[0].mask == plain[0].mask).all()
        (True, np.True_)
    """
    if split not in _SPLIT_IDS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    return SyntheticSplit(get_spec(spec), split, num_samples, image_size, seed, recolor, recolor_share)


# --------------------------------------------------------------------------------------------------------------------
# Recolouring (the objectness probe)
# --------------------------------------------------------------------------------------------------------------------


def _check_recolor(spec: SyntheticSpec, recolor: Any) -> None:
    if recolor is not None and recolor not in RECOLORS:
        raise ValueError(f"Unknown recolor {recolor!r}; expected None or one of {RECOLORS}")
    if recolor is not None and recolor.startswith("swap") and not spec.palette_swap:
        raise ValueError(f"recolor={recolor!r} needs a preset with a palette_swap; {spec.name!r} has none")


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """``(N, 3)`` RGB in ``[0, 1]`` -> ``(N, 3)`` HSV in ``[0, 1]`` (as :func:`colorsys.rgb_to_hsv`, vectorised)."""
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    spread = high - low
    safe = np.where(spread > 0, spread, 1.0)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    hue = np.where(high == r, (g - b) / safe, np.where(high == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = np.where(spread > 0, (hue / 6.0) % 1.0, 0.0)
    saturation = np.where(high > 0, spread / np.where(high > 0, high, 1.0), 0.0)
    return np.stack([hue, saturation, high], axis=1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """``(N, 3)`` HSV in ``[0, 1]`` -> ``(N, 3)`` RGB in ``[0, 1]`` (as :func:`colorsys.hsv_to_rgb`, vectorised)."""
    hue, saturation, value = hsv[:, 0] % 1.0, hsv[:, 1], hsv[:, 2]
    sector = np.floor(hue * 6.0)
    frac = hue * 6.0 - sector
    p, q, t = value * (1 - saturation), value * (1 - saturation * frac), value * (1 - saturation * (1 - frac))
    # (6 sectors, 3 channels, N) -> pick each pixel's sector
    table = np.stack([[value, t, p], [q, value, p], [p, value, t], [p, q, value], [t, p, value], [value, p, q]])
    return np.take_along_axis(table, sector.astype(np.int64)[None, None, :] % 6, axis=0)[0].T


def recolor_objects(
    spec: str | SyntheticSpec,
    canvas: np.ndarray,
    labels: np.ndarray,
    recolor: Recolor,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Recolour every object of a drawn image; background pixels (``labels == 0``) are left as they are.

    Args:
        spec: The preset the image was drawn from.
        canvas: ``(S, S, 3)`` float RGB in about ``[0, 255]``.
        labels: ``(S, S)`` class-index mask of ``canvas``.
        recolor: ``"swap"``: class ``a`` takes the palette of ``b`` for ``(a, b)`` in ``spec.palette_swap``: hue
            rotated by ``hue_b - hue_a``, saturation and value scaled by ``sat_b / sat_a`` and ``val_b / val_a``
            (``spec.palettes``). ``"swap_hue"`` / ``"swap_sv"``: only the hue rotation / only the saturation and
            value scaling of ``"swap"``. ``"random"``: each object's hue rotated by ``rng.uniform(0.25, 0.75)``
            turns, in order of class index. ``"jitter"``: each object's hue rotated by ``rng.uniform(0, 1)`` turns,
            its saturation and value scaled by ``exp(rng.uniform(-0.8, 0.8))`` and ``exp(rng.uniform(-0.6, 0.6))``.
        rng: The generator of ``"random"`` and ``"jitter"`` (unused by the others).

    Returns:
        A new ``(S, S, 3)`` float32 canvas.
    """
    spec = get_spec(spec)
    _check_recolor(spec, recolor)
    if recolor in ("random", "jitter") and rng is None:
        raise ValueError(f"recolor={recolor!r} needs an rng")
    palettes, swap = dict(spec.palettes), dict(spec.palette_swap)
    out = np.asarray(canvas, dtype=np.float32).copy()
    for value in sorted(set(np.unique(labels).tolist()) - {0}):
        inside = labels == value
        hsv = _rgb_to_hsv(np.clip(out[inside], 0, 255).astype(np.float64) / 255.0)
        if recolor == "random":
            hsv[:, 0] += float(rng.uniform(0.25, 0.75))  # type: ignore[union-attr]
        elif recolor == "jitter":
            hsv[:, 0] += float(rng.uniform(0.0, 1.0))  # type: ignore[union-attr]
            hsv[:, 1] = np.clip(hsv[:, 1] * math.exp(rng.uniform(-0.8, 0.8)), 0.0, 1.0)  # type: ignore[union-attr]
            hsv[:, 2] = np.clip(hsv[:, 2] * math.exp(rng.uniform(-0.6, 0.6)), 0.0, 1.0)  # type: ignore[union-attr]
        else:
            name = spec.class_names[value - 1]
            (h_a, s_a, v_a), (h_b, s_b, v_b) = palettes[name], palettes[swap[name]]
            if recolor != "swap_sv":
                hsv[:, 0] += h_b - h_a
            if recolor != "swap_hue":
                hsv[:, 1] = np.clip(hsv[:, 1] * (s_b / s_a), 0.0, 1.0)
                hsv[:, 2] = np.clip(hsv[:, 2] * (v_b / v_a), 0.0, 1.0)
        out[inside] = (_hsv_to_rgb(hsv) * 255.0).astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------------------------


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _make_caption(spec: SyntheticSpec, placed: list[tuple[str, str]], rng: np.random.Generator) -> str:
    phrases = [_with_article(f"{attr} {name}" if attr else name) for name, attr in placed]
    if not phrases:  # cannot happen (the first object always fits) but keep captions well-formed
        return "an empty picture."
    objects = _join(phrases)
    templates = list(spec.templates)
    if len(phrases) == 2:
        templates += list(spec.pair_templates)
    template = templates[int(rng.integers(len(templates)))]
    fields = {"objects": objects, "Objects": _capitalise(objects)}
    if len(phrases) == 2:
        fields.update(a=phrases[0], A=_capitalise(phrases[0]), b=phrases[1])
    return template.format(**fields)


# --------------------------------------------------------------------------------------------------------------------
# Drawing helpers
# --------------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(xs, ys)``, each float32 ``(S, S)``."""
    coords = np.arange(size, dtype=np.float32) + 0.5
    ys, xs = np.meshgrid(coords, coords, indexing="ij")
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


@lru_cache(maxsize=64)
def _interp_weights(size: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth-step interpolation indices/weights from a ``cells + 1`` lattice to ``size`` pixels."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size * cells
    i0 = np.minimum(np.floor(t).astype(np.int64), cells - 1)
    w = t - i0
    w = w * w * (3 - 2 * w)
    return i0, i0 + 1, w.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Value noise, float32 ``(S, S, channels)`` with roughly unit variance and ``cells`` blobs per side."""
    lattice = rng.standard_normal((cells + 1, cells + 1, channels), dtype=np.float32)
    i0, i1, w = _interp_weights(size, cells)
    rows = lattice[i0] * (1 - w)[:, None, None] + lattice[i1] * w[:, None, None]  # (S, cells+1, C)
    return rows[:, i0] * (1 - w)[None, :, None] + rows[:, i1] * w[None, :, None]  # (S, S, C)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1] (hue wraps) -> float32 RGB in [0, 255], shape ``(3,)``."""
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), np.float32) * 255


def _muted(rng: np.random.Generator, s_range: tuple[float, float] = (0.05, 0.35)) -> np.ndarray:
    return _hsv(rng.random(), rng.uniform(*s_range), rng.uniform(0.3, 0.85))


def _fill(shape: tuple[int, ...], rgb: np.ndarray) -> np.ndarray:
    return np.broadcast_to(rgb.astype(np.float32), (*shape, 3)).copy()


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of colours ``a``/``b`` (``(3,)`` or ``(h, w, 3)``) by ``t`` ``(h, w)``."""
    t = t[..., None].astype(np.float32)
    return a * (1 - t) + b * t


def _hash01(ids: np.ndarray, salt: float) -> np.ndarray:
    """Cheap deterministic per-integer pseudo-random numbers in [0, 1)."""
    x = np.sin(ids.astype(np.float32) * np.float32(12.9898) + np.float32(salt)) * np.float32(43758.547)
    return x - np.floor(x)


# --------------------------------------------------------------------------------------------------------------------
# Backgrounds: fn(rng, S) -> float32 (S, S, 3)
# --------------------------------------------------------------------------------------------------------------------


def _bg_grey_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    grey = rng.uniform(95, 165)
    tint = rng.uniform(-5, 5, size=3).astype(np.float32)
    img = np.full((size, size, 3), grey, np.float32) + tint
    img += _smooth_noise(rng, size, int(rng.integers(3, 7)), 1) * rng.uniform(8, 16)
    img += _smooth_noise(rng, size, max(4, size // 4), 1) * rng.uniform(3, 7)
    return img


def _bg_grey_weave(rng: np.random.Generator, size: int) -> np.ndarray:
    xs, ys = _pixel_grid(size)
    grey = rng.uniform(75, 185)
    period = rng.uniform(4.0, 9.0)
    weave = np.sin(xs * (2 * np.pi / period)) * np.sin(ys * (2 * np.pi / period))
    img = np.full((size, size, 3), grey, np.float32)
    img += (weave * rng.uniform(8, 16))[..., None]
    img += _smooth_noise(rng, size, int(rng.integers(2, 5)), 1) * rng.uniform(6, 12)
    return img


def _bg_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    img = _fill((size, size), _muted(rng))
    img += _smooth_noise(rng, size, int(rng.integers(3, 9)), 3) * rng.uniform(12, 28)
    return _clutter(rng, img)


def _bg_stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    xs, ys = _pixel_grid(size)
    a, b = _muted(rng), _muted(rng)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(3.0, 12.0)
    t = np.sin((xs * math.cos(angle) + ys * math.sin(angle)) * (2 * np.pi / period)) * 0.5 + 0.5
    img = _lerp(a, b, t * rng.uniform(0.35, 0.8))
    img += _smooth_noise(rng, size, int(rng.integers(2, 6)), 3) * rng.uniform(5, 14)
    return _clutter(rng, img)


def _bg_gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    xs, ys = _pixel_grid(size)
    a, b = _muted(rng), _muted(rng)
    angle = rng.uniform(0, 2 * np.pi)
    proj = (xs - size / 2) * math.cos(angle) + (ys - size / 2) * math.sin(angle)
    img = _lerp(a, b, np.clip(proj / size + 0.5, 0, 1))
    img += _smooth_noise(rng, size, max(4, size // 6), 3) * rng.uniform(4, 10)
    return _clutter(rng, img)


def _bg_checker(rng: np.random.Generator, size: int) -> np.ndarray:
    xs, ys = _pixel_grid(size)
    a, b = _muted(rng), _muted(rng)
    angle = rng.uniform(0, np.pi / 2)
    cell = rng.uniform(4.0, 12.0)
    p = xs * math.cos(angle) + ys * math.sin(angle)
    q = -xs * math.sin(angle) + ys * math.cos(angle)
    t = ((np.floor(p / cell) + np.floor(q / cell)) % 2).astype(np.float32)
    img = _lerp(a, b, t * rng.uniform(0.4, 0.9))
    img += _smooth_noise(rng, size, int(rng.integers(2, 6)), 3) * rng.uniform(5, 12)
    return _clutter(rng, img)


def _bg_plaid(rng: np.random.Generator, size: int) -> np.ndarray:
    xs, ys = _pixel_grid(size)
    base, c1, c2 = _muted(rng), _muted(rng), _muted(rng)
    p1, p2 = rng.uniform(5.0, 14.0, size=2)
    t1 = (np.sin(xs * (2 * np.pi / p1)) > 0.3).astype(np.float32) * 0.5
    t2 = (np.sin(ys * (2 * np.pi / p2)) > 0.3).astype(np.float32) * 0.5
    img = _lerp(_lerp(base, c1, t1), c2, t2)
    img += _smooth_noise(rng, size, int(rng.integers(2, 6)), 3) * rng.uniform(4, 10)
    return _clutter(rng, img)


def _bg_wood(rng: np.random.Generator, size: int) -> np.ndarray:
    xs, ys = _pixel_grid(size)
    light = _hsv(rng.uniform(0.05, 0.11), rng.uniform(0.25, 0.5), rng.uniform(0.55, 0.8))
    dark = light * rng.uniform(0.55, 0.75)
    angle = rng.uniform(0, np.pi)
    warp = _smooth_noise(rng, size, int(rng.integers(2, 4)), 1)[..., 0] * rng.uniform(3, 8)
    p = xs * math.cos(angle) + ys * math.sin(angle) + warp
    t = np.sin(p * (2 * np.pi / rng.uniform(3.0, 7.0))) * 0.5 + 0.5
    img = _lerp(light, dark, t)
    return _clutter(rng, img)


def _clutter(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Add faint random ellipses and thin scribbles that belong to no category (distractors)."""
    size = img.shape[0]
    xs, ys = _pixel_grid(size)
    for _ in range(int(rng.integers(2, 7))):
        cx, cy = rng.uniform(0, size, size=2)
        rx, ry = rng.uniform(0.05, 0.25, size=2) * size
        angle = rng.uniform(0, np.pi)
        alpha = rng.uniform(0.12, 0.35)
        colour = _muted(rng, (0.05, 0.45))
        reach = max(rx, ry)
        win = _window(cx, cy, reach, reach, size)
        dx, dy = xs[win] - cx, ys[win] - cy
        p = (dx * math.cos(angle) + dy * math.sin(angle)) / rx
        q = (-dx * math.sin(angle) + dy * math.cos(angle)) / ry
        blob = p * p + q * q <= 1.0
        region = img[win]
        region[blob] = region[blob] * (1 - alpha) + colour * alpha
    for _ in range(int(rng.integers(0, 4))):
        x0, y0, x1, y1 = rng.uniform(0, size, size=4)
        alpha = rng.uniform(0.2, 0.5)
        colour = _muted(rng)
        length = math.hypot(x1 - x0, y1 - y0) + 1e-6
        nx, ny = -(y1 - y0) / length, (x1 - x0) / length
        win = _window((x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2 + 1, abs(y1 - y0) / 2 + 1, size)
        dx, dy = xs[win] - x0, ys[win] - y0
        along = (dx * (x1 - x0) + dy * (y1 - y0)) / length
        line = (np.abs(dx * nx + dy * ny) < 0.6) & (along >= 0) & (along <= length)
        region = img[win]
        region[line] = region[line] * (1 - alpha) + colour * alpha
    return img


def _window(cx: float, cy: float, rx: float, ry: float, size: int) -> tuple[slice, slice]:
    """Pixel slices ``(rows, cols)`` covering ``[cx - rx, cx + rx] x [cy - ry, cy + ry]``, clipped to the image."""
    x0, x1 = max(0, int(cx - rx)), min(size, int(math.ceil(cx + rx)) + 1)
    y0, y1 = max(0, int(cy - ry)), min(size, int(math.ceil(cy + ry)) + 1)
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


_BACKGROUNDS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "grey_noise": _bg_grey_noise,
    "grey_weave": _bg_grey_weave,
    "noise": _bg_noise,
    "stripes": _bg_stripes,
    "gradient": _bg_gradient,
    "checker": _bg_checker,
    "plaid": _bg_plaid,
    "wood": _bg_wood,
}


# --------------------------------------------------------------------------------------------------------------------
# Object drawers. Local frame: u to the right, v downwards, object radius = 1; ``pix`` = one pixel in local units.
# ``mask(u, v, p) -> bool (h, w)``; ``paint(u, v, p, pix, rng) -> float32 (h, w, 3)``.
# --------------------------------------------------------------------------------------------------------------------


class _Drawer:
    """Base object drawer."""

    max_rotation: float = math.pi

    def sample_params(self, rng: np.random.Generator) -> dict[str, Any]:
        return {}

    def extent(self, p: dict[str, Any]) -> float:
        """Radius (local units) of a disc around the centre that contains the whole object."""
        return 1.0

    def mask(self, u: np.ndarray, v: np.ndarray, p: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def paint(self, u: np.ndarray, v: np.ndarray, p: dict[str, Any], pix: float, rng: np.random.Generator):
        raise NotImplementedError


# ---- shapes: masks only; paint returns a per-pixel brightness factor (h, w, 1) multiplied by the sampled colour ----


class _Shape(_Drawer):
    max_rotation = math.radians(20)

    def __init__(self, mask_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], extent: float) -> None:
        self._mask_fn = mask_fn
        self._extent = extent

    def extent(self, p: dict[str, Any]) -> float:
        return self._extent

    def mask(self, u, v, p):
        return self._mask_fn(u, v)

    def paint(self, u, v, p, pix, rng):
        # Mild top-lit shading and fine texture so shapes are not perfectly flat.
        shade = 1.0 - 0.08 * v + rng.standard_normal(u.shape, dtype=np.float32) * np.float32(0.03)
        return shade[..., None].astype(np.float32)


def _star_mask(u: np.ndarray, v: np.ndarray, points: int = 5, inner: float = 0.45) -> np.ndarray:
    rho = np.sqrt(u * u + v * v)
    phi = np.arctan2(v, u) + np.pi / 2  # an outer vertex points up
    sector = 2 * np.pi / points
    local = np.abs((phi % sector) - sector / 2)  # 0 at mid-sector (inner vertex) .. sector/2 at outer vertex
    # Edge from outer vertex A=(1, angle 0) to inner vertex B=(inner, angle sector/2) in sector coordinates.
    ang = sector / 2 - local  # angle from the outer vertex
    px, py = rho * np.cos(ang), rho * np.sin(ang)
    bx, by = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    cross = (bx - 1.0) * py - by * (px - 1.0)
    return cross >= 0


def _triangle_mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    s = 1.1
    return (v <= 0.5 * s) & (-0.866 * u - 0.5 * v <= 0.5 * s) & (0.866 * u - 0.5 * v <= 0.5 * s)


def _heart_mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x = u * 1.15
    y = -v * 1.15 + 0.2
    return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0


_SHAPE_DRAWERS: dict[str, _Drawer] = {
    "circle": _Shape(lambda u, v: u * u + v * v <= 1.0, 1.0),
    "square": _Shape(lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.85, 1.21),
    "triangle": _Shape(_triangle_mask, 1.12),
    "cross": _Shape(
        lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95)), 1.0
    ),
    "star": _Shape(_star_mask, 1.0),
    "diamond": _Shape(lambda u, v: np.abs(u) / 0.72 + np.abs(v) <= 1.0, 1.0),
    "heart": _Shape(_heart_mask, 1.25),
}


# ---- objects ----


class _Sun(_Drawer):
    def sample_params(self, rng):
        return {
            "centre": _hsv(rng.uniform(0.13, 0.17), rng.uniform(0.35, 0.6), rng.uniform(0.95, 1.0)),
            "edge": _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.8, 1.0), rng.uniform(0.9, 1.0)),
            "rays": bool(rng.random() < 0.55),
            "n_rays": int(rng.integers(8, 13)),
            "ray_len": float(rng.uniform(1.25, 1.45)),
            "phase": float(rng.uniform(0, 2 * np.pi)),
        }

    def extent(self, p):
        return p["ray_len"] if p["rays"] else 1.0

    def mask(self, u, v, p):
        rho = np.sqrt(u * u + v * v)
        disc = rho <= 1.0
        if not p["rays"]:
            return disc
        phi = np.arctan2(v, u)
        rays = (rho <= p["ray_len"]) & (np.cos(p["n_rays"] * (phi - p["phase"])) >= 0.8)
        return disc | rays

    def paint(self, u, v, p, pix, rng):
        rho = np.sqrt(u * u + v * v)
        return _lerp(p["centre"], p["edge"], np.clip(rho, 0, 1) ** 1.5)


class _Leaf(_Drawer):
    def sample_params(self, rng):
        return {
            "width": float(rng.uniform(0.32, 0.55)),
            "base": _hsv(rng.uniform(0.22, 0.36), rng.uniform(0.55, 0.85), rng.uniform(0.45, 0.8)),
            "veins": float(rng.uniform(2.5, 4.5)),
        }

    def extent(self, p):
        return 1.3

    def mask(self, u, v, p):
        blade = (np.abs(u) <= 1.0) & (np.abs(v) <= p["width"] * (1.0 - u * u))
        stem = (u >= -1.3) & (u < -0.9) & (np.abs(v) <= 0.06)
        return blade | stem

    def paint(self, u, v, p, pix, rng):
        half = p["width"] * np.maximum(1.0 - u * u, 1e-3)
        edge = np.clip(np.abs(v) / half, 0, 1)
        shade = 0.75 + 0.25 * (1 - edge)
        midrib = np.abs(v) <= max(0.05, 0.5 * pix)
        side = ((p["veins"] * (u + 0.9 * np.abs(v))) % 1.0) * (1.0 / p["veins"]) <= max(0.06, 0.7 * pix)
        shade = np.where(midrib | side, 1.35, shade)
        return np.clip(p["base"] * shade[..., None], 0, 255)


class _Brick(_Drawer):
    max_rotation = math.radians(30)

    def sample_params(self, rng):
        return {
            "a": float(rng.uniform(0.85, 1.05)),
            "b": float(rng.uniform(0.45, 0.7)),
            "rows": int(rng.integers(3, 5)),
            "brick": _hsv(rng.uniform(-0.01, 0.04), rng.uniform(0.55, 0.8), rng.uniform(0.5, 0.72)),
            "mortar": _hsv(0.1, rng.uniform(0.03, 0.12), rng.uniform(0.72, 0.88)),
            "salt": float(rng.uniform(0, 100)),
        }

    def extent(self, p):
        return math.hypot(p["a"], p["b"])

    def mask(self, u, v, p):
        return (np.abs(u) <= p["a"]) & (np.abs(v) <= p["b"])

    def paint(self, u, v, p, pix, rng):
        a, b = p["a"], p["b"]
        row_h = 2 * b / p["rows"]
        brick_w = row_h * 2.2
        fy = (v + b) / row_h
        row = np.floor(fy)
        offset = (row % 2) * 0.5 * brick_w
        fx = (u + a + offset) / brick_w
        col = np.floor(fx)
        mortar = ((fy - row) * row_h < max(0.1, 0.9 * pix)) | ((fx - col) * brick_w < max(0.08, 0.9 * pix))
        shade = 0.82 + 0.18 * _hash01(row * 17 + col, p["salt"])
        colour = p["brick"] * shade[..., None]
        return np.where(mortar[..., None], p["mortar"], colour).astype(np.float32)


_BALL_COLOURS = (
    (250, 250, 245),
    (225, 40, 40),
    (40, 90, 225),
    (245, 215, 40),
    (40, 175, 70),
    (245, 140, 30),
)


class _Ball(_Drawer):
    def sample_params(self, rng):
        i, j = rng.choice(len(_BALL_COLOURS), size=2, replace=False)
        return {
            "c1": np.asarray(_BALL_COLOURS[int(i)], np.float32),
            "c2": np.asarray(_BALL_COLOURS[int(j)], np.float32),
            "stripes": int(rng.integers(3, 6)),
        }

    def mask(self, u, v, p):
        return u * u + v * v <= 1.0

    def paint(self, u, v, p, pix, rng):
        idx = np.floor((u + 1.0) * p["stripes"] / 2.0) % 2
        colour = np.where(idx[..., None] > 0, p["c1"], p["c2"])
        rho2 = np.clip(u * u + v * v, 0, 1)
        shade = 0.6 + 0.4 * np.sqrt(1 - rho2)
        colour = colour * shade[..., None]
        hx, hy = u + 0.35, v + 0.35
        highlight = np.clip(1 - (hx * hx + hy * hy) / 0.09, 0, 1) * 0.6
        return _lerp(colour, np.float32(255.0), highlight)


class _Fish(_Drawer):
    max_rotation = math.radians(35)

    def sample_params(self, rng):
        return {
            "h": float(rng.uniform(0.36, 0.5)),
            "base": _hsv(rng.uniform(0.52, 0.63), rng.uniform(0.2, 0.5), rng.uniform(0.5, 0.78)),
            "flip": bool(rng.random() < 0.5),
        }

    def extent(self, p):
        return 1.35

    def mask(self, u, v, p):
        bu = (u - 0.2) / 0.8
        body = bu * bu + (v / p["h"]) ** 2 <= 1.0
        tail = (u <= -0.45) & (u >= -1.05) & (np.abs(v) <= (-0.45 - u) / 0.6 * 0.8)
        return body | tail

    def paint(self, u, v, p, pix, rng):
        h = p["h"]
        shade = 1.0 + 0.25 * np.clip(v / h, -1, 1)  # lighter belly
        shade = shade + 0.07 * np.sin(u * 20) * np.sin(v * 20)  # scales
        shade = np.where(u < -0.5, shade * 0.8, shade)  # darker tail
        colour = np.clip(p["base"] * shade[..., None], 0, 255)
        er = max(0.09, 0.8 * pix)
        eye = (u - 0.62) ** 2 + (v + 0.25 * h) ** 2 <= er * er
        return np.where(eye[..., None], np.float32(25.0), colour).astype(np.float32)


_FLOWER_HUES = ((0.92, 0.55), (0.78, 0.55), (0.0, 0.04), (0.97, 0.7), (0.62, 0.45), (0.85, 0.4))


class _Flower(_Drawer):
    def sample_params(self, rng):
        hue, sat = _FLOWER_HUES[int(rng.integers(len(_FLOWER_HUES)))]
        return {
            "petal": _hsv(hue + rng.uniform(-0.02, 0.02), sat + rng.uniform(-0.1, 0.1), rng.uniform(0.85, 1.0)),
            "centre": _hsv(rng.uniform(0.1, 0.15), rng.uniform(0.8, 1.0), rng.uniform(0.85, 1.0)),
            "n": int(rng.integers(5, 8)),
            "phase": float(rng.uniform(0, 2 * np.pi)),
            "core": float(rng.uniform(0.24, 0.32)),
        }

    def mask(self, u, v, p):
        rho = np.sqrt(u * u + v * v)
        phi = np.arctan2(v, u)
        return rho <= 0.3 + 0.7 * np.abs(np.cos(p["n"] * (phi - p["phase"]) / 2))

    def paint(self, u, v, p, pix, rng):
        rho = np.sqrt(u * u + v * v)
        petals = _lerp(p["petal"] * 0.8, p["petal"], np.clip(rho, 0, 1))
        core = rho <= max(p["core"], 1.5 * pix)
        return np.where(core[..., None], p["centre"], petals).astype(np.float32)


class _Tree(_Drawer):
    max_rotation = math.radians(10)

    def sample_params(self, rng):
        return {
            "conifer": bool(rng.random() < 0.5),
            "tiers": int(rng.integers(2, 4)),
            "canopy": _hsv(rng.uniform(0.27, 0.4), rng.uniform(0.5, 0.8), rng.uniform(0.28, 0.5)),
            "trunk": _hsv(rng.uniform(0.06, 0.09), rng.uniform(0.5, 0.7), rng.uniform(0.32, 0.48)),
            "salt": float(rng.uniform(0, 100)),
        }

    def extent(self, p):
        return 1.25

    def _canopy(self, u, v, p):
        if not p["conifer"]:
            return u * u + (v + 0.3) ** 2 <= 0.68**2
        if p["tiers"] == 3:
            tops, bottoms, widths = (-1.0, -0.55, -0.1), (-0.35, 0.15, 0.6), (0.45, 0.6, 0.75)
        else:
            tops, bottoms, widths = (-1.0, -0.35), (-0.1, 0.6), (0.55, 0.75)
        out = np.zeros(u.shape, dtype=bool)
        for top, bottom, width in zip(tops, bottoms, widths, strict=True):
            out |= (v >= top) & (v <= bottom) & (np.abs(u) <= width * (v - top) / (bottom - top))
        return out

    def mask(self, u, v, p):
        trunk = (np.abs(u) <= 0.13) & (v >= 0.3) & (v <= 1.0)
        return trunk | self._canopy(u, v, p)

    def paint(self, u, v, p, pix, rng):
        canopy = self._canopy(u, v, p)
        spots = _hash01(np.floor(u * 6) * 31 + np.floor(v * 6), p["salt"])
        leaves = p["canopy"] * (0.8 + 0.35 * spots)[..., None]
        return np.where(canopy[..., None], leaves, p["trunk"]).astype(np.float32)


class _Mushroom(_Drawer):
    max_rotation = math.radians(20)

    def sample_params(self, rng):
        red = rng.random() < 0.7
        hue = rng.uniform(-0.01, 0.03) if red else rng.uniform(0.05, 0.08)
        n_spots = int(rng.integers(3, 6))
        return {
            "cap": _hsv(hue, rng.uniform(0.7, 0.9), rng.uniform(0.6, 0.85)),
            "stem": _hsv(0.1, rng.uniform(0.12, 0.3), rng.uniform(0.8, 0.93)),
            "spots": [(float(rng.uniform(-0.7, 0.7)), float(rng.uniform(-0.55, -0.1))) for _ in range(n_spots)],
            "spot_r": float(rng.uniform(0.12, 0.18)),
        }

    def extent(self, p):
        return 1.12

    def _cap(self, u, v):
        return (v <= 0.05) & (u * u + ((v - 0.05) / 0.7) ** 2 <= 1.0)

    def mask(self, u, v, p):
        stem = (np.abs(u) <= 0.2 + 0.06 * v) & (v >= 0.0) & (v <= 0.85)
        return self._cap(u, v) | stem

    def paint(self, u, v, p, pix, rng):
        cap = self._cap(u, v)
        r = max(p["spot_r"], 0.9 * pix)
        spot = np.zeros(u.shape, dtype=bool)
        for sx, sy in p["spots"]:
            spot |= (u - sx) ** 2 + (v - sy) ** 2 <= r * r
        cap_colour = np.where(spot[..., None], np.float32(245.0), p["cap"])
        return np.where(cap[..., None], cap_colour, p["stem"]).astype(np.float32)


_OBJECT_DRAWERS: dict[str, _Drawer] = {
    "sun": _Sun(),
    "leaf": _Leaf(),
    "brick": _Brick(),
    "ball": _Ball(),
    "fish": _Fish(),
    "flower": _Flower(),
    "tree": _Tree(),
    "mushroom": _Mushroom(),
}

_DRAWERS: dict[str, dict[str, _Drawer]] = {"shapes": _SHAPE_DRAWERS, "objects": _OBJECT_DRAWERS}


# --------------------------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------------------------

SHAPES_SPEC = register_spec(
    SyntheticSpec(
        name="shapes",
        renderer="shapes",
        class_names=("circle", "square", "triangle", "cross", "star", "diamond", "heart"),
        description="Coloured geometric shapes on textured grey; classes are shapes, colours are nuisance words.",
        scale_range=(0.11, 0.21),
        test_scale_range=(0.09, 0.25),
        backgrounds=("grey_noise",),
        test_backgrounds=("grey_weave",),
        colors=(
            ("red", (220, 40, 40)),
            ("green", (40, 180, 60)),
            ("blue", (40, 80, 220)),
            ("yellow", (235, 215, 40)),
            ("purple", (150, 60, 190)),
            ("orange", (245, 140, 30)),
            ("cyan", (40, 200, 210)),
            ("white", (240, 240, 240)),
        ),
        templates=(
            "{objects}",
            "{objects}",
            "a picture of {objects}",
            "{objects} on a grey background",
            "an image of {objects}",
        ),
    )
)

OBJECTS_SPEC = register_spec(
    SyntheticSpec(
        name="objects",
        renderer="objects",
        class_names=("sun", "leaf", "brick", "ball", "fish", "flower", "tree", "mushroom"),
        description="Object-like categories (shape + palette + texture) on cluttered backgrounds, varied captions.",
        scale_range=(0.13, 0.24),
        test_scale_range=(0.11, 0.27),
        backgrounds=("noise", "stripes", "gradient"),
        test_backgrounds=("checker", "plaid", "wood"),
        templates=(
            "a photo of {objects}.",
            "a photo of {objects} on a messy table.",
            "{Objects} on a cluttered background.",
            "you can see {objects} in this picture.",
            "a blurry photo of {objects}.",
            "a picture showing {objects}.",
            "a close-up shot of {objects}.",
            "{Objects} lying on the floor.",
            "an image with {objects}.",
            "a drawing of {objects} on a noisy background.",
            "look at {objects}!",
            "{objects}",
            "we found {objects} in the garden.",
            "a toy scene with {objects}.",
            "a snapshot of {objects} near the window.",
            "{Objects} on a striped carpet.",
            "a cartoon of {objects}.",
            "this is {objects}.",
        ),
        pair_templates=(
            "there is {a} next to {b}.",
            "{A} beside {b}.",
            "{A} and {b} side by side.",
            "a photo of {a} near {b} on a messy table.",
            "{A} close to {b}.",
        ),
        size_adjective_prob=0.5,
        # the centre of each drawer's main colour range (ball: striped in primaries, red taken as its reference;
        # flower: the circular mean of its petal hues)
        palettes=(
            ("sun", (0.11, 0.75, 0.97)),
            ("leaf", (0.29, 0.70, 0.62)),
            ("brick", (0.015, 0.67, 0.61)),
            ("ball", (0.0, 0.80, 0.90)),
            ("fish", (0.575, 0.35, 0.64)),
            ("flower", (0.87, 0.50, 0.92)),
            ("tree", (0.335, 0.65, 0.39)),
            ("mushroom", (0.01, 0.80, 0.72)),
        ),
        palette_swap=(
            ("sun", "fish"),
            ("fish", "sun"),
            ("leaf", "brick"),
            ("brick", "leaf"),
            ("tree", "mushroom"),
            ("mushroom", "tree"),
            ("ball", "flower"),
            ("flower", "ball"),
        ),
    )
)


# --------------------------------------------------------------------------------------------------------------------
# Visualisation
# --------------------------------------------------------------------------------------------------------------------


def colorize_mask(mask: np.ndarray, num_classes: int | None = None) -> Image.Image:
    """Render a ``(H, W)`` class-index mask as an RGB image (background black, classes in distinct hues)."""
    n = int(num_classes if num_classes is not None else max(int(mask.max()), 1))
    palette = np.zeros((max(n, int(mask.max())) + 1, 3), dtype=np.uint8)
    for k in range(1, len(palette)):
        palette[k] = _hsv((k - 1) / max(n, 1), 0.75, 0.95).astype(np.uint8)
    return Image.fromarray(palette[mask])


# --------------------------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str, jpeg_quality: int = 95) -> bytes:
    buf = io.BytesIO()
    if fmt in ("jpg", "jpeg"):
        image.save(buf, format="JPEG", quality=jpeg_quality, subsampling=0)
    elif fmt == "png":
        image.save(buf, format="PNG", compress_level=6)
    else:
        raise ValueError(f"Unsupported image format {fmt!r}; expected 'jpg' or 'png'")
    return buf.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = _TAR_MTIME
    info.mode = _TAR_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _sample_json(sample: SyntheticSample, key: str, class_names: Sequence[str] | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "key": key,
        "caption": sample.caption,
        "classes": list(sample.classes),
        "width": sample.image.width,
        "height": sample.image.height,
        "index": sample.index,
        "status": "success",
    }
    if class_names is not None:
        record["class_ids"] = [list(class_names).index(c) + 1 for c in sample.classes]
    return record


def write_webdataset_shards(
    samples: Iterable[SyntheticSample],
    output_dir: str | os.PathLike[str],
    samples_per_shard: int = 1000,
    image_format: Literal["jpg", "png"] = "jpg",
    jpeg_quality: int = 95,
    write_masks: bool = True,
    class_names: Sequence[str] | None = None,
) -> list[Path]:
    """Write samples as img2dataset-layout WebDataset tar shards.

    Each sample with key ``KKKKKKKKK`` (its position, 9 digits) contributes ``KKKKKKKKK.jpg`` (or ``.png``),
    ``KKKKKKKKK.txt`` (caption, UTF-8), ``KKKKKKKKK.json`` (``{"key", "caption", "classes", "class_ids", "width",
    "height", "index", "status"}``) and, if ``write_masks``, ``KKKKKKKKK.mask.png`` (mode ``L`` class-index mask).
    Shards are named ``shard-000000.tar``, ``shard-000001.tar``, ... Tar headers use a fixed mtime/uid/gid/mode so
    identical samples produce byte-identical shards. When ``samples`` is a :class:`SyntheticSplit`, an ``info.json``
    describing the split is written as well.

    Reading: ``webdataset.WebDataset(urls).decode("pil")`` works for images and captions, but its ``"pil"`` decoder
    converts masks to RGB; decode ``mask.png`` with ``PIL.Image.open(io.BytesIO(data))`` (mode ``L``) or a
    ``"pill"``/``"l8"`` decoder to get class indices.

    Args:
        samples: Any iterable of samples, e.g. the result of :func:`make_split`.
        output_dir: Destination folder (created if needed).
        samples_per_shard: Maximum samples per tar file.
        image_format: ``"jpg"`` (img2dataset default) or ``"png"`` (lossless).
        jpeg_quality: JPEG quality when ``image_format="jpg"``.
        write_masks: Also store the segmentation mask of each sample.
        class_names: Class order for ``class_ids`` in the JSON (defaults to the split's spec when available).

    Returns:
        Paths of the shards written, in order.
    """
    if samples_per_shard < 1:
        raise ValueError("samples_per_shard must be >= 1")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if class_names is None and isinstance(samples, SyntheticSplit):
        class_names = samples.spec.class_names
    ext = "jpg" if image_format in ("jpg", "jpeg") else image_format
    shards: list[Path] = []
    tar: tarfile.TarFile | None = None
    tmp_path: Path | None = None

    def _close() -> None:
        nonlocal tar, tmp_path
        if tar is not None and tmp_path is not None:
            tar.close()
            final = tmp_path.with_suffix("")  # strip ".tmp"
            os.replace(tmp_path, final)
            shards.append(final)
        tar, tmp_path = None, None

    count = 0
    try:
        for count, sample in enumerate(samples, start=1):  # noqa: B007 - count used after the loop
            position = count - 1
            if position % samples_per_shard == 0:
                _close()
                tmp_path = out / f"shard-{position // samples_per_shard:06d}.tar.tmp"
                tar = tarfile.open(tmp_path, "w", format=tarfile.USTAR_FORMAT)
            assert tar is not None
            key = f"{position:09d}"
            _add_member(tar, f"{key}.{ext}", _encode(sample.image, ext, jpeg_quality))
            _add_member(tar, f"{key}.txt", sample.caption.encode("utf-8"))
            record = _sample_json(sample, key, class_names)
            _add_member(tar, f"{key}.json", json.dumps(record, sort_keys=True).encode("utf-8"))
            if write_masks:
                _add_member(tar, f"{key}.mask.png", _encode(sample.mask_image, "png"))
        _close()
    finally:
        if tar is not None:  # an exception mid-shard: drop the partial file
            tar.close()
            if tmp_path is not None and tmp_path.exists():
                tmp_path.unlink()
    if isinstance(samples, SyntheticSplit):
        info = {**samples.info(), "shards": [p.name for p in shards], "samples_per_shard": samples_per_shard}
        (out / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    logger.info("Wrote %d samples to %d shards in %s", count, len(shards), out)
    return shards


def _hf_features() -> datasets.Features:
    import datasets

    list_type = getattr(datasets, "List", None) or datasets.Sequence
    return datasets.Features(
        {
            "image": datasets.Image(),
            "text": datasets.Value("string"),
            "annotation": datasets.Image(mode="L"),
            "classes": list_type(datasets.Value("string")),
        }
    )


def to_hf_dataset(samples: Iterable[SyntheticSample], chunk_size: int = 1000) -> datasets.Dataset:
    """Convert samples to an in-memory :class:`datasets.Dataset`.

    Columns: ``image`` (``datasets.Image``, RGB, PNG-encoded), ``text`` (caption), ``annotation``
    (``datasets.Image(mode="L")``: the class-index mask) and ``classes`` (list of class names present).

    Args:
        samples: Any iterable of samples, e.g. the result of :func:`make_split`.
        chunk_size: Samples converted per Arrow chunk (bounds peak memory of undecoded PIL images).

    Returns:
        The dataset, with ``features`` as above.
    """
    import datasets

    features = _hf_features()
    parts: list[datasets.Dataset] = []
    batch: dict[str, list[Any]] = {"image": [], "text": [], "annotation": [], "classes": []}

    def _flush() -> None:
        if batch["text"]:
            parts.append(datasets.Dataset.from_dict(batch, features=features))
            for column in batch.values():
                column.clear()

    for sample in samples:
        batch["image"].append({"bytes": _encode(sample.image, "png"), "path": None})
        batch["text"].append(sample.caption)
        batch["annotation"].append({"bytes": _encode(sample.mask_image, "png"), "path": None})
        batch["classes"].append(list(sample.classes))
        if len(batch["text"]) >= chunk_size:
            _flush()
    _flush()
    if not parts:
        return datasets.Dataset.from_dict({k: [] for k in batch}, features=features)
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def save_imagefolder(
    samples: Iterable[SyntheticSample],
    output_dir: str | os.PathLike[str],
    image_format: Literal["jpg", "png"] = "png",
) -> Path:
    """Save samples as an ``imagefolder`` dataset.

    Layout: ``images/KKKKKKKKK.png``, ``annotations/KKKKKKKKK.png`` (mode ``L`` masks) and ``metadata.jsonl`` with
    one ``{"file_name", "annotation_file_name", "text", "classes"}`` object per line, so that
    ``datasets.load_dataset("imagefolder", data_dir=output_dir)`` yields columns ``image``, ``annotation``, ``text``
    and ``classes``.

    Returns:
        ``output_dir`` as a :class:`~pathlib.Path`.
    """
    out = Path(output_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    ext = "jpg" if image_format in ("jpg", "jpeg") else image_format
    n = 0
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as meta:
        for n, sample in enumerate(samples, start=1):  # noqa: B007 - n used after the loop
            key = f"{n - 1:09d}"
            image_name = f"images/{key}.{ext}"
            mask_name = f"annotations/{key}.png"
            (out / image_name).write_bytes(_encode(sample.image, ext))
            (out / mask_name).write_bytes(_encode(sample.mask_image, "png"))
            record = {
                "file_name": image_name,
                "annotation_file_name": mask_name,
                "text": sample.caption,
                "classes": list(sample.classes),
            }
            meta.write(json.dumps(record) + "\n")
    if isinstance(samples, SyntheticSplit):
        (out / "info.json").write_text(json.dumps(samples.info(), indent=2, sort_keys=True) + "\n")
    logger.info("Wrote %d samples to imagefolder %s", n, out)
    return out
