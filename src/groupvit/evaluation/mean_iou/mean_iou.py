# Copyright 2022 The HuggingFace Evaluate Authors and the GroupViT integration authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Mean IoU (Intersection-over-Union) as an offline-loadable ``evaluate`` module.

Drop-in replacement for the Hub's ``evaluate-metric/mean_iou`` (same inputs, arguments and outputs) that loads from
a local path, e.g. ``evaluate.load(groupvit.evaluation.MEAN_IOU_SCRIPT)`` or ``groupvit.evaluation.load_mean_iou()``.

``evaluate.load`` copies this file alone into its modules cache (``HF_MODULES_CACHE``) and imports it from there,
so relative imports cannot work. The computation therefore lives in the installed package
(:mod:`groupvit.evaluation.confusion`) and is imported absolutely; keep every import on its own line, since
``evaluate`` checks the importability of the first module name of each ``import`` line with a regex.
"""

import warnings
from typing import Any

import datasets
import evaluate

from groupvit.evaluation.confusion import mean_iou

_DESCRIPTION = """
IoU is the area of overlap between the predicted segmentation and the ground truth divided by the area of union
between the predicted segmentation and the ground truth. For binary (two classes) or multi-class segmentation,
the mean IoU of the image is calculated by taking the IoU of each class and averaging them. This implementation
accumulates a confusion matrix (``groupvit.evaluation.ConfusionMatrix``) and matches ``evaluate-metric/mean_iou``.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`List[ndarray]`):
        List of predicted segmentation maps, each of shape (height, width). Each segmentation map can be of a
        different size.
    references (`List[ndarray]`):
        List of ground truth segmentation maps, each of shape (height, width). Each segmentation map can be of a
        different size.
    num_labels (`int`):
        Number of classes (categories).
    ignore_index (`int`):
        Index that will be ignored during evaluation.
    nan_to_num (`int`, *optional*):
        If specified, NaN values will be replaced by the number defined by the user.
    label_map (`dict`, *optional*):
        If specified, dictionary mapping old label indices to new label indices. All mappings use the original
        labels.
    reduce_labels (`bool`, *optional*, defaults to `False`):
        Whether or not to reduce all label values of segmentation maps by 1. Usually used for datasets where 0 is
        used for background, and background itself is not included in all classes of a dataset (e.g. ADE20k). The
        background label will be replaced by 255.

Returns:
    `Dict[str, float | ndarray]` comprising various elements:
    - *mean_iou* (`float`): Mean Intersection-over-Union (IoU averaged over all categories).
    - *mean_accuracy* (`float`): Mean accuracy (averaged over all categories).
    - *overall_accuracy* (`float`): Overall accuracy on all images.
    - *per_category_iou* (`ndarray` of shape `(num_labels,)`): Per category IoU.
    - *per_category_accuracy* (`ndarray` of shape `(num_labels,)`): Per category accuracy.

Unlike the Hub script, labels outside [0, num_labels) at non-ignored pixels raise a ValueError instead of being
silently dropped.

Examples:

    >>> import numpy as np
    >>> from groupvit.evaluation import load_mean_iou
    >>> metric = load_mean_iou()
    >>> predicted = [np.array([[1, 2], [3, 4], [5, 255]]), np.array([[2, 7], [9, 2], [3, 6]])]
    >>> ground_truth = [np.array([[0, 3], [5, 4], [6, 255]]), np.array([[1, 7], [9, 2], [3, 6]])]
    >>> results = metric.compute(predictions=predicted, references=ground_truth, num_labels=10, ignore_index=255)
"""

_CITATION = """\
@software{MMSegmentation_Contributors_OpenMMLab_Semantic_Segmentation_2020,
author = {{MMSegmentation Contributors}},
license = {Apache-2.0},
month = {7},
title = {{OpenMMLab Semantic Segmentation Toolbox and Benchmark}},
url = {https://github.com/open-mmlab/mmsegmentation},
year = {2020}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    """``evaluate`` metric computing mean IoU through :class:`groupvit.evaluation.confusion.ConfusionMatrix`."""

    def _info(self) -> evaluate.MetricInfo:
        """Declares the inputs: one label map per example, stored as an image like the Hub metric does."""
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Image(),
                    "references": datasets.Image(),
                }
            ),
            reference_urls=[
                "https://github.com/open-mmlab/mmsegmentation/blob/71c201b1813267d78764f306a297ca717827c4bf/"
                "mmseg/core/evaluation/metrics.py",
                "https://huggingface.co/spaces/evaluate-metric/mean_iou",
            ],
        )

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
        """Same as :meth:`evaluate.Metric.add_batch`, without the harmless int64 -> int32 image downcast warning."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Downcasting array dtype", category=UserWarning)
            super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
        """Same as :meth:`evaluate.Metric.add`, without the harmless int64 -> int32 image downcast warning."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Downcasting array dtype", category=UserWarning)
            super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(
        self,
        predictions: list[Any],
        references: list[Any],
        num_labels: int,
        ignore_index: int | None,
        nan_to_num: float | None = None,
        label_map: dict[int, int] | None = None,
        reduce_labels: bool = False,
    ) -> dict[str, Any]:
        """Computes mIoU over all added segmentation maps.

        Args:
            predictions: Decoded predicted maps (PIL images or arrays).
            references: Decoded reference maps.
            num_labels: Number of classes.
            ignore_index: Reference value excluded from evaluation.
            nan_to_num: If not ``None``, NaNs are replaced by this value.
            label_map: Optional ``{old_id: new_id}`` remapping of reference labels.
            reduce_labels: Whether to reduce reference labels by one (background ``0`` becomes ``255``).

        Returns:
            Dict with ``mean_iou``, ``mean_accuracy``, ``overall_accuracy``, ``per_category_iou`` and
            ``per_category_accuracy``.
        """
        return mean_iou(
            predictions=list(predictions),
            references=list(references),
            num_labels=num_labels,
            ignore_index=ignore_index,
            nan_to_num=nan_to_num,
            label_map=label_map,
            reduce_labels=reduce_labels,
        )
