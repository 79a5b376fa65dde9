"""Image geometry of the protocol: the short-side resize, mmseg's sliding windows, crops fitted to the patch size.

Example:
    ```python
    >>> rescaled_size(480, 640, short_side=448, max_long_side=2048)
    (448, 597)
    >>> sliding_windows(448, 597, window=448, stride=224)
    [(0, 448, 0, 448), (0, 448, 149, 597)]

    ```
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from groupvit.segmentation.protocols import SegmentationOptions

__all__ = ["expected_windows", "fit_to_patches", "rescaled_size", "sliding_windows"]


def rescaled_size(height: int, width: int, short_side: int | None, max_long_side: int | None) -> tuple[int, int]:
    """`(height, width)` after a keep-ratio resize to `short_side`, with the long side capped at `max_long_side`.

    Rounds as `mmcv.imrescale` does (`int(x * scale + 0.5)`).
    """
    # ours, not the image processor's `size={"shortest_edge": N}`: that truncates the long side where mmcv rounds, and
    # caps the long side (`max_size`) by truncating the short side too, where mmseg's rule caps it at 2048 by rounding
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


def fit_to_patches(pixel_values: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """Resize `(batch, 3, h, w)` bilinearly so that both sides are (nearest, at least one) multiples of the patch."""
    height, width = pixel_values.shape[-2:]
    target = (
        max(patch_size[0], round(height / patch_size[0]) * patch_size[0]),
        max(patch_size[1], round(width / patch_size[1]) * patch_size[1]),
    )
    if target == (height, width):
        return pixel_values
    return F.interpolate(pixel_values, size=target, mode="bilinear", align_corners=False)


def expected_windows(height: int, width: int, options: SegmentationOptions) -> int:
    """Number of model windows for an image of `height` x `width` (before the short-side resize)."""
    height, width = rescaled_size(height, width, options.short_side, options.max_long_side)
    if options.mode == "whole":
        return 1
    return len(sliding_windows(height, width, options.window, options.window_stride))
