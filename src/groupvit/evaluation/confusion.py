"""Streaming confusion matrix for semantic-segmentation mIoU.

This is the single implementation of mean IoU in the package. It reproduces the semantics of the Hub metric
``evaluate-metric/mean_iou`` (itself a port of MMSegmentation's ``mean_iou``) but accumulates a
``(num_labels, num_labels)`` integer confusion matrix instead of keeping every segmentation map around, so that

* batches can be added one at a time (:meth:`ConfusionMatrix.update`),
* accumulators can be merged (:meth:`ConfusionMatrix.merge`), and
* matrices from several processes can be summed after an ``accelerate`` gather / reduce
  (:meth:`ConfusionMatrix.to_tensor`, :meth:`ConfusionMatrix.add_matrix`, :meth:`ConfusionMatrix.synchronize`).

Rows index the (possibly remapped) reference label, columns the predicted label. Pixels whose reference equals
``ignore_index`` are dropped before counting. Only numpy is needed; torch tensors are accepted duck-typed (they are
moved to CPU and converted with ``.numpy()``), so importing this module does not import torch.

Differences from the Hub script, all on inputs that the Hub script handles silently and arguably wrongly:

* a reference label outside ``[0, num_labels)`` that is not ``ignore_index`` raises :class:`ValueError` (the Hub
  script drops it from the histograms),
* a predicted label outside ``[0, num_labels)`` at a non-ignored pixel raises :class:`ValueError` (the Hub script
  counts the pixel in the reference histogram only),
* non-integral float inputs raise :class:`ValueError`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["METRIC_KEYS", "ConfusionMatrix", "mean_iou", "metrics_from_confusion_matrix"]

#: Keys of the dictionary returned by :meth:`ConfusionMatrix.compute` (same as ``evaluate-metric/mean_iou``).
METRIC_KEYS: tuple[str, ...] = (
    "mean_iou",
    "mean_accuracy",
    "overall_accuracy",
    "per_category_iou",
    "per_category_accuracy",
)


def _to_numpy(x: Any) -> np.ndarray:
    """Converts a numpy array, torch tensor, PIL image or (nested) list to a numpy array without copying if possible.

    Args:
        x: Array-like input.

    Returns:
        A numpy array view or copy of ``x``.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):  # torch.Tensor, duck-typed
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _as_int64(x: np.ndarray, name: str) -> np.ndarray:
    """Checks that ``x`` holds integral values and returns it as ``int64``.

    Args:
        x: Input array.
        name: Name used in error messages (``"predictions"`` or ``"references"``).

    Returns:
        ``x`` as an ``int64`` array (a new array unless ``x`` already is ``int64``).

    Raises:
        ValueError: If ``x`` has a non-numeric dtype or holds non-integral or non-finite values.
    """
    if x.dtype == np.int64:
        return x
    if x.dtype.kind in "biu":
        return x.astype(np.int64)
    if x.dtype.kind == "f":
        if x.size and not (np.isfinite(x).all() and np.array_equal(x, np.floor(x))):
            raise ValueError(f"{name} must hold integer label ids, got non-integral values of dtype {x.dtype}")
        return x.astype(np.int64)
    raise ValueError(f"{name} must be an integer array, got dtype {x.dtype}")


def _is_single_map(x: Any) -> bool:
    """Tells whether ``x`` is one array (of any rank) rather than a sequence of per-image maps.

    Lists and tuples are treated as sequences of maps unless their first element is a scalar. A nested list of
    rows is therefore split into rows, which yields the same counts as treating it as one map.
    """
    if not isinstance(x, (list, tuple)):
        return True
    return len(x) == 0 or np.ndim(_to_numpy(x[0])) == 0


def _check_range(values: np.ndarray, num_labels: int, name: str, index: int | None) -> None:
    """Raises if any of ``values`` (already ignore-filtered) is outside ``[0, num_labels)``."""
    if values.size == 0:
        return
    low, high = values.min(), values.max()
    if low >= 0 and high < num_labels:
        return
    bad = np.unique(values[(values < 0) | (values >= num_labels)])
    where = "" if index is None else f" (map {index})"
    shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if bad.size > 10 else "")
    raise ValueError(
        f"{name}{where} contain label value {int(bad[0])} outside [0, num_labels={num_labels}) at non-ignored "
        f"pixels; offending values: {shown}"
    )


