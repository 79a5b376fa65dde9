"""Drawing segmentation results with PIL: a label palette, colour overlays with a legend, group maps and grids.

Colours: foreground label `j` (0-based among the labels that are not background) gets PASCAL VOC colour `j + 1`, so
a class keeps its colour whether or not a background class is present; background is black and left uncoloured in
overlays.

Example:
    ```python
    >>> import numpy as np, PIL.Image
    >>> image = PIL.Image.new("RGB", (64, 48), (200, 200, 200))
    >>> label_map = np.zeros((48, 64), dtype=np.int64); label_map[:, 32:] = 1
    >>> overlay(image, label_map, ["sky", "tree"]).size[0]
    64

    ```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
from PIL import ImageDraw, ImageFont

__all__ = [
    "BACKGROUND_COLOR",
    "colorize",
    "grid",
    "group_overlay",
    "label_colors",
    "legend",
    "overlay",
    "voc_palette",
]

BACKGROUND_COLOR = (0, 0, 0)


def voc_palette(num_colors: int) -> np.ndarray:
    """The PASCAL VOC colour map: `(num_colors, 3)` uint8, index 0 black, then well-separated colours."""
    colors = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        value, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colors[index] = (red, green, blue)
    return colors


def label_colors(num_labels: int, background_index: int | None = None) -> np.ndarray:
    """`(num_labels, 3)` uint8 colours: VOC colours 1, 2, ... for the labels, black for the background."""
    num_foreground = num_labels - (background_index is not None)
    foreground = voc_palette(num_foreground + 1)[1:]
    if background_index is None:
        return foreground
    return np.insert(foreground, background_index, BACKGROUND_COLOR, axis=0)


def _as_label_map(label_map: Any) -> np.ndarray:
    if hasattr(label_map, "detach"):
        label_map = label_map.detach().cpu().numpy()
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"label_map must have shape (H, W), got {label_map.shape}")
    return label_map.astype(np.int64)


def _resize_map(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an `(H, W)` integer map to PIL `size` `(width, height)`."""
    if label_map.shape[::-1] == tuple(size):
        return label_map
    image = PIL.Image.fromarray(label_map.astype(np.int32))  # mode "I"
    return np.asarray(image.resize(size, PIL.Image.Resampling.NEAREST)).astype(np.int64)


def colorize(label_map: Any, colors: np.ndarray, ignore_index: int | None = 255) -> PIL.Image.Image:
    """An RGB image of `label_map` `(H, W)` with `colors[label]`; `ignore_index` and out-of-range labels are white."""
    label_map = _as_label_map(label_map)
    colors = np.asarray(colors, dtype=np.uint8)
    valid = (label_map >= 0) & (label_map < len(colors))
    if ignore_index is not None:
        valid &= label_map != ignore_index
    # (H, W) -> (H, W, 3)
    rgb = np.full(label_map.shape + (3,), 255, dtype=np.uint8)
    rgb[valid] = colors[label_map[valid]]
    return PIL.Image.fromarray(rgb)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def legend(
    labels: Sequence[str],
    colors: np.ndarray,
    width: int,
    font_size: int = 12,
    background: tuple[int, int, int] = (255, 255, 255),
) -> PIL.Image.Image:
    """A strip `width` pixels wide with a colour swatch and the name of each label, wrapped onto rows."""
    font = _font(font_size)
    measure = ImageDraw.Draw(PIL.Image.new("RGB", (1, 1)))
    pad, swatch = 4, font_size
    entries, rows, x = [], 0, pad
    for label in labels:
        box = measure.textbbox((0, 0), label, font=font)
        entry_width = swatch + pad + (box[2] - box[0]) + 2 * pad
        if x + entry_width > width and x > pad:
            rows, x = rows + 1, pad
        entries.append((x, rows, label))
        x += entry_width
    row_height = swatch + 2 * pad
    strip = PIL.Image.new("RGB", (width, (rows + 1) * row_height), background)
    draw = ImageDraw.Draw(strip)
    for (x, row, label), color in zip(entries, colors, strict=True):
        y = row * row_height + pad
        draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=tuple(int(c) for c in color), outline=(0, 0, 0))
        draw.text((x + swatch + pad, y), label, fill=(0, 0, 0), font=font)
    return strip


def _stack_vertically(top: PIL.Image.Image, bottom: PIL.Image.Image) -> PIL.Image.Image:
    canvas = PIL.Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height), (255, 255, 255))
    canvas.paste(top, (0, 0))
    canvas.paste(bottom, (0, top.height))
    return canvas


