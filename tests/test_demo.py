"""The demo end to end, shrunken: train a fresh model for a few steps, pick the threshold, score, write artefacts."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import groupvit
from groupvit.cli.demo import main as demo_main
from groupvit.evaluation.diagnostics import count_groups, region_oracle
from groupvit.evaluation.evaluate import (
    EvaluationSample,
    evaluate_segmentation,
    format_report,
    select_background_threshold,
    synthetic_protocol,
    synthetic_samples,
)
from groupvit.segmentation import GroupViTSegmenter


@pytest.mark.slow
def test_shrunken_demo_produces_every_artefact(tmp_path):
    Image.new("RGB", (50, 40), (250, 200, 0)).save(tmp_path / "mine.png")
    args = ["--output", str(tmp_path / "out"), "--num_test", "4", "--num_validation", "4", "--num_color_train", "20"]
    args += ["--train", "--train_steps", "3", str(tmp_path / "mine.png"), "--labels", "sun,fish"]
    assert demo_main(args) == 0
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    for key in ("mean_iou", "per_category_iou", "classification_accuracy", "groups_used"):
        assert key in results["test"] and key in results["trained"]["test"]
    # the protocol: 2x headline (128 px), 1x, the probe, thresholds chosen on validation for the new settings
    assert results["benchmark"]["num_test"] == 4 and results["benchmark"]["top_k"] is None
    assert results["test"] == results["model"]["2x"] and results["test"]["options"]["short_side"] == 128
    assert results["model"]["1x"]["options"]["short_side"] == 64
    assert "validation_miou_by_threshold" in results["model"]["1x"]  # 4 validation images: stored ones don't apply
    # every baseline is beside the model; the fresh model's run reuses them (no baselines of its own)
    summary = results["summary"]
    for row in ("model 2x probe swap", "all background", "random init 2x", "colour co-occurrence per patch"):
        assert 0.0 <= summary[row] <= 1.0, row
    assert "plain_vit (stored)" in summary
    assert "all background" not in results["trained"]["summary"] and "model 1x" in results["trained"]["summary"]
    # grouping diagnostics are reported; the 16x16 patch grid of 128 px inputs leaves a patch-oracle mIoU far above 0
    test = results["test"]
    assert 0.0 <= test["oracle_group_miou"] <= 1.0 and 0.0 <= test["group_label_accuracy"] <= 1.0
    assert test["patch_oracle_miou"] > 0.3
    # --train runs the quick recipe's stages in order, each from the previous one's output
    stages = results["trained"]["train_stages"]
    assert [stage["run_file"] for stage in stages] == ["run.yaml", "run_quick.yaml"]
    assert [stage["step"] for stage in stages] == [3, 3] and "train_summary" not in results["trained"]
    assert stages[0]["init_from"] is None and stages[1]["init_from"] == stages[0]["output_dir"]
    quick = json.loads((Path(stages[1]["output_dir"]) / "training_config.json").read_text())
    assert quick["loss"]["group_distill_weight"] > 0 and quick["init_from"] == stages[0]["output_dir"]
    assert 0.0 <= results["trained"]["options"]["background_threshold"] <= 1.0
    trained = out / "trained_model"
    saved = json.loads((trained / "demo.json").read_text())
    assert set(saved["protocol_synthetic"]["thresholds"]) == {"2x", "1x"}
    assert set(saved["protocol_synthetic"]["validation_miou_by_threshold"]["2x"]) >= {"0.0", "0.5", "0.95"}
    for picture in ("overlay_grid.png", "groups.png", "mine_overlay.png", "trained/overlay_grid.png"):
        assert Image.open(out / picture).size[0] > 0
    model = groupvit.GroupViTModel.from_pretrained(trained)
    assert model.config.vision_config.image_size == 64
    segmenter = pipeline("zero-shot-image-segmentation", model=str(trained))
    masks = segmenter(Image.open(tmp_path / "mine.png"), candidate_labels=["sun", "fish"], background_threshold=0.5)
    assert all(m["mask"].size == (50, 40) for m in masks)


def _perfect_segmenter_samples():
    """Two images whose annotations are exactly what a stub predicts."""
    annotation = np.zeros((8, 8), dtype=np.int64)
    annotation[:4] = 1
    annotation[6:, 6:] = 255
    return [
        EvaluationSample(Image.new("RGB", (8, 8)), annotation, "a"),
        EvaluationSample(Image.new("RGB", (8, 8)), annotation, "b"),
    ]


class _StubSegmenter:
    """Predicts class 1 on the top half and background elsewhere; image score favours class 1."""

    def encode_labels(self, labels, templates, ensemble):
        return torch.zeros(len(labels), 4)

    def segment(self, image, labels, options, text_embeds):
        label_map = torch.zeros(8, 8, dtype=torch.long)
        label_map[:4] = 1
        label_map[4:5] = 2  # one wrong row
        scores = torch.tensor([0.9] + [0.1 / (len(labels) - 1)] * (len(labels) - 1))
        # last stage on an 8x8 grid: group 0 = rows 0-4, group 1 = rows 5-7
        last = torch.zeros(2, 8, 8)
        last[0, :5], last[1, 5:] = 1.0, 1.0
        maps = (torch.randn(4, 8, 8), last)
        # background first, as evaluate_segmentation asks
        logits = torch.nn.functional.one_hot(label_map, len(labels) + 1).permute(2, 0, 1).float()
        fields = {"label_map": label_map, "image_scores": scores, "group_maps": maps, "labels": labels}
        return [type("R", (), {**fields, "label_logits": logits})]


def test_evaluation_scores_against_hand_computed_iou():
    protocol = synthetic_protocol("objects", background_threshold=0.5)
    report = evaluate_segmentation(_StubSegmenter(), _perfect_segmenter_samples(), protocol, progress=False)
    # per image: 64 pixels, 4 ignored. class 1 ("sun"): 32 predicted = 32 true -> IoU 1.
    # background: true 28 (60 valid - 32), predicted 28 - 8 (row 4 -> class 2) = 20 -> IoU 20/28.
    # class 2 ("leaf"): predicted 8, true 0 -> IoU 0; the other classes are absent (NaN, left out of the mean).
    assert report.per_category_iou["sun"] == pytest.approx(1.0)
    assert report.per_category_iou["background"] == pytest.approx(20 / 28)
    assert report.per_category_iou["leaf"] == 0.0
    assert report.mean_iou == pytest.approx((1 + 20 / 28 + 0) / 3)
    assert report.classification_accuracy == 1.0 and report.num_images == 2
    assert "mIoU" in format_report(report)
    # group oracle: rows 0-4 -> class 1 (32 of its 40 pixels), rows 5-7 -> background (20 valid pixels of 28 true)
    assert report.oracle_group_miou == pytest.approx((32 / 40 + 20 / 28) / 2)
    # one patch per pixel: the patch oracle is the annotation itself
    assert report.patch_oracle_miou == pytest.approx(1.0)
    # the one foreground group (rows 0-4) gets label 1 on rows 0-3 and label 2 on row 4: labelled right
    assert report.group_label_accuracy == 1.0
    assert "group-oracle mIoU" in format_report(report)


def test_region_oracle_ignores_ignored_pixels():
    annotation = np.array([[2, 255, 255], [0, 0, 1]])
    regions = np.array([[0, 0, 0], [1, 1, 1]])
    # region 0 has one valid vote (2) against two ignored pixels; region 1 votes 0, 0, 1
    assert region_oracle(annotation, regions, 3).tolist() == [[2, 2, 2], [0, 0, 0]]


def test_threshold_selection_uses_the_given_split_and_improves_on_extremes(tiny_checkpoint):
    segmenter = GroupViTSegmenter.from_pretrained(tiny_checkpoint)
    samples = list(synthetic_samples("objects", "validation", 4, image_size=32))
    best, scores = select_background_threshold(segmenter, samples, synthetic_protocol("objects", mode="whole"))
    assert best in scores and scores[best] == max(scores.values())


def test_count_groups_of_one_image():
    # stage 1: (3 groups, 2x2 grid), the arg-max groups are 0, 2, 2, 0; stage 2: (2, 2x2), all group 1
    stage1 = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.0, 0.0], [0.0, 0.0]], [[0.1, 0.9], [0.8, 0.2]]])
    stage2 = torch.tensor([[[0.1, 0.1], [0.1, 0.1]], [[0.9, 0.9], [0.9, 0.9]]])
    assert count_groups((stage1, stage2)) == [2, 1]
    assert count_groups(None) == [] and count_groups(()) == []


class _Exchange:
    """All-gather between threads that stand in for processes."""

    def __init__(self, world: int) -> None:
        self.barrier, self.slots = threading.Barrier(world), [None] * world

    def all(self, rank: int, value: torch.Tensor) -> list[torch.Tensor]:
        self.slots[rank] = value
        self.barrier.wait()
        values = list(self.slots)
        self.barrier.wait()
        return values


class _ThreadAccelerator:
    """The parts of `accelerate.Accelerator` that `evaluate_segmentation` uses, for one of two threads."""

    num_processes, device = 2, "cpu"

    def __init__(self, rank: int, exchange: _Exchange) -> None:
        self.process_index, self.exchange = rank, exchange

    def gather(self, tensor):
        return torch.cat([t.reshape(-1, *t.shape[-2:]) for t in self.exchange.all(self.process_index, tensor)])

    def reduce(self, tensor, reduction):
        assert reduction == "sum"
        return torch.stack(self.exchange.all(self.process_index, tensor)).sum(0)


def test_evaluation_split_across_two_processes_equals_one_process():
    samples = _perfect_segmenter_samples()
    other = samples[0].annotation.copy()
    other[:2] = 0  # a second kind of image, so the two processes see different data
    samples += [EvaluationSample(Image.new("RGB", (8, 8)), other, "c")]
    protocol = synthetic_protocol("objects", background_threshold=0.5)
    single = evaluate_segmentation(_StubSegmenter(), samples, protocol, progress=False).to_dict()
    exchange, reports = _Exchange(2), [None, None]

    def run(rank: int) -> None:
        accelerator = _ThreadAccelerator(rank, exchange)
        reports[rank] = evaluate_segmentation(
            _StubSegmenter(), samples, protocol, accelerator=accelerator, progress=False
        )

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for report in reports:
        split = report.to_dict()
        split.pop("groups_used"), single.pop("groups_used", None)  # per process (the stub's first stage is random)
        assert split.keys() == single.keys()
        for key, value in single.items():
            numbers = isinstance(value, float) or key == "per_category_iou"
            expected = pytest.approx(value, nan_ok=True) if numbers else value
            assert split[key] == expected, key
    assert reports[0].num_images == 3 and reports[0].oracle_group_miou is not None


def _scored(curves: dict[str, dict[float, float]]) -> dict:
    best = {key: max(curve, key=curve.get) for key, curve in curves.items()}
    return {
        "model": {
            key: {"background_threshold": best[key], "validation_miou_by_threshold": curve}
            for key, curve in curves.items()
        }
    }


def test_the_inference_options_take_the_scale_that_validation_favours():
    from groupvit.cli.demo import RECORD, model_settings
    from groupvit.evaluation.benchmark import SyntheticBenchmark

    benchmark = SyntheticBenchmark()
    settings = model_settings(benchmark, _scored({"2x": {0.1: 0.52, 0.2: 0.50}, "1x": {0.2: 0.43, 0.3: 0.40}}))
    assert settings["options"] == {"short_side": 128, "background_threshold": 0.1}
    assert settings[RECORD]["thresholds"] == {"2x": 0.1, "1x": 0.2} and settings["preset"] == "objects"
    settings = model_settings(benchmark, _scored({"2x": {0.1: 0.40}, "1x": {0.2: 0.41, 0.3: 0.40}}))
    assert settings["options"] == {"short_side": 64, "background_threshold": 0.2}
    # a tie goes to the cheaper, lower resolution
    assert model_settings(benchmark, _scored({"2x": {0.4: 0.5}, "1x": {0.6: 0.5}}))["options"]["short_side"] == 64


def test_shipped_model_stores_thresholds_of_the_default_protocol():
    from groupvit.cli.demo import stored_record
    from groupvit.cli.shipped_model import demo_directory
    from groupvit.evaluation.benchmark import SyntheticBenchmark

    record = stored_record(demo_directory())
    # the default `groupvit demo` reuses them instead of sweeping the validation split again
    assert SyntheticBenchmark().same_validation(record["benchmark"])
    assert set(record["thresholds"]) == {"2x", "1x"} and set(record["random_init_thresholds"]) == {"2x"}
    for scale, threshold in record["thresholds"].items():
        curve = record["validation_miou_by_threshold"][scale]
        assert curve[str(threshold)] == max(curve.values()), scale
    plain_vit = record["stored_baselines"]["plain_vit"]
    assert 0 < plain_vit["mean_iou"] < 1 and "not this protocol" in plain_vit["source"].lower()