def _nan_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den`` with NaN (and no warning) where ``den == 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.true_divide(num, den)


def _nanmean(x: np.ndarray) -> np.float64:
    """``np.nanmean`` that returns NaN without a warning when all entries are NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.float64(np.nanmean(x)) if x.size else np.float64(np.nan)


def metrics_from_confusion_matrix(matrix: Any, nan_to_num: float | None = None) -> dict[str, Any]:
    """Computes the ``evaluate-metric/mean_iou`` outputs from a confusion matrix.

    For class ``c`` with intersection ``I = M[c, c]``, reference area ``R = sum(M[c, :])`` and predicted area
    ``P = sum(M[:, c])``: ``IoU = I / (P + R - I)`` and ``accuracy = I / R``. A class that appears in neither
    prediction nor reference gets NaN IoU; a class absent from the reference gets NaN accuracy (and IoU 0 if it was
    predicted). Means are NaN-means. ``overall_accuracy = trace(M) / sum(M)``.

    Args:
        matrix: ``(num_labels, num_labels)`` array-like of counts, rows = reference, columns = prediction.
        nan_to_num: If not ``None``, NaNs in every output are replaced by this value (as in the Hub metric).

    Returns:
        Dict with ``mean_iou``, ``mean_accuracy``, ``overall_accuracy`` (``np.float64``) and ``per_category_iou``,
        ``per_category_accuracy`` (``np.ndarray`` of shape ``(num_labels,)``, ``float64``).

    Raises:
        ValueError: If ``matrix`` is not square and 2-D.
    """
    m = _to_numpy(matrix).astype(np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square 2-D, got shape {tuple(m.shape)}")
    intersect = np.diag(m)
    area_label = m.sum(axis=1)
    area_pred = m.sum(axis=0)
    union = area_pred + area_label - intersect

    iou = _nan_div(intersect, union)
    acc = _nan_div(intersect, area_label)
    metrics: dict[str, Any] = {
        "mean_iou": _nanmean(iou),
        "mean_accuracy": _nanmean(acc),
        "overall_accuracy": np.float64(_nan_div(intersect.sum(), area_label.sum())),
        "per_category_iou": iou,
        "per_category_accuracy": acc,
    }
    if nan_to_num is not None:
        metrics = {key: np.nan_to_num(value, nan=nan_to_num) for key, value in metrics.items()}
    return metrics


class ConfusionMatrix:
    """Streaming ``num_labels x num_labels`` confusion matrix with ``evaluate``-compatible mIoU outputs.

    Example:
        >>> cm = ConfusionMatrix(num_labels=3)
        >>> _ = cm.update(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [1, 255]]))
        >>> cm.compute()["per_category_iou"]
        array([1. , 0.5, 0. ])

    Distributed use with ``accelerate`` (every process holds its own accumulator)::

        cm.synchronize(accelerator.gather)  # or: cm.add_matrix(...) on the gathered tensor

    Args:
        num_labels: Number of classes.
        ignore_index: Reference value whose pixels are excluded. ``None`` disables ignoring.
        reduce_labels: Whether to reduce every reference label by one and map ``0`` (background) to ``255``, as
            the Hub metric does for ADE20k-style annotations. Predictions are not touched.
        label_map: Optional ``{old_id: new_id}`` remapping applied to references before ``reduce_labels``; all
            lookups use the original labels.

    Attributes:
        matrix: ``int64`` numpy array of shape ``(num_labels, num_labels)``; ``matrix[r, p]`` counts pixels with
            reference ``r`` and prediction ``p``.
    """

    def __init__(
        self,
        num_labels: int,
        ignore_index: int | None = 255,
        reduce_labels: bool = False,
        label_map: Mapping[int, int] | None = None,
    ) -> None:
        if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
        self.num_labels = int(num_labels)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.reduce_labels = bool(reduce_labels)
        self.label_map = dict(label_map) if label_map else None
        self.matrix = np.zeros((self.num_labels, self.num_labels), dtype=np.int64)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_labels={self.num_labels}, ignore_index={self.ignore_index}, "
            f"reduce_labels={self.reduce_labels}, pixels={int(self.matrix.sum())})"
        )

    @classmethod
    def from_matrix(cls, matrix: Any, **kwargs: Any) -> ConfusionMatrix:
        """Builds an accumulator holding the given counts.

        Args:
            matrix: Square array-like of counts (numpy array or torch tensor).
            **kwargs: Other constructor arguments (``ignore_index``, ``reduce_labels``, ``label_map``).

        Returns:
            A new :class:`ConfusionMatrix` with ``num_labels = matrix.shape[0]``.
        """
        m = _to_numpy(matrix)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"confusion matrix must be square 2-D, got shape {tuple(m.shape)}")
        out = cls(num_labels=m.shape[0], **kwargs)
        out.add_matrix(m)
        return out

    def reset(self) -> None:
        """Zeroes the counts."""
        self.matrix[...] = 0

    def _prepare_references(self, ref: np.ndarray) -> np.ndarray:
        """Applies ``label_map`` then ``reduce_labels`` to an ``int64`` reference map (copying if needed)."""
        if self.label_map:
            original = ref
            ref = ref.copy()
            for old_id, new_id in self.label_map.items():
                ref[original == old_id] = new_id
        if self.reduce_labels:
            # Same arithmetic as the Hub metric: 0 -> 255, k -> k - 1, and 255 stays 255.
            ref = np.where(ref == 0, 255, ref - 1)
            ref[ref == 254] = 255
        return ref

    def _count(self, pred: Any, ref: Any, index: int | None) -> np.ndarray:
        """Returns the confusion counts of one prediction/reference pair, validating it."""
        pred_np = _to_numpy(pred)
        ref_np = _to_numpy(ref)
        if pred_np.shape != ref_np.shape:
            where = "" if index is None else f" for map {index}"
            raise ValueError(
                f"Shape mismatch{where}: predictions have shape {tuple(pred_np.shape)} but references have shape "
                f"{tuple(ref_np.shape)}"
            )
        pred_np = _as_int64(pred_np, "predictions").ravel()
        ref_np = self._prepare_references(_as_int64(ref_np, "references").ravel())
        if self.ignore_index is not None:
            keep = ref_np != self.ignore_index
            if not keep.all():
                pred_np, ref_np = pred_np[keep], ref_np[keep]
        k = self.num_labels
        _check_range(ref_np, k, "references", index)
        _check_range(pred_np, k, "predictions", index)
        return np.bincount(k * ref_np + pred_np, minlength=k * k).reshape(k, k)

    def update(self, predictions: Any, references: Any) -> ConfusionMatrix:
        """Adds one batch of segmentation maps.

        Args:
            predictions: Predicted label maps: one array/tensor of any shape (e.g. ``(H, W)`` or ``(B, H, W)``), or a
                list/tuple of such arrays (e.g. per-image maps of different sizes).
            references: Reference label maps, with the same structure and shapes as ``predictions``.

        Returns:
            ``self``, to allow chaining.

        Raises:
            ValueError: On a shape or length mismatch (both are named), or a label outside ``[0, num_labels)`` at a
                non-ignored pixel (the offending value is named). The accumulator is unchanged on error.
        """
        pred_single, ref_single = _is_single_map(predictions), _is_single_map(references)
        if pred_single != ref_single:
            # One side is a list, the other one array: only valid if the list stacks into one array.
            try:
                if pred_single:
                    references, ref_single = np.asarray(references), True
                else:
                    predictions, pred_single = np.asarray(predictions), True
            except ValueError:
                raise ValueError(
                    "predictions and references must both be single arrays or both be sequences of maps; got "
                    f"{type(predictions).__name__} and {type(references).__name__}"
                ) from None
        if pred_single:
            counts = self._count(predictions, references, None)
        else:
            preds, refs = list(predictions), list(references)
            if len(preds) != len(refs):
                raise ValueError(f"Got {len(preds)} prediction maps but {len(refs)} reference maps")
            counts = np.zeros_like(self.matrix)
            for i, (pred, ref) in enumerate(zip(preds, refs, strict=True)):
                counts += self._count(pred, ref, i)
        self.matrix += counts
        return self

    def add_matrix(self, matrix: Any) -> ConfusionMatrix:
        """Adds raw counts, e.g. the result of ``accelerator.gather`` or ``accelerator.reduce`` on :meth:`to_tensor`.

        Args:
            matrix: ``(K, K)``, stacked ``(P, K, K)`` or concatenated ``(P * K, K)`` counts (``K = num_labels``);
                stacked/concatenated matrices are summed over processes.

        Returns:
            ``self``.

        Raises:
            ValueError: If the shape is not one of the above.
        """
        m = _to_numpy(matrix)
        k = self.num_labels
        if m.ndim < 2 or m.shape[-1] != k or m.size % (k * k) != 0 or (m.ndim == 2 and m.shape[0] % k != 0):
            raise ValueError(f"expected counts of shape ({k}, {k}), (P, {k}, {k}) or (P*{k}, {k}); got {m.shape}")
        self.matrix += _as_int64(m, "matrix").reshape(-1, k, k).sum(axis=0)
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Adds the counts of another accumulator in place.

        Args:
            other: Accumulator with the same ``num_labels``.

        Returns:
            ``self``.

        Raises:
            ValueError: If ``num_labels`` differ.
        """
        if other.num_labels != self.num_labels:
            raise ValueError(f"cannot merge num_labels={other.num_labels} into num_labels={self.num_labels}")
        self.matrix += other.matrix
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        out = ConfusionMatrix(self.num_labels, self.ignore_index, self.reduce_labels, self.label_map)
        return out.merge(self).merge(other)

    def to_tensor(self, device: Any = None) -> Any:
        """Returns the counts as an ``int64`` torch tensor (a copy), ready for ``accelerator.gather``/``reduce``.

        Args:
            device: Optional torch device (e.g. ``accelerator.device``; NCCL needs a CUDA tensor).

        Returns:
            ``torch.Tensor`` of shape ``(num_labels, num_labels)``.
        """
        import torch

        tensor = torch.from_numpy(self.matrix.copy())
        return tensor if device is None else tensor.to(device)

    def synchronize(self, gather: Callable[[Any], Any], device: Any = None) -> ConfusionMatrix:
        """Returns a new accumulator holding the counts of all processes.

        Args:
            gather: Collective that concatenates a tensor across processes along dim 0, e.g.
                ``accelerator.gather`` (``accelerator.reduce`` with ``reduction="sum"`` works too).
            device: Device for the tensor handed to ``gather``.

        Returns:
            A new :class:`ConfusionMatrix` (same settings) with the summed counts; ``self`` is not modified, so
            calling this twice does not double count.
        """
        out = ConfusionMatrix(self.num_labels, self.ignore_index, self.reduce_labels, self.label_map)
        return out.add_matrix(gather(self.to_tensor(device)))

    def compute(self, nan_to_num: float | None = None) -> dict[str, Any]:
        """Computes the metrics of the accumulated counts.

        Args:
            nan_to_num: If not ``None``, NaNs are replaced by this value.

        Returns:
            See :func:`metrics_from_confusion_matrix`.
        """
        return metrics_from_confusion_matrix(self.matrix, nan_to_num=nan_to_num)


