"""Grouping diagnostics: how many groups an image uses, and the oracles that separate grouping from labelling errors.

* :func:`count_groups`: groups that win at least one patch, per stage (the statistic training logs, see
  :func:`groupvit.segmentation.scoring.count_used_groups`).
* :func:`region_oracle`: every region labelled with its majority ground-truth class.
* :func:`grouping_diagnostics`: for one image, the group oracle (the final groups labelled by the ground truth), the
  patch oracle (the resolution ceiling of the patch grid) and how many foreground groups the model labels right.
"""

from __future__ import annotations

import numpy as np
import torch

from groupvit.segmentation.scoring import count_used_groups

__all__ = ["count_groups", "grouping_diagnostics", "region_oracle"]


def count_groups(group_maps: tuple[torch.Tensor, ...] | None) -> list[int]:
    """Groups that win at least one patch of the grid, per stage, for one image's `(G, h, w)` maps."""
    if not group_maps:
        return []
    # (G, h, w) -> (1, G, h, w): a batch of one image
    return [int(count) for count in count_used_groups([m[None] for m in group_maps])]


def region_oracle(
    annotation: np.ndarray, regions: np.ndarray, num_classes: int, ignore_index: int = 255
) -> np.ndarray:
    """Label every region of `regions` (`(H, W)` ints) with its most frequent annotated class; ignored pixels don't
    vote.

    Example:
        >>> region_oracle(np.array([[0, 1], [1, 1]]), np.array([[0, 0], [1, 1]]), 2).tolist()
        [[0, 0], [1, 1]]
    """
    valid = annotation != ignore_index
    votes = np.zeros((int(regions.max()) + 1, num_classes), dtype=np.int64)
    np.add.at(votes, (regions[valid], annotation[valid]), 1)
    return votes.argmax(1)[regions]


def grouping_diagnostics(
    annotation: np.ndarray, group_map: torch.Tensor, label_logits: torch.Tensor, num_classes: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Upper bounds that separate grouping errors from labelling errors, for one image.

    Args:
        annotation: `(H, W)` ground truth (0 background, 1..C classes, 255 ignore).
        group_map: `(G, h, w)` soft pixel->group map of the last stage on the model's patch grid.
        label_logits: `(C + 1, H, W)` logits with the background first (as `evaluate_segmentation` predicts).
        num_classes: `C + 1`.

    Returns:
        `group_oracle` (every final group labelled with its majority ground-truth class), `patch_oracle` (every patch
        of the grid labelled with its majority class: the resolution ceiling), and over the groups whose majority is a
        foreground class, how many the model labels with that class and how many there are.
    """
    height, width = annotation.shape
    grid_h, grid_w = group_map.shape[-2:]
    # (G, h, w) -> (G, H, W), resized as the segmenter does, then each pixel's arg-max group
    pixel_groups = (
        torch.nn.functional.interpolate(
            group_map[None].float(), size=(height, width), mode="bilinear", align_corners=False
        )[0]
        .argmax(0)
        .numpy()
    )
    rows = np.arange(height) * grid_h // height
    cols = np.arange(width) * grid_w // width
    patches = rows[:, None] * grid_w + cols[None, :]
    group_oracle = region_oracle(annotation, pixel_groups, num_classes)
    # the model's foreground label per pixel, then per group the label most of its pixels get
    model_labels = label_logits[1:].argmax(0).numpy() + 1
    hits = total = 0
    for group in np.unique(pixel_groups):
        inside = pixel_groups == group
        majority = int(group_oracle[inside][0])
        if majority in (0, 255):
            continue
        total += 1
        hits += int(np.bincount(model_labels[inside]).argmax() == majority)
    return group_oracle, region_oracle(annotation, patches, num_classes), hits, total