def overlay(
    image: PIL.Image.Image,
    label_map: Any,
    labels: Sequence[str],
    alpha: float = 0.5,
    background_index: int | None = None,
    with_legend: bool = True,
    present_only: bool = True,
    font_size: int = 12,
) -> PIL.Image.Image:
    """Blend the label colours over `image`, with an optional legend strip below.

    Args:
        image: The image; `label_map` is resized (nearest) to it if the sizes differ.
        label_map: `(H, W)` indices into `labels` (numpy or torch).
        labels: Names indexed by `label_map` (background included, at `background_index`).
        alpha: Opacity of the colours (background pixels stay uncoloured).
        background_index: Index of the background in `labels`, or None.
        with_legend: Add the legend strip.
        present_only: List only the labels present in the map in the legend.
        font_size: Legend font size.

    Returns:
        An RGB image, `image.width` wide.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    image = image.convert("RGB")
    label_map = _resize_map(_as_label_map(label_map), image.size)
    if label_map.size and (label_map.min() < 0 or label_map.max() >= len(labels)):
        raise ValueError(f"label_map holds values outside [0, {len(labels)}) for {len(labels)} labels")
    colors = label_colors(len(labels), background_index)
    pixels = np.asarray(image, dtype=np.float32)
    painted = colors[label_map].astype(np.float32)
    weight = np.full(label_map.shape + (1,), alpha, dtype=np.float32)
    if background_index is not None:
        weight[label_map == background_index] = 0.0
    blended = PIL.Image.fromarray(np.clip(pixels * (1 - weight) + painted * weight + 0.5, 0, 255).astype(np.uint8))
    if not with_legend:
        return blended
    shown = [i for i in range(len(labels)) if not present_only or (label_map == i).any()]
    strip = legend([labels[i] for i in shown], colors[shown], image.width, font_size=font_size)
    return _stack_vertically(blended, strip)


def group_overlay(image: PIL.Image.Image, group_map: Any, alpha: float = 0.6) -> PIL.Image.Image:
    """Colour each pixel by its arg-max group: `group_map` is `(G, h, w)` (e.g. a `SegmentationResult.group_maps`
    entry) and is resized (nearest) to the image."""
    if hasattr(group_map, "detach"):
        group_map = group_map.detach().float().cpu().numpy()
    group_map = np.asarray(group_map)
    if group_map.ndim != 3:
        raise ValueError(f"group_map must have shape (G, h, w), got {group_map.shape}")
    assignment = group_map.argmax(0)
    names = [f"group {g}" for g in range(group_map.shape[0])]
    return overlay(image, assignment, names, alpha=alpha, with_legend=False)


def grid(
    rows: Sequence[Sequence[PIL.Image.Image | None]],
    column_titles: Sequence[str] | None = None,
    cell_size: tuple[int, int] | None = None,
    pad: int = 4,
    font_size: int = 12,
    background: tuple[int, int, int] = (255, 255, 255),
) -> PIL.Image.Image:
    """Tile images into a grid, e.g. rows of image | ground truth | prediction.

    Args:
        rows: Rows of images (None leaves a cell empty); each is fitted into the cell keeping its aspect ratio.
        column_titles: Optional titles above the columns.
        cell_size: `(width, height)` of a cell (default: the first image's size).
        pad: Pixels between cells.
        font_size: Title font size.
        background: Canvas colour.
    """
    if not rows or not any(rows):
        raise ValueError("grid needs at least one image")
    first = next(image for row in rows for image in row if image is not None)
    cell_w, cell_h = cell_size or first.size
    num_cols = max(len(row) for row in rows)
    title_h = font_size + 2 * pad if column_titles else 0
    canvas = PIL.Image.new(
        "RGB", (num_cols * (cell_w + pad) + pad, title_h + len(rows) * (cell_h + pad) + pad), background
    )
    draw = ImageDraw.Draw(canvas)
    if column_titles:
        font = _font(font_size)
        for col, title in enumerate(column_titles):
            draw.text((pad + col * (cell_w + pad), pad), title, fill=(0, 0, 0), font=font)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            if image is None:
                continue
            image = image.convert("RGB")
            scale = min(cell_w / image.width, cell_h / image.height)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            fitted = image.resize(size, PIL.Image.Resampling.NEAREST if scale >= 1 else PIL.Image.Resampling.BILINEAR)
            canvas.paste(fitted, (pad + c * (cell_w + pad), title_h + pad + r * (cell_h + pad)))
    return canvas
