"""Grouping diagnostics: how many groups an image uses, and the oracles that separate grouping from labelling errors.

* :func:`count_groups`: groups that win at least one patch, per stage (the statistic training logs, see
  :func:`groupvit.segmentation.scoring.count_used_groups`).
* :func:`region_oracle`: every region labelled with its majority ground-truth class.
* :func:`grouping_diagnostics`: for one image, the group oracle (the final groups labelled by the ground truth), the
  patch oracle (the resolution ceiling of the patch grid) and how many foreground groups the model labels right.
* :class:`GroupingDiagnostics`: the three summed over a dataset (and across processes), as
  :func:`groupvit.evaluation.evaluate.evaluate_segmentation` reports them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from groupvit.evaluation.confusion import ConfusionMatrix
from groupvit.segmentation.scoring import count_used_groups

__all__ = ["GroupingDiagnostics", "count_groups", "grouping_diagnostics", "region_oracle"]


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


@dataclass
class GroupingDiagnostics:
    """Grouping statistics summed over the images of an evaluation.

    Args:
        num_classes: `C + 1` (background first).
        ignore_index: Annotation value that is not scored.
    """

    num_classes: int
    ignore_index: int = 255
    groups_used: list[list[int]] = field(default_factory=list)
    group_oracle: ConfusionMatrix = field(init=False)
    patch_oracle: ConfusionMatrix = field(init=False)
    label_hits: int = 0
    labelled_groups: int = 0
    diagnosed: int = 0
    num_images: int = 0

    def __post_init__(self) -> None:
        self.group_oracle = ConfusionMatrix(self.num_classes, ignore_index=self.ignore_index)
        self.patch_oracle = ConfusionMatrix(self.num_classes, ignore_index=self.ignore_index)

    def update(
        self, annotation: np.ndarray, group_maps: tuple[torch.Tensor, ...] | None, label_logits: torch.Tensor
    ) -> None:
        """Add one image: its annotation, its segmentation's `group_maps` (None when it took several windows) and
        `label_logits` `(C + 1, H, W)` with the background first."""
        self.num_images += 1
        self.groups_used.append(count_groups(group_maps))
        if not group_maps:
            return
        oracle, ceiling, hits, total = grouping_diagnostics(annotation, group_maps[-1], label_logits, self.num_classes)
        self.group_oracle.update(oracle, annotation)
        self.patch_oracle.update(ceiling, annotation)
        self.label_hits, self.labelled_groups = self.label_hits + hits, self.labelled_groups + total
        self.diagnosed += 1

    def synchronize(self, accelerator: Any) -> GroupingDiagnostics:
        """The sums over all processes (`accelerate.Accelerator`); `groups_used` stays this process's."""
        counts = [self.label_hits, self.labelled_groups, self.diagnosed, self.num_images]
        totals = accelerator.reduce(torch.tensor(counts, device=accelerator.device), reduction="sum")
        label_hits, labelled_groups, diagnosed, num_images = (int(v) for v in totals.tolist())
        synchronized = dataclasses.replace(
            self, label_hits=label_hits, labelled_groups=labelled_groups, diagnosed=diagnosed, num_images=num_images
        )
        synchronized.group_oracle = self.group_oracle.synchronize(accelerator.gather, accelerator.device)
        synchronized.patch_oracle = self.patch_oracle.synchronize(accelerator.gather, accelerator.device)
        return synchronized

    def summary(self) -> dict[str, Any]:
        """`groups_used` (mean per stage), and, when every image took one window, `oracle_group_miou`,
        `patch_oracle_miou` and `group_label_accuracy` (None otherwise)."""
        diagnose = self.diagnosed == self.num_images and self.diagnosed > 0
        used = np.asarray([g for g in self.groups_used if g], dtype=np.float64)
        return {
            "groups_used": used.mean(axis=0).tolist() if used.size else [],
            "oracle_group_miou": float(self.group_oracle.compute()["mean_iou"]) if diagnose else None,
            "patch_oracle_miou": float(self.patch_oracle.compute()["mean_iou"]) if diagnose else None,
            "group_label_accuracy": self.label_hits / max(1, self.labelled_groups) if diagnose else None,
        }
