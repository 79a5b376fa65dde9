"""Baselines that every synthetic segmentation result is reported beside (the protocol: `docs/protocol_synthetic.md`).

* :func:`all_background`: the score of predicting background everywhere.
* The **colour co-occurrence baseline**, caption-only and training-free: it knows which classes an image holds only
  from the words of its caption (never from a mask), and it sees nothing but pixel colours.

  1. :func:`fit_color_cooccurrence`: quantise every pixel of N training images into RGB bins
     (:func:`quantize_colors`, 8 x 8 x 8 by default) and score each class `c` and bin `b` by how much more often the
     bin covers pixels of images whose caption names `c` than pixels of all images, the pointwise mutual information
     `E[c, b] = log P(b | caption names c) - log P(b)` (counts smoothed by `smoothing` pixels per bin; bins never
     seen in training score 0 for every class).
  2. :func:`color_scores`: each pixel takes its bin's scores; with `cell_size > 1` every `cell_size`-pixel square
     (the model's patch grid: 8 px patches of the 64 px images) takes the mean score of its pixels.
  3. :func:`predict_labels`: the class of highest score, or background where that score is below a threshold
     chosen on the validation split (:func:`select_color_threshold`).

  Where the categories have characteristic colours this is a strong baseline; on the recoloured probe
  (`make_split(..., recolor="swap")`) it should fail, and a model that learned shapes should not.

Annotations follow the evaluation convention: `(H, W)` ints, 0 background, `1..C` the classes, 255 ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from groupvit.evaluation.confusion import ConfusionMatrix

__all__ = [
    "COLOR_THRESHOLD_CANDIDATES",
    "ColorCooccurrence",
    "all_background",
    "classes_named",
    "color_scores",
    "evaluate_color_baseline",
    "fit_color_cooccurrence",
    "predict_labels",
    "quantize_colors",
    "select_color_threshold",
]

COLOR_THRESHOLD_CANDIDATES: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(41))
"""Background thresholds tried on the validation split: 0, 0.05, ..., 2 (enrichment is a natural log ratio)."""

ImageLike = np.ndarray | Image.Image


def _rgb_array(image: ImageLike) -> np.ndarray:
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if pixels.ndim != 3 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected an RGB image or a (H, W, 3) uint8 array, got {pixels.dtype} {pixels.shape}")
    return pixels


def quantize_colors(image: ImageLike, bins_per_channel: int = 8) -> np.ndarray:
    """The colour bin of every pixel: `(H, W)` int64 `r * B**2 + g * B + b` with channel bins `value * B // 256`.

    Example:
        >>> quantize_colors(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8), bins_per_channel=2).tolist()
        [[4, 1]]
    """
    _check_bins(bins_per_channel)
    # (H, W, 3) -> (H, W, 3) channel bins -> (H, W)
    channel_bins = _rgb_array(image).astype(np.int64) * bins_per_channel // 256
    return (channel_bins[..., 0] * bins_per_channel + channel_bins[..., 1]) * bins_per_channel + channel_bins[..., 2]


def _check_bins(bins_per_channel: Any) -> int:
    if isinstance(bins_per_channel, bool) or not isinstance(bins_per_channel, int) or not 1 <= bins_per_channel <= 256:
        raise ValueError(f"bins_per_channel must be an int in [1, 256], got {bins_per_channel!r}")
    return bins_per_channel


def classes_named(caption: str, class_names: Sequence[str]) -> list[int]:
    """0-based indices of the classes whose name appears in `caption` as a whole word (case-insensitive).

    Example:
        >>> classes_named("A sun beside a big fish.", ["sun", "leaf", "fish"])
        [0, 2]
    """
    text = caption.lower()
    return [i for i, name in enumerate(class_names) if re.search(rf"\b{re.escape(name.lower())}\b", text)]


@dataclass(frozen=True)
class ColorCooccurrence:
    """The fitted colour co-occurrence baseline.

    Args:
        class_names: The `C` classes, in label order (label `k` is `class_names[k - 1]`).
        bins_per_channel: `B`; the table has `B**3` colour bins.
        enrichment: `(C, B**3)` float64 log ratio `log P(bin | caption names class) - log P(bin)`.
        pixel_counts: `(C + 1, B**3)` pixels per bin in images naming each class, and (last row) in all images.
        num_images: Training images counted.

    Example:
        >>> red, blue = np.full((1, 2, 3), (255, 0, 0), np.uint8), np.full((1, 2, 3), (0, 0, 255), np.uint8)
        >>> table = fit_color_cooccurrence([red, blue], ["a sun", "a fish"], ["sun", "fish"], bins_per_channel=2)
        >>> predict_labels(color_scores(table, red), background_threshold=0.1).tolist()
        [[1, 1]]
    """

    class_names: tuple[str, ...]
    bins_per_channel: int
    enrichment: np.ndarray
    pixel_counts: np.ndarray
    num_images: int

    def __post_init__(self) -> None:
        expected = (len(self.class_names), self.bins_per_channel**3)
        if self.enrichment.shape != expected:
            raise ValueError(f"enrichment must have shape {expected}, got {self.enrichment.shape}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary: the settings and, per class, its five most enriched bins' RGB centres."""
        width = 256 // self.bins_per_channel
        top = {}
        for name, row in zip(self.class_names, self.enrichment, strict=True):
            bins = np.argsort(-row)[:5]
            rgb = np.stack([bins // self.bins_per_channel**2, bins // self.bins_per_channel, bins], -1)
            centres = (rgb % self.bins_per_channel) * width + width // 2
            top[name] = [
                {"rgb": c.tolist(), "enrichment": round(float(row[b]), 3)} for c, b in zip(centres, bins, strict=True)
            ]
        return {"bins_per_channel": self.bins_per_channel, "num_images": self.num_images, "top_bins": top}


def fit_color_cooccurrence(
    images: Iterable[ImageLike],
    captions: Iterable[str],
    class_names: Sequence[str],
    bins_per_channel: int = 8,
    smoothing: float = 1.0,
) -> ColorCooccurrence:
    """Count colour bins against the classes the captions name (no masks) and score every (class, bin) pair.

    Args:
        images: Training images (RGB PIL images or `(H, W, 3)` uint8 arrays).
        captions: One caption per image; a class counts as present when :func:`classes_named` finds its name.
        class_names: The classes, in label order.
        bins_per_channel: Colour bins per RGB channel (:func:`quantize_colors`).
        smoothing: Pixels added to every bin's count before the ratio (>= 0; 0 leaves `-inf` where a seen bin never
            occurs in images naming a class).

    Returns:
        The table: `enrichment[c, b] = log((n_cb + s) / (n_c + s K)) - log((n_b + s) / (n + s K))`, with `n_cb` the
        pixels of bin `b` in images naming class `c`, `n_c` all their pixels, `n_b` the pixels of bin `b` in all
        images, `n` all pixels, `K` the number of bins and `s = smoothing`; 0 for bins with `n_b = 0`.
    """
    class_names = tuple(class_names)
    if not class_names:
        raise ValueError("class_names is empty")
    if not smoothing >= 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing!r}")
    num_bins = _check_bins(bins_per_channel) ** 3
    counts = np.zeros((len(class_names) + 1, num_bins), dtype=np.int64)  # last row: every image
    num_images = 0
    captions = iter(captions)
    for image in images:
        caption = next(captions, None)
        if caption is None:
            raise ValueError(f"got more images than captions (caption {num_images} is missing)")
        histogram = np.bincount(quantize_colors(image, bins_per_channel).ravel(), minlength=num_bins)
        counts[-1] += histogram
        for index in classes_named(caption, class_names):
            counts[index] += histogram
        num_images += 1
    if next(captions, None) is not None:
        raise ValueError(f"got more captions than images ({num_images} images)")
    if num_images == 0:
        raise ValueError("no training images")
    smoothed = counts + float(smoothing)
    # (C + 1, K): P(bin | caption names c) per class, and P(bin) in the last row
    with np.errstate(divide="ignore", invalid="ignore"):
        probabilities = smoothed / smoothed.sum(axis=1, keepdims=True)
        enrichment = np.log(probabilities[:-1]) - np.log(probabilities[-1])
    enrichment[:, counts[-1] == 0] = 0.0
    return ColorCooccurrence(class_names, bins_per_channel, enrichment, counts, num_images)


def color_scores(table: ColorCooccurrence, image: ImageLike, cell_size: int = 1) -> np.ndarray:
    """`(C, H, W)` enrichment of every pixel's colour bin, averaged over `cell_size`-pixel squares.

    Args:
        table: From :func:`fit_color_cooccurrence`.
        image: RGB image whose sides are multiples of `cell_size`.
        cell_size: 1 for per-pixel scores; 8 for the 8 px patch grid of the demo model.
    """
    bins = quantize_colors(image, table.bins_per_channel)
    height, width = bins.shape
    if not isinstance(cell_size, int) or cell_size < 1 or height % cell_size or width % cell_size:
        raise ValueError(f"cell_size must be a positive int dividing the image size {height}x{width}, got {cell_size}")
    scores = table.enrichment[:, bins]  # (C, H, W)
    if cell_size == 1:
        return scores
    classes = scores.shape[0]
    # (C, H, W) -> (C, H/s, s, W/s, s) -> mean over each cell -> (C, H/s, W/s) -> repeated back to (C, H, W)
    cells = scores.reshape(classes, height // cell_size, cell_size, width // cell_size, cell_size).mean(axis=(2, 4))
    return cells.repeat(cell_size, axis=1).repeat(cell_size, axis=2)


def predict_labels(scores: np.ndarray, background_threshold: float) -> np.ndarray:
    """`(H, W)` labels from `(C, H, W)` scores: `1 + arg-max`, or 0 (background) where the best score is below the
    threshold.

    Example:
        >>> predict_labels(np.array([[[0.5, 0.1]], [[0.2, 0.05]]]), background_threshold=0.3).tolist()
        [[1, 0]]
    """
    best = scores.max(axis=0)
    return np.where(best < background_threshold, 0, scores.argmax(axis=0) + 1)


def _best(table: ColorCooccurrence, image: ImageLike, cell_size: int) -> tuple[np.ndarray, np.ndarray]:
    scores = color_scores(table, image, cell_size)
    return scores.max(axis=0), scores.argmax(axis=0) + 1


def select_color_threshold(
    table: ColorCooccurrence,
    samples: Iterable[tuple[ImageLike, np.ndarray]],
    cell_size: int = 1,
    candidates: Iterable[float] = COLOR_THRESHOLD_CANDIDATES,
    ignore_index: int = 255,
) -> tuple[float, dict[float, float]]:
    """The background threshold of best mIoU on `samples` (a validation split; never the test split).

    Args:
        table: The fitted baseline.
        samples: `(image, annotation)` pairs.
        cell_size: As in :func:`color_scores`.
        candidates: Thresholds to try.
        ignore_index: Annotation value left out of the score.

    Returns:
        The best threshold (the lowest among ties) and the mIoU of every candidate.
    """
    candidates = [float(t) for t in candidates]
    if not candidates:
        raise ValueError("no threshold candidates")
    matrices = {t: ConfusionMatrix(len(table.class_names) + 1, ignore_index=ignore_index) for t in candidates}
    for image, annotation in samples:
        best, labels = _best(table, image, cell_size)
        for threshold, matrix in matrices.items():
            matrix.update(np.where(best < threshold, 0, labels), annotation)
    scores = {t: float(m.compute()["mean_iou"]) for t, m in matrices.items()}
    chosen = max(scores, key=lambda t: (scores[t], -t))
    return chosen, scores


def evaluate_color_baseline(
    table: ColorCooccurrence,
    samples: Iterable[tuple[ImageLike, np.ndarray]],
    background_threshold: float,
    cell_size: int = 1,
    ignore_index: int = 255,
) -> dict[str, Any]:
    """Score the baseline on `(image, annotation)` pairs.

    Returns:
        `mean_iou`, `per_category_iou` (`{"background": ..., class: ...}`), `overall_accuracy`, `num_images`,
        `cell_size` and `background_threshold`.
    """
    matrix = ConfusionMatrix(len(table.class_names) + 1, ignore_index=ignore_index)
    num_images = 0
    for image, annotation in samples:
        matrix.update(predict_labels(color_scores(table, image, cell_size), background_threshold), annotation)
        num_images += 1
    return {
        **_summary(matrix, ["background", *table.class_names]),
        "num_images": num_images,
        "cell_size": cell_size,
        "background_threshold": float(background_threshold),
    }


def all_background(
    annotations: Iterable[np.ndarray], class_names: Sequence[str], ignore_index: int = 255
) -> dict[str, Any]:
    """The scores of predicting background at every pixel.

    The background IoU is the share of background among the scored pixels; every class present scores 0, so the
    mIoU is that share divided by one plus the number of classes present.

    Example:
        >>> all_background([np.array([[0, 0, 0, 1]])], ["sun"])["mean_iou"]
        0.375
    """
    matrix = ConfusionMatrix(len(class_names) + 1, ignore_index=ignore_index)
    num_images = 0
    for annotation in annotations:
        matrix.update(np.zeros_like(annotation), annotation)
        num_images += 1
    return {**_summary(matrix, ["background", *class_names]), "num_images": num_images}


def _summary(matrix: ConfusionMatrix, labels: list[str]) -> dict[str, Any]:
    metrics = matrix.compute()
    return {
        "mean_iou": float(metrics["mean_iou"]),
        "overall_accuracy": float(metrics["overall_accuracy"]),
        "per_category_iou": {name: float(v) for name, v in zip(labels, metrics["per_category_iou"], strict=True)},
    }
