"""Semantic-segmentation metrics: a streaming confusion matrix and an offline ``evaluate`` mean-IoU module.

* :class:`ConfusionMatrix` is the implementation: feed it batches, merge/gather it across processes, ``compute()``.
* :func:`load_mean_iou` returns the same computation as an ``evaluate.Metric`` (a drop-in for the Hub's
  ``evaluate-metric/mean_iou``) loaded from the script shipped inside this package, so no network is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from groupvit.evaluation.confusion import METRIC_KEYS, ConfusionMatrix, mean_iou, metrics_from_confusion_matrix

__all__ = [
    "MEAN_IOU_DIR",
    "MEAN_IOU_SCRIPT",
    "METRIC_KEYS",
    "ConfusionMatrix",
    "load_mean_iou",
    "mean_iou",
    "metrics_from_confusion_matrix",
]

#: Directory of the ``evaluate`` module script; ``evaluate.load(MEAN_IOU_DIR)`` works as well.
MEAN_IOU_DIR: str = str(Path(__file__).resolve().parent / "mean_iou")
#: Path of the ``evaluate`` module script (its file name must match its folder name for ``evaluate.load``).
MEAN_IOU_SCRIPT: str = str(Path(MEAN_IOU_DIR) / "mean_iou.py")


def load_mean_iou(**kwargs: Any) -> Any:
    """Loads the packaged mean-IoU ``evaluate`` module from its local script (works offline).

    ``evaluate`` copies the script into ``HF_MODULES_CACHE`` (default ``~/.cache/huggingface/modules``) and imports
    it from there; the script imports :mod:`groupvit.evaluation.confusion` from the installed package. No Hub access
    happens, so ``HF_HUB_OFFLINE=1`` / ``HF_EVALUATE_OFFLINE=1`` are fine.

    Args:
        **kwargs: Forwarded to :func:`evaluate.load` (e.g. ``keep_in_memory=True``, ``cache_dir``,
            ``experiment_id``, ``num_process``/``process_id``).

    Returns:
        An ``evaluate.Metric`` whose ``compute(predictions=..., references=..., num_labels=..., ignore_index=...,
        nan_to_num=None, label_map=None, reduce_labels=False)`` returns the keys of :data:`METRIC_KEYS`.
    """
    import evaluate

    return evaluate.load(MEAN_IOU_SCRIPT, **kwargs)
