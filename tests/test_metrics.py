"""Tests for `groupvit.evaluation`: the streaming confusion matrix and the offline `evaluate` mean-IoU module."""

from __future__ import annotations

import importlib.resources
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from groupvit.evaluation import (
    MEAN_IOU_DIR,
    MEAN_IOU_SCRIPT,
    METRIC_KEYS,
    ConfusionMatrix,
    mean_iou,
    metrics_from_confusion_matrix,
)

# Worked example 1 (2x3, num_labels=3). (reference, prediction) pairs in raster order:
# (0,0) (1,0) (1,1) | (1,1) (2,2) (0,2)
PRED_2X3 = np.array([[0, 0, 1], [1, 2, 2]])
REF_2X3 = np.array([[0, 1, 1], [1, 2, 0]])
# Confusion matrix, rows = reference, columns = prediction.
MATRIX_2X3 = np.array(
    [
        [1, 0, 1],  # ref 0: once predicted 0, once predicted 2
        [1, 2, 0],  # ref 1: once predicted 0, twice predicted 1
        [0, 0, 1],  # ref 2: once predicted 2
    ]
)
# intersection = diag = [1, 2, 1]; reference area (rows) = [2, 3, 1]; predicted area (cols) = [2, 2, 2]
# union = pred + ref - inter = [2+2-1, 2+3-2, 2+1-1] = [3, 3, 2]
IOU_2X3 = np.array([1 / 3, 2 / 3, 1 / 2])  # mean = (1/3 + 2/3 + 1/2) / 3 = 0.5
ACC_2X3 = np.array([1 / 2, 2 / 3, 1 / 1])  # mean = (1/2 + 2/3 + 1) / 3 = 13/18
OVERALL_2X3 = 4 / 6  # trace / total


def assert_metrics_equal(actual: dict, expected: dict) -> None:
    """Compares two mean-IoU result dicts key by key, NaN == NaN."""
    assert set(actual) == set(expected) == set(METRIC_KEYS)
    for key in METRIC_KEYS:
        np.testing.assert_allclose(np.asarray(actual[key]), np.asarray(expected[key]), rtol=1e-12, equal_nan=True)


def hub_reference(preds, refs, num_labels, ignore_index, label_map=None, reduce_labels=False) -> dict:
    """Independent re-implementation of the Hub script's histogram algorithm (for valid inputs)."""
    inter, union, area_pred, area_ref = (np.zeros(num_labels) for _ in range(4))
    for pred, ref in zip(preds, refs, strict=True):
        pred, ref = np.array(pred), np.array(ref)
        if label_map is not None:
            original = ref.copy()
            for old_id, new_id in label_map.items():
                ref[original == old_id] = new_id
        if reduce_labels:
            ref[ref == 0] = 255
            ref = ref - 1
            ref[ref == 254] = 255
        mask = ref != ignore_index
        pred, ref = pred[mask], ref[mask]
        hist = lambda x: np.histogram(x, bins=num_labels, range=(0, num_labels - 1))[0]  # noqa: E731
        i, p, r = hist(pred[pred == ref]), hist(pred), hist(ref)
        inter, area_pred, area_ref, union = inter + i, area_pred + p, area_ref + r, union + p + r - i
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, acc = inter / union, inter / area_ref
    return {
        "mean_iou": np.nanmean(iou),
        "mean_accuracy": np.nanmean(acc),
        "overall_accuracy": inter.sum() / area_ref.sum(),
        "per_category_iou": iou,
        "per_category_accuracy": acc,
    }


def random_maps(seed: int, n: int, num_labels: int, ignore_frac: float = 0.1) -> tuple[list, list]:
    """Random prediction/reference maps of varying sizes, some reference pixels set to 255."""
    rng = np.random.default_rng(seed)
    preds, refs = [], []
    for _ in range(n):
        h, w = rng.integers(3, 17, size=2)
        preds.append(rng.integers(0, num_labels, size=(h, w)))
        ref = rng.integers(0, num_labels, size=(h, w))
        ref[rng.random((h, w)) < ignore_frac] = 255
        refs.append(ref)
    return preds, refs


# ----------------------------------------------------------------------------------------------- hand-computed