def mean_iou(
    predictions: Iterable[Any] | Any,
    references: Iterable[Any] | Any,
    num_labels: int,
    ignore_index: int | None,
    nan_to_num: float | None = None,
    label_map: Mapping[int, int] | None = None,
    reduce_labels: bool = False,
) -> dict[str, Any]:
    """One-shot mIoU with the signature and semantics of ``evaluate-metric/mean_iou``'s ``compute``.

    Args:
        predictions: Predicted segmentation maps (list of ``(H, W)`` arrays, possibly of different sizes, or one
            array).
        references: Reference segmentation maps, same structure as ``predictions``.
        num_labels: Number of classes.
        ignore_index: Reference value excluded from evaluation (``None``: nothing ignored).
        nan_to_num: If not ``None``, NaNs in the outputs are replaced by this value.
        label_map: Optional ``{old_id: new_id}`` remapping of reference labels.
        reduce_labels: Whether to reduce reference labels by one, mapping background ``0`` to ``255``.

    Returns:
        Dict with the keys of :data:`METRIC_KEYS`.
    """
    cm = ConfusionMatrix(num_labels, ignore_index=ignore_index, reduce_labels=reduce_labels, label_map=label_map)
    return cm.update(predictions, references).compute(nan_to_num=nan_to_num)
