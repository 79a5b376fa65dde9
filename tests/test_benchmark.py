"""The synthetic benchmark: protocol defaults, a model beside its baselines, aggregation over seeds."""

import json

import numpy as np
import pytest

from groupvit.cli.demo import main as demo_main
from groupvit.data.synthetic import get_spec
from groupvit.evaluation.baselines import all_background
from groupvit.evaluation.benchmark import (
    SyntheticBenchmark,
    aggregate_results,
    format_aggregate,
    format_benchmark,
    run_benchmark,
)
from groupvit.segmentation import GroupViTSegmenter


def test_protocol_defaults_are_the_documented_ones():
    protocol = SyntheticBenchmark()
    assert (protocol.preset, protocol.image_size, protocol.num_test, protocol.num_validation) == (
        "objects",
        64,
        500,
        100,
    )
    assert protocol.scales == (2, 1) and protocol.top_k is None and protocol.probes == ("swap",)
    assert protocol.options(2) == {"mode": "whole", "short_side": 128, "top_k": None}
    options = protocol.protocol(1, 0.5).options
    assert (options.short_side, options.mode, options.top_k, options.background_threshold) == (64, "whole", None, 0.5)
    # stored thresholds carry over to another test count, not to another validation split or top-k
    assert protocol.same_validation(SyntheticBenchmark(num_test=20, probes=()).to_dict())
    assert not protocol.same_validation(SyntheticBenchmark(num_validation=50).to_dict())
    assert not protocol.same_validation(SyntheticBenchmark(top_k=5).to_dict())
    with pytest.raises(ValueError, match="sepia"):
        SyntheticBenchmark(probes=("sepia",))
    with pytest.raises(ValueError, match="scales"):
        SyntheticBenchmark(scales=(0,))


def _tiny_benchmark(**changes) -> SyntheticBenchmark:
    values = {
        "image_size": 32,
        "num_test": 3,
        "num_validation": 2,
        "num_color_train": 6,
        "color_cell": 4,
        "model_preset": "groupvit-tiny",
    }
    return SyntheticBenchmark(**{**values, **changes})


def test_model_is_reported_beside_every_baseline(tiny_checkpoint):
    benchmark = _tiny_benchmark()
    segmenter = GroupViTSegmenter.from_pretrained(tiny_checkpoint)
    stored = {"plain_vit": {"mean_iou": 0.108, "source": "a stored run"}}
    result = run_benchmark(
        segmenter, benchmark, thresholds={"2x": 0.3}, random_init_thresholds={"2x": 0.5}, stored_baselines=stored
    )
    summary = result["summary"]
    for row in (
        "model 2x",
        "model 1x",
        "model 2x probe swap",
        "all background",
        "random init 2x",
        "colour co-occurrence per patch",
        "colour co-occurrence per pixel",
        "colour co-occurrence per patch probe swap",
        "patch oracle 2x",
        "group oracle 1x",
        "plain_vit (stored)",
    ):
        assert row in summary, row
    model = result["model"]
    # given thresholds are used as they are; the 1x one was chosen on the validation split now
    assert model["2x"]["background_threshold"] == 0.3 and "validation_miou_by_threshold" not in model["2x"]
    assert set(model["1x"]["validation_miou_by_threshold"]) >= {0.0, 0.5, 0.95}
    assert model["2x"]["options"]["short_side"] == 64 and model["1x"]["options"]["short_side"] == 32
    assert model["2x"]["options"]["top_k"] is None and model["2x"]["num_images"] == 3
    assert result["baselines"]["random_init"]["background_threshold"] == 0.5
    # the all-background row is the baseline function on the same test annotations
    masks = [s.annotation for s in benchmark.samples("test", 3)]
    expected = all_background(masks, get_spec("objects").class_names)["mean_iou"]
    assert summary["all background"] == pytest.approx(expected)
    assert 0 < summary["all background"] < 0.5 and summary["plain_vit (stored)"] == 0.108
    assert result["baselines"]["plain_vit"]["stored"] is True
    assert "colour co-occurrence per pixel" in format_benchmark(result)
    json.dumps(result, default=float)  # serialisable


def test_aggregate_mean_and_range_by_hand(tmp_path):
    runs = [
        {"benchmark": {"num_test": 500}, "summary": {"model 2x": 0.10, "model 1x": 0.2, "group oracle 2x": None}},
        {"benchmark": {"num_test": 500}, "summary": {"model 2x": 0.20, "model 1x": 0.2, "group oracle 2x": 0.3}},
        {"benchmark": {"num_test": 500}, "summary": {"model 2x": 0.45, "model 1x": 0.2, "group oracle 2x": 0.3}},
    ]
    values = aggregate_results(runs)
    assert values["model 2x"]["mean"] == pytest.approx(0.25)
    assert (values["model 2x"]["min"], values["model 2x"]["max"]) == (0.10, 0.45)
    assert "group oracle 2x" not in values  # one run has no number for it
    assert "[10.0, 45.0] over 3 runs" in format_aggregate(values)
    with pytest.raises(ValueError, match="summary"):
        aggregate_results([{"test": {}}])
    paths = []
    for index, run in enumerate(runs):
        paths.append(tmp_path / f"seed{index}.json")
        paths[-1].write_text(json.dumps(run))
    assert demo_main(["--aggregate", *map(str, paths), "--output", str(tmp_path / "agg")]) == 0
    saved = json.loads((tmp_path / "agg" / "aggregate.json").read_text())
    assert saved["aggregate"]["model 2x"]["mean"] == pytest.approx(0.25)
    assert np.allclose(saved["aggregate"]["model 1x"]["values"], [0.2, 0.2, 0.2])
    assert saved["aggregated"] == "model"


def test_aggregate_of_train_runs_averages_the_trained_models(tmp_path):
    # `groupvit demo --train --seed i` scores the shipped model (identical in every run) and the fresh one: a seed
    # aggregate must be over the fresh ones (it averaged the shipped model's constant row before)
    paths = []
    for seed, fresh in enumerate((0.30, 0.35, 0.40)):
        run = {"summary": {"model 2x": 0.458}, "trained": {"summary": {"model 2x": fresh}}}
        paths.append(tmp_path / f"seed{seed}.json")
        paths[-1].write_text(json.dumps(run))
    assert demo_main(["--aggregate", *map(str, paths), "--output", str(tmp_path / "agg")]) == 0
    saved = json.loads((tmp_path / "agg" / "aggregate.json").read_text())
    assert saved["aggregated"] == "trained"
    assert saved["aggregate"]["model 2x"]["mean"] == pytest.approx(0.35)
    assert saved["aggregate"]["model 2x"]["values"] == pytest.approx([0.30, 0.35, 0.40])
    # a mix of --train results and plain ones is refused, not half-aggregated
    paths[0].write_text(json.dumps({"summary": {"model 2x": 0.458}}))
    assert demo_main(["--aggregate", *map(str, paths), "--output", str(tmp_path / "mix")]) == 2