def test_worked_example_2x3():
    cm = ConfusionMatrix(num_labels=3).update(PRED_2X3, REF_2X3)
    np.testing.assert_array_equal(cm.matrix, MATRIX_2X3)
    assert cm.matrix.dtype == np.int64
    out = cm.compute()
    assert list(out) == list(METRIC_KEYS)
    np.testing.assert_allclose(out["per_category_iou"], IOU_2X3)
    np.testing.assert_allclose(out["per_category_accuracy"], ACC_2X3)
    assert out["mean_iou"] == pytest.approx(0.5)
    assert out["mean_accuracy"] == pytest.approx(13 / 18)
    assert out["overall_accuracy"] == pytest.approx(OVERALL_2X3)
    assert_metrics_equal(out, hub_reference([PRED_2X3], [REF_2X3], 3, 255))


def test_ignore_index_pixels_are_excluded_3x3():
    ref = np.array([[0, 0, 255], [1, 1, 255], [2, 255, 2]])
    # At ignored pixels the prediction does not matter, even if it is out of range (255, 7).
    pred = np.array([[0, 1, 2], [1, 1, 7], [2, 255, 0]])
    # Valid (ref, pred): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0)
    # matrix rows: ref0 [1,1,0]  ref1 [0,2,0]  ref2 [1,0,1]
    # inter [1,2,1]; ref area [2,2,2]; pred area [2,3,1]; union [2+2-1, 3+2-2, 1+2-1] = [3,3,2]
    cm = ConfusionMatrix(num_labels=3, ignore_index=255).update(pred, ref)
    np.testing.assert_array_equal(cm.matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert cm.matrix.sum() == 6  # 3 ignored pixels out of 9
    out = cm.compute()
    np.testing.assert_allclose(out["per_category_iou"], [1 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(out["per_category_accuracy"], [1 / 2, 1, 1 / 2])
    assert out["mean_iou"] == pytest.approx(0.5)
    assert out["mean_accuracy"] == pytest.approx(2 / 3)
    assert out["overall_accuracy"] == pytest.approx(4 / 6)


def test_custom_ignore_index_and_none():
    ref = np.array([[0, 1], [2, 2]])
    pred = np.array([[0, 1], [1, 2]])
    # ignore_index=2 drops the bottom row: (0,0) (1,1) -> perfect on classes 0 and 1, class 2 absent from ref.
    out = ConfusionMatrix(3, ignore_index=2).update(pred, ref).compute()
    np.testing.assert_array_equal(out["per_category_iou"][:2], [1.0, 1.0])
    assert np.isnan(out["per_category_iou"][2])
    # ignore_index=None keeps everything: (0,0) (1,1) (2,1) (2,2)
    cm = ConfusionMatrix(3, ignore_index=None).update(pred, ref)
    np.testing.assert_array_equal(cm.matrix, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])


def test_absent_class_is_nan_and_nan_means():
    # Class 3 appears in neither prediction nor reference -> NaN IoU and accuracy, ignored by the means.
    out = ConfusionMatrix(num_labels=4).update(PRED_2X3, REF_2X3).compute()
    np.testing.assert_allclose(out["per_category_iou"], [*IOU_2X3, np.nan], equal_nan=True)
    np.testing.assert_allclose(out["per_category_accuracy"], [*ACC_2X3, np.nan], equal_nan=True)
    assert out["mean_iou"] == pytest.approx(0.5)
    assert out["mean_accuracy"] == pytest.approx(13 / 18)


def test_predicted_but_absent_from_reference():
    # (ref, pred) = (0,0) (0,3): class 3 predicted once but never in the reference.
    # inter [1,0,0,0]; ref area [2,0,0,0]; pred area [1,0,0,1]; union [2,0,0,1]
    # IoU [1/2, nan, nan, 0/1]; accuracy [1/2, nan, nan, 0/0 = nan]
    out = ConfusionMatrix(num_labels=4).update(np.array([[0, 3]]), np.array([[0, 0]])).compute()
    np.testing.assert_allclose(out["per_category_iou"], [0.5, np.nan, np.nan, 0.0], equal_nan=True)
    np.testing.assert_allclose(out["per_category_accuracy"], [0.5, np.nan, np.nan, np.nan], equal_nan=True)
    assert out["mean_iou"] == pytest.approx(0.25)  # nanmean(0.5, 0)
    assert out["mean_accuracy"] == pytest.approx(0.5)
    assert out["overall_accuracy"] == pytest.approx(0.5)
    # nan_to_num replaces NaNs in the outputs, the means are still computed over the non-NaN classes (as on the Hub).
    filled = ConfusionMatrix(num_labels=4).update(np.array([[0, 3]]), np.array([[0, 0]])).compute(nan_to_num=-1)
    np.testing.assert_array_equal(filled["per_category_iou"], [0.5, -1, -1, 0.0])
    assert filled["mean_iou"] == pytest.approx(0.25)


def test_empty_matrix_is_all_nan_without_warnings(recwarn):
    out = ConfusionMatrix(num_labels=2).compute()
    assert np.isnan(out["mean_iou"]) and np.isnan(out["mean_accuracy"]) and np.isnan(out["overall_accuracy"])
    assert np.isnan(out["per_category_iou"]).all()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_reduce_labels():
    ref = np.array([[0, 1, 2], [3, 3, 255]], dtype=np.uint8)
    # reduce_labels maps 0 -> 255 and k -> k - 1 (255 stays 255): [[255, 0, 1], [2, 2, 255]]. Predictions are kept.
    pred = np.array([[2, 0, 1], [2, 1, 0]])
    # Valid (ref, pred): (0,0) (1,1) (2,2) (2,1)
    # matrix rows: ref0 [1,0,0]  ref1 [0,1,0]  ref2 [0,1,1]
    # inter [1,1,1]; ref area [1,1,2]; pred area [1,2,1]; union [1, 2, 2]
    cm = ConfusionMatrix(num_labels=3, reduce_labels=True).update(pred, ref)
    np.testing.assert_array_equal(cm.matrix, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    out = cm.compute()
    np.testing.assert_allclose(out["per_category_iou"], [1, 1 / 2, 1 / 2])
    np.testing.assert_allclose(out["per_category_accuracy"], [1, 1, 1 / 2])
    assert out["mean_iou"] == pytest.approx(2 / 3)
    assert out["mean_accuracy"] == pytest.approx(5 / 6)
    assert out["overall_accuracy"] == pytest.approx(3 / 4)
    assert_metrics_equal(out, hub_reference([pred], [ref], 3, 255, reduce_labels=True))
    np.testing.assert_array_equal(ref, [[0, 1, 2], [3, 3, 255]])  # input not modified


def test_label_map_uses_original_labels():
    # label_map swaps 1 <-> 2 (both lookups use the original labels), then reduce_labels.
    ref = np.array([[1, 2, 3, 0]])
    pred = np.array([[1, 0, 2, 0]])
    # mapped: [[2, 1, 3, 0]] -> reduced: [[1, 0, 2, 255]]; valid (ref, pred): (1,1) (0,0) (2,2)
    cm = ConfusionMatrix(3, label_map={1: 2, 2: 1}, reduce_labels=True).update(pred, ref)
    np.testing.assert_array_equal(cm.matrix, np.eye(3, dtype=np.int64))
    assert_metrics_equal(
        cm.compute(), hub_reference([pred], [ref], 3, 255, label_map={1: 2, 2: 1}, reduce_labels=True)
    )


@pytest.mark.parametrize("reduce_labels", [False, True])
def test_matches_hub_algorithm_on_random_maps(reduce_labels):
    num_labels = 6
    preds, refs = random_maps(seed=3, n=8, num_labels=num_labels)
    if reduce_labels:  # references in 0..num_labels (0 = background), predictions in 0..num_labels-1
        refs = [np.where(r == 255, 255, r + np.random.default_rng(0).integers(0, 2, size=r.shape)) for r in refs]
    label_map = {4: 5, 5: 4}
    expected = hub_reference(preds, refs, num_labels, 255, label_map=label_map, reduce_labels=reduce_labels)
    actual = mean_iou(preds, refs, num_labels, 255, label_map=label_map, reduce_labels=reduce_labels)
    assert_metrics_equal(actual, expected)


def test_metrics_from_confusion_matrix():
    assert_metrics_equal(
        metrics_from_confusion_matrix(MATRIX_2X3), ConfusionMatrix(3).update(PRED_2X3, REF_2X3).compute()
    )
    assert_metrics_equal(
        metrics_from_confusion_matrix(torch.from_numpy(MATRIX_2X3)), metrics_from_confusion_matrix(MATRIX_2X3)
    )
    with pytest.raises(ValueError, match="square"):
        metrics_from_confusion_matrix(np.zeros((2, 3)))


# ----------------------------------------------------------------------------------------------- input formats


def test_input_formats_agree():
    preds, refs = random_maps(seed=0, n=4, num_labels=5)
    expected = ConfusionMatrix(5).update(preds, refs).matrix
    # torch tensors (including uint8 references, as produced by image processors)
    as_torch = ConfusionMatrix(5).update(
        [torch.from_numpy(p) for p in preds], [torch.from_numpy(r).to(torch.uint8) for r in refs]
    )
    np.testing.assert_array_equal(as_torch.matrix, expected)
    # tuples, PIL-like uint16 arrays, integral floats
    mixed = ConfusionMatrix(5).update(
        tuple(p.astype(np.float32) for p in preds), tuple(r.astype(np.uint16) for r in refs)
    )
    np.testing.assert_array_equal(mixed.matrix, expected)
    # one (B, H, W) batch equals the list of its maps
    batch_p = torch.stack([torch.from_numpy(p[:3, :3]) for p in preds])
    batch_r = torch.stack([torch.from_numpy(r[:3, :3]) for r in refs])
    listed = ConfusionMatrix(5).update([p[:3, :3] for p in preds], [r[:3, :3] for r in refs])
    np.testing.assert_array_equal(ConfusionMatrix(5).update(batch_p, batch_r).matrix, listed.matrix)
    # nested python lists
    np.testing.assert_array_equal(ConfusionMatrix(3).update(PRED_2X3.tolist(), REF_2X3.tolist()).matrix, MATRIX_2X3)
    np.testing.assert_array_equal(ConfusionMatrix(3).update(PRED_2X3.tolist(), REF_2X3).matrix, MATRIX_2X3)


# ----------------------------------------------------------------------------------------------- streaming / merging


def test_streaming_over_batches_equals_one_batch():
    preds, refs = random_maps(seed=1, n=7, num_labels=5)
    one = ConfusionMatrix(5).update(preds, refs)
    streamed = ConfusionMatrix(5)
    for start in range(0, 7, 3):  # batches of 3, 3, 1
        streamed.update(preds[start : start + 3], refs[start : start + 3])
    np.testing.assert_array_equal(streamed.matrix, one.matrix)
    assert_metrics_equal(streamed.compute(), one.compute())
    assert_metrics_equal(one.compute(), hub_reference(preds, refs, 5, 255))
    streamed.reset()
    assert streamed.matrix.sum() == 0


def test_merge_two_accumulators_equals_one():
    preds, refs = random_maps(seed=2, n=6, num_labels=4)
    one = ConfusionMatrix(4).update(preds, refs)
    a = ConfusionMatrix(4).update(preds[:2], refs[:2])
    b = ConfusionMatrix(4).update(preds[2:], refs[2:])
    summed = a + b
    np.testing.assert_array_equal(summed.matrix, one.matrix)
    assert a.matrix.sum() + b.matrix.sum() == one.matrix.sum()  # __add__ leaves its operands alone
    assert a.merge(b) is a
    np.testing.assert_array_equal(a.matrix, one.matrix)
    with pytest.raises(ValueError, match="num_labels"):
        a.merge(ConfusionMatrix(5))


def test_summing_matrices_across_two_processes():
    """Emulates `accelerator.gather` (concatenation along dim 0) and `accelerator.reduce(sum)` on two ranks."""
    preds, refs = random_maps(seed=4, n=6, num_labels=4)
    single = ConfusionMatrix(4).update(preds, refs)
    rank0 = ConfusionMatrix(4).update(preds[::2], refs[::2])
    rank1 = ConfusionMatrix(4).update(preds[1::2], refs[1::2])
    t0, t1 = rank0.to_tensor(), rank1.to_tensor()
    assert t0.dtype == torch.int64 and t0.shape == (4, 4)

    def fake_gather(tensor: torch.Tensor) -> torch.Tensor:  # what rank 0 would receive from accelerate's gather
        return torch.cat([tensor, t1])

    synced = rank0.synchronize(fake_gather)
    np.testing.assert_array_equal(synced.matrix, single.matrix)
    np.testing.assert_array_equal(rank0.synchronize(fake_gather).matrix, single.matrix)  # rank0 itself untouched
    # reduce(sum) result, stacked (P, K, K) and concatenated (P*K, K) layouts all give the same total.
    np.testing.assert_array_equal(ConfusionMatrix.from_matrix(t0 + t1).matrix, single.matrix)
    np.testing.assert_array_equal(ConfusionMatrix(4).add_matrix(torch.stack([t0, t1])).matrix, single.matrix)
    np.testing.assert_array_equal(ConfusionMatrix(4).add_matrix(torch.cat([t0, t1]).numpy()).matrix, single.matrix)
    assert_metrics_equal(synced.compute(), single.compute())
    with pytest.raises(ValueError, match="expected counts"):
        ConfusionMatrix(4).add_matrix(np.zeros((3, 4)))


# ----------------------------------------------------------------------------------------------- validation


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        ConfusionMatrix(3).update(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(ValueError, match=r"map 1.*\(2, 2\).*\(2, 3\)"):
        ConfusionMatrix(3).update([np.zeros((2, 2), int)] * 2, [np.zeros((2, 2), int), np.zeros((2, 3), int)])
    with pytest.raises(ValueError, match="2 prediction maps but 3 reference maps"):
        ConfusionMatrix(3).update([np.zeros((2, 2), int)] * 2, [np.zeros((2, 2), int)] * 3)


@pytest.mark.parametrize(
    ("pred", "ref", "name", "value"),
    [
        ([[0, 1]], [[0, 7]], "references", "7"),  # reference out of range
        ([[0, 1]], [[-1, 0]], "references", "-1"),  # negative reference
        ([[0, 3]], [[0, 1]], "predictions", "3"),  # prediction == num_labels
        ([[0, 255]], [[0, 1]], "predictions", "255"),  # ignore_index predicted at a valid pixel
    ],
)
def test_out_of_range_labels_raise_with_value(pred, ref, name, value):
    cm = ConfusionMatrix(3).update(PRED_2X3, REF_2X3)
    with pytest.raises(ValueError, match=rf"{name}.*label value {value} outside \[0, num_labels=3\)"):
        cm.update(np.array(pred), np.array(ref))
    np.testing.assert_array_equal(cm.matrix, MATRIX_2X3)  # unchanged on error


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="non-integral"):
        ConfusionMatrix(3).update(np.array([[0.5, 1.0]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match="dtype"):
        ConfusionMatrix(3).update(np.array([["a", "b"]]), np.array([[0, 1]]))
    for bad in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match="num_labels"):
            ConfusionMatrix(bad)
    # a later map out of range in a list: nothing is added
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"map 1"):
        cm.update([np.array([0, 1]), np.array([0, 1])], [np.array([0, 1]), np.array([0, 9])])
    assert cm.matrix.sum() == 0


# ----------------------------------------------------------------------------------------------- evaluate module


def test_script_is_package_data():
    script = importlib.resources.files("groupvit.evaluation") / "mean_iou" / "mean_iou.py"
    assert script.is_file()
    assert Path(MEAN_IOU_SCRIPT) == Path(str(script)).resolve()
    assert Path(MEAN_IOU_DIR).name == Path(MEAN_IOU_SCRIPT).stem == "mean_iou"  # evaluate.load's naming rule


_EVALUATE_CHILD = textwrap.dedent(
    """
    import json, socket, sys
    import numpy as np
    import torch

    def no_network(*args, **kwargs):
        raise OSError("network access attempted")

    socket.socket.connect = no_network
    socket.create_connection = no_network

    import evaluate
    from groupvit.evaluation import MEAN_IOU_DIR, load_mean_iou

    assert evaluate.config.HF_EVALUATE_OFFLINE
    cases = json.load(sys.stdin)
    results = []
    metric = load_mean_iou(keep_in_memory=True)
    for case in cases:
        preds = [np.array(p, dtype=case["pred_dtype"]) for p in case["preds"]]
        refs = [np.array(r, dtype=case["ref_dtype"]) for r in case["refs"]]
        kwargs = dict(case["kwargs"])
        if "label_map" in kwargs:
            kwargs["label_map"] = {int(k): v for k, v in kwargs["label_map"].items()}
        if case.get("streaming"):  # add_batch with torch tensors, then compute
            for p, r in zip(preds, refs):
                metric.add_batch(predictions=[torch.from_numpy(p)], references=[torch.from_numpy(r)])
            out = metric.compute(**kwargs)
        else:
            out = metric.compute(predictions=preds, references=refs, **kwargs)
        results.append({k: np.asarray(v, dtype=float).tolist() for k, v in out.items()})
    by_dir = evaluate.load(MEAN_IOU_DIR, keep_in_memory=True)
    same = [np.array([[0, 1]])]
    out = by_dir.compute(predictions=same, references=same, num_labels=2, ignore_index=255)
    results.append({"by_dir_mean_iou": float(out["mean_iou"]), "module": type(by_dir).__name__})
    print("RESULTS" + json.dumps(results))
    """
)


def test_load_mean_iou_offline_matches_accumulator(tmp_path):
    """Loads the packaged script with `evaluate.load` in a fresh, offline, socket-less interpreter."""
    preds, refs = random_maps(seed=5, n=4, num_labels=5)
    hub_doc_preds = [[[1, 2], [3, 4], [5, 255]], [[2, 7], [9, 2], [3, 6]], [[2, 2, 3], [8, 2, 4], [3, 255, 2]]]
    hub_doc_refs = [[[0, 3], [5, 4], [6, 255]], [[1, 7], [9, 2], [3, 6]], [[1, 2, 2], [8, 2, 1], [3, 255, 1]]]
    reduce_refs = [np.where(r == 255, 255, r + 1) for r in refs]  # 1..5 -> 0..4 after reduce_labels
    cases = [
        {"preds": hub_doc_preds, "refs": hub_doc_refs, "kwargs": {"num_labels": 10, "ignore_index": 255}},
        {"preds": [PRED_2X3.tolist()], "refs": [REF_2X3.tolist()], "kwargs": {"num_labels": 4, "ignore_index": 255}},
        {
            "preds": [PRED_2X3.tolist()],
            "refs": [REF_2X3.tolist()],
            "kwargs": {"num_labels": 4, "ignore_index": 255, "nan_to_num": 0},
        },
        {
            "preds": [p.tolist() for p in preds],
            "refs": [r.tolist() for r in refs],
            "streaming": True,
            "kwargs": {"num_labels": 5, "ignore_index": 255},
        },
        {
            "preds": [p.tolist() for p in preds],
            "refs": [r.tolist() for r in reduce_refs],
            "kwargs": {"num_labels": 5, "ignore_index": 255, "reduce_labels": True, "label_map": {"2": 3, "3": 2}},
        },
    ]
    for case in cases:
        case.setdefault("pred_dtype", "int64")
        case.setdefault("ref_dtype", "uint8")
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_EVALUATE_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf_home"),
        HF_MODULES_CACHE=str(tmp_path / "modules"),
    )
    proc = subprocess.run(
        [sys.executable, "-c", _EVALUATE_CHILD],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULTS"))
    results = json.loads(line[len("RESULTS") :])

    # Hub documentation example, numbers copied from the evaluate-metric/mean_iou docstring.
    hub_doc = results[0]
    assert hub_doc["mean_iou"] == pytest.approx(0.47750000000000004)
    assert hub_doc["mean_accuracy"] == pytest.approx(0.5916666666666666)
    assert hub_doc["overall_accuracy"] == pytest.approx(0.5263157894736842)
    np.testing.assert_allclose(hub_doc["per_category_iou"], [0, 0, 0.375, 0.4, 0.5, 0, 0.5, 1, 1, 1])

    for case, result in zip(cases, results, strict=False):
        kwargs = case["kwargs"]
        label_map = {int(k): v for k, v in kwargs.get("label_map", {}).items()} or None
        cm = ConfusionMatrix(
            kwargs["num_labels"], kwargs["ignore_index"], kwargs.get("reduce_labels", False), label_map
        )
        cm.update([np.array(p) for p in case["preds"]], [np.array(r) for r in case["refs"]])
        assert_metrics_equal(result, cm.compute(nan_to_num=kwargs.get("nan_to_num")))
    assert results[-1] == {"by_dir_mean_iou": 1.0, "module": "MeanIoU"}
    # nan_to_num case: class 3 absent -> 0 instead of NaN
    assert results[2]["per_category_iou"][3] == 0.0 and np.isnan(results[1]["per_category_iou"][3])
