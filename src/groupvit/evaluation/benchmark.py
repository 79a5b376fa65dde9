"""The synthetic benchmark: a protocol fixed in advance, every model score beside its baselines, seeds aggregated.

The protocol (written down in `docs/protocol_synthetic.md`; the defaults of :class:`SyntheticBenchmark`):

* data: the `objects` preset at 64 px, seed 0; **500 test images** (the shifted test split), the background threshold
  chosen on **100 validation images** (never on the test split);
* resolution: **2x** (short side 128 px, the whole image at once, position embeddings interpolated), as the paper
  evaluates above its training resolution; 1x (64 px) is reported too;
* labels: all 8 class names, no image-level top-k restriction (`top_k=None`);
* baselines, all computed: all-background, a randomly initialised model of the same preset (seeded), the colour
  co-occurrence baseline (:mod:`groupvit.evaluation.baselines`; 3000 training images, 8x8x8 RGB bins, per 8 px patch
  and per pixel), the patch and group oracles of the model's own grid; a plain-ViT number stored with the shipped
  model (:data:`groupvit.cli.shipped_model.DEMO_SETTINGS`) when one is given;
* the objectness probe: the test split recoloured (`recolor="swap"`), the same thresholds;
* training seeds: three runs reported as mean and range (:func:`aggregate_results`).

:func:`run_benchmark` returns a JSON-serialisable dict whose `summary` maps every row name to its mIoU;
:func:`format_benchmark` prints it and :func:`aggregate_results` summarises several of them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from groupvit.evaluation import baselines
from groupvit.evaluation.evaluate import (
    EvaluationSample,
    evaluate_segmentation,
    select_background_threshold,
    synthetic_protocol,
)
from groupvit.segmentation.protocols import SegmentationProtocol
from groupvit.segmentation.segmenter import GroupViTSegmenter

logger = logging.getLogger(__name__)

__all__ = [
    "SyntheticBenchmark",
    "aggregate_results",
    "color_baseline",
    "compute_baselines",
    "format_rows",
    "format_aggregate",
    "format_benchmark",
    "random_init_segmenter",
    "run_benchmark",
    "score_model",
]


@dataclass(frozen=True)
class SyntheticBenchmark:
    """The synthetic protocol's settings; the defaults are the protocol (`docs/protocol_synthetic.md`).

    Args:
        preset: Synthetic preset (`groupvit.data.synthetic`).
        image_size: Side of the generated images (the demo model's training resolution).
        seed: Base seed of the splits.
        num_test: Test images scored.
        num_validation: Validation images the background thresholds are chosen on.
        scales: Evaluation resolutions as multiples of `image_size`; the first is the headline number.
        top_k: Image-level top-k restriction of the segmenter (None: all labels).
        probes: Recolourings of the test split the model and the colour baseline are also scored on.
        num_color_train: Training images of the colour co-occurrence baseline.
        color_bins: Its RGB bins per channel.
        color_cell: Its patch size in pixels (the model's patch size), scored beside the per-pixel variant.
        model_preset: Architecture of the random-init baseline.
        random_init_seed: Its `torch.manual_seed`.

    Example:
        >>> SyntheticBenchmark().options(2)
        {'mode': 'whole', 'short_side': 128, 'top_k': None}
    """

    preset: str = "objects"
    image_size: int = 64
    seed: int = 0
    num_test: int = 500
    num_validation: int = 100
    scales: tuple[int, ...] = (2, 1)
    top_k: int | None = None
    probes: tuple[str, ...] = ("swap",)
    num_color_train: int = 3000
    color_bins: int = 8
    color_cell: int = 8
    model_preset: str = "groupvit-demo"
    random_init_seed: int = 0

    def __post_init__(self) -> None:
        from groupvit.data.synthetic import RECOLORS

        object.__setattr__(self, "scales", tuple(self.scales))
        object.__setattr__(self, "probes", tuple(self.probes))
        if not self.scales or any(not isinstance(s, int) or s < 1 for s in self.scales):
            raise ValueError(f"scales must be positive ints, got {self.scales!r}")
        unknown = [p for p in self.probes if p not in RECOLORS]
        if unknown:
            raise ValueError(f"unknown probe(s) {unknown}; expected some of {RECOLORS}")
        for name in ("num_test", "num_validation", "num_color_train"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")

    @property
    def headline_scale(self) -> int:
        return self.scales[0]

    def options(self, scale: int) -> dict[str, Any]:
        """Segmentation option changes at `scale` times the training resolution."""
        return {"mode": "whole", "short_side": scale * self.image_size, "top_k": self.top_k}

    def protocol(self, scale: int, background_threshold: float | None = None) -> SegmentationProtocol:
        """The `synthetic` protocol with the preset's classes and this benchmark's options at `scale`."""
        return synthetic_protocol(self.preset, background_threshold=background_threshold, **self.options(scale))

    def samples(self, split: str, num_samples: int, recolor: str | None = None) -> list[EvaluationSample]:
        """A split of the preset as evaluation samples (0 = background)."""
        from groupvit.data.synthetic import make_split

        data = make_split(self.preset, split, num_samples, self.image_size, self.seed, recolor=recolor)  # type: ignore[arg-type]
        tag = f"{split}-{recolor}" if recolor else split
        return [EvaluationSample(s.image, s.mask.astype(np.int64), f"{tag}-{s.index:05d}") for s in data]

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["scales"], values["probes"] = list(self.scales), list(self.probes)
        return values

    def same_validation(self, other: Mapping[str, Any]) -> bool:
        """Whether thresholds chosen under the settings `other` (a :meth:`to_dict`) hold here."""
        keys = ("preset", "image_size", "seed", "num_validation", "top_k", "model_preset", "random_init_seed")
        return all(other.get(key) == getattr(self, key) for key in keys)


def _scale_key(scale: int) -> str:
    return f"{scale}x"


def random_init_segmenter(model_preset: str, seed: int) -> GroupViTSegmenter:
    """A freshly initialised model of `model_preset` (weights drawn after `torch.manual_seed(seed)`)."""
    import torch

    from groupvit.configuration_groupvit import GroupViTConfig
    from groupvit.modeling_groupvit import GroupViTModel
    from groupvit.processing_groupvit import GroupViTProcessor

    torch.manual_seed(seed)
    config = GroupViTConfig.from_preset(model_preset)
    model = GroupViTModel(config)
    return GroupViTSegmenter(model, GroupViTProcessor.from_bundled(image_size=config.vision_config.image_size))


def score_model(
    segmenter: GroupViTSegmenter,
    benchmark: SyntheticBenchmark,
    thresholds: Mapping[str, float] | None = None,
    scales: Sequence[int] | None = None,
    probes: bool = True,
    overlay_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score a model at every scale (and on the probes at the headline scale).

    Args:
        segmenter: The model.
        benchmark: The protocol.
        thresholds: `{"2x": t, ...}` background thresholds chosen earlier on this benchmark's validation split; a
            scale without one gets it chosen now (:func:`select_background_threshold`, `num_validation` images).
        scales: A subset of `benchmark.scales` (default: all).
        probes: Also score the recoloured test splits of `benchmark.probes`.
        overlay_dir: Overlays of the headline scale go here.

    Returns:
        `{"2x": report, "1x": report, "probe_swap": report, ...}`: each an `EvaluationReport` dict with its
        `background_threshold` and, where it was chosen now, `validation_miou_by_threshold`.
    """
    thresholds = dict(thresholds or {})
    scales = list(scales or benchmark.scales)
    validation: list[EvaluationSample] | None = None
    test = benchmark.samples("test", benchmark.num_test)
    results: dict[str, Any] = {}
    for scale in scales:
        key, extra = _scale_key(scale), {}
        if key not in thresholds:
            validation = validation or benchmark.samples("validation", benchmark.num_validation)
            thresholds[key], curve = select_background_threshold(segmenter, validation, benchmark.protocol(scale))
            extra["validation_miou_by_threshold"] = curve
        protocol = benchmark.protocol(scale, thresholds[key])
        headline = scale == benchmark.headline_scale
        report = evaluate_segmentation(
            segmenter, test, protocol, overlay_dir=overlay_dir if headline else None, progress=False
        )
        results[key] = {**report.to_dict(), "background_threshold": thresholds[key], **extra}
        if headline and probes:
            for recolor in benchmark.probes:
                probe = benchmark.samples("test", benchmark.num_test, recolor=recolor)
                report = evaluate_segmentation(segmenter, probe, protocol, progress=False)
                results[f"probe_{recolor}"] = {**report.to_dict(), "background_threshold": thresholds[key]}
    return results


def color_baseline(benchmark: SyntheticBenchmark) -> dict[str, Any]:
    """Fit the colour co-occurrence baseline on the train split's captions and score it per patch and per pixel.

    Returns:
        `{"table": ..., "patch": {...}, "pixel": {...}}`; `patch`/`pixel` hold the test scores, the threshold chosen
        on the validation split with its curve, and `probe_<recolor>` scores.
    """
    from groupvit.data.synthetic import get_spec, make_split

    spec = get_spec(benchmark.preset)
    train = make_split(benchmark.preset, "train", benchmark.num_color_train, benchmark.image_size, benchmark.seed)
    pairs = [(np.asarray(s.image), s.caption) for s in train]
    table = baselines.fit_color_cooccurrence(
        (image for image, _ in pairs), (caption for _, caption in pairs), spec.class_names, benchmark.color_bins
    )

    def as_pairs(samples: list[EvaluationSample]) -> list[tuple[Any, np.ndarray]]:
        return [(np.asarray(s.image), s.annotation) for s in samples]

    validation = as_pairs(benchmark.samples("validation", benchmark.num_validation))
    test = as_pairs(benchmark.samples("test", benchmark.num_test))
    probes = {p: as_pairs(benchmark.samples("test", benchmark.num_test, recolor=p)) for p in benchmark.probes}
    results: dict[str, Any] = {"table": table.to_dict()}
    for name, cell in (("patch", benchmark.color_cell), ("pixel", 1)):
        threshold, curve = baselines.select_color_threshold(table, validation, cell)
        entry = baselines.evaluate_color_baseline(table, test, threshold, cell)
        entry["validation_miou_by_threshold"] = curve
        for recolor, samples in probes.items():
            entry[f"probe_{recolor}"] = baselines.evaluate_color_baseline(table, samples, threshold, cell)
        results[name] = entry
    return results


def compute_baselines(
    benchmark: SyntheticBenchmark, random_init_thresholds: Mapping[str, float] | None = None
) -> tuple[dict[str, Any], dict[str, float | None]]:
    """The model-independent baselines: all-background, random init (headline scale), colour co-occurrence.

    Args:
        benchmark: The protocol.
        random_init_thresholds: The random-init model's validated thresholds, if already chosen (else chosen now).

    Returns:
        The baselines' reports and their summary rows (row name -> mIoU).
    """
    from groupvit.data.synthetic import get_spec

    headline = _scale_key(benchmark.headline_scale)
    test = benchmark.samples("test", benchmark.num_test)
    found: dict[str, Any] = {
        "all_background": baselines.all_background(
            (s.annotation for s in test), get_spec(benchmark.preset).class_names
        )
    }
    rows: dict[str, float | None] = {"all background": found["all_background"]["mean_iou"]}
    random_init = random_init_segmenter(benchmark.model_preset, benchmark.random_init_seed)
    found["random_init"] = score_model(
        random_init, benchmark, random_init_thresholds, scales=[benchmark.headline_scale], probes=False
    )[headline]
    rows[f"random init {headline}"] = found["random_init"]["mean_iou"]
    found["color_cooccurrence"] = color_baseline(benchmark)
    for name in ("patch", "pixel"):
        entry = found["color_cooccurrence"][name]
        rows[f"colour co-occurrence per {name}"] = entry["mean_iou"]
        for recolor in benchmark.probes:
            rows[f"colour co-occurrence per {name} probe {recolor}"] = entry[f"probe_{recolor}"]["mean_iou"]
    return found, rows


def run_benchmark(
    segmenter: GroupViTSegmenter,
    benchmark: SyntheticBenchmark | None = None,
    thresholds: Mapping[str, float] | None = None,
    random_init_thresholds: Mapping[str, float] | None = None,
    stored_baselines: Mapping[str, Mapping[str, Any]] | None = None,
    with_baselines: bool = True,
    overlay_dir: str | Path | None = None,
) -> dict[str, Any]:
    """A model on the synthetic protocol beside its baselines.

    Args:
        segmenter: The model.
        benchmark: The protocol (default: :class:`SyntheticBenchmark`).
        thresholds: The model's validated thresholds per scale, if already chosen (see :func:`score_model`).
        random_init_thresholds: The same for the random-init baseline.
        stored_baselines: Numbers that are not computed here, each `{"mean_iou": ..., "source": ...}` (the plain-ViT
            baseline of the shipped model); reported as they are, marked `stored`.
        with_baselines: Compute the baselines (:func:`compute_baselines`).
        overlay_dir: Overlays of the headline scale.

    Returns:
        `{"benchmark", "model", "baselines", "summary"}`: the model's reports per scale and probe, the baselines'
        reports, and `summary`, row name -> mIoU (what :func:`format_benchmark` prints and :func:`aggregate_results`
        averages).
    """
    benchmark = benchmark or SyntheticBenchmark()
    headline = _scale_key(benchmark.headline_scale)
    model = score_model(segmenter, benchmark, thresholds, overlay_dir=overlay_dir)
    scales = [_scale_key(scale) for scale in benchmark.scales]
    summary: dict[str, float | None] = {f"model {key}": model[key]["mean_iou"] for key in scales}
    for recolor in benchmark.probes:
        summary[f"model {headline} probe {recolor}"] = model[f"probe_{recolor}"]["mean_iou"]
    found: dict[str, Any] = {}
    if with_baselines:
        found, rows = compute_baselines(benchmark, random_init_thresholds)
        summary.update(rows)
    for key in scales:
        summary[f"patch oracle {key}"] = model[key]["patch_oracle_miou"]
        summary[f"group oracle {key}"] = model[key]["oracle_group_miou"]
    for name, entry in (stored_baselines or {}).items():
        found[name] = {**entry, "stored": True}
        summary[f"{name} (stored)"] = entry["mean_iou"]
    return {"benchmark": benchmark.to_dict(), "model": model, "baselines": found, "summary": summary}


def format_benchmark(results: Mapping[str, Any]) -> str:
    """A plain-text table of a :func:`run_benchmark` result (mIoU in %), with the protocol on top."""
    bench = results["benchmark"]
    lines = [
        f"synthetic {bench['preset']} protocol: {bench['num_test']} test images, whole image, top-k "
        f"{bench['top_k'] or 'none'}, background threshold chosen on {bench['num_validation']} validation images",
    ]
    return "\n".join(lines) + "\n" + format_rows(results["summary"])


def format_rows(rows: Mapping[str, float | None]) -> str:
    """`row  mIoU (%)` lines (e.g. a :func:`run_benchmark` summary or :func:`compute_baselines` rows)."""
    return "\n".join(_rows({name: (value, None) for name, value in rows.items()}))


def _rows(values: Mapping[str, tuple[float | None, str | None]]) -> list[str]:
    width = max(len(name) for name in values) + 2
    lines = [f"{'':<{width}} mIoU (%)"]
    for name, (value, extra) in values.items():
        shown = "   -" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:6.1f}"
        lines.append(f"{name:<{width}} {shown}{'  ' + extra if extra else ''}")
    return lines


def aggregate_results(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and range over runs (e.g. three training seeds) of every `summary` row of :func:`run_benchmark` results.

    Args:
        results: Several :func:`run_benchmark` results (`groupvit demo` writes one into `results.json`).

    Returns:
        Row name -> `{"mean", "min", "max", "values"}` for the rows every run has a number for.

    Example:
        >>> runs = [{"summary": {"model 2x": 0.2}}, {"summary": {"model 2x": 0.3}}, {"summary": {"model 2x": 0.4}}]
        >>> {k: round(v, 3) for k, v in aggregate_results(runs)["model 2x"].items() if k != "values"}
        {'mean': 0.3, 'min': 0.2, 'max': 0.4}
    """
    summaries = [run.get("summary") for run in results]
    if not summaries:
        raise ValueError("no results to aggregate")
    missing = [i for i, summary in enumerate(summaries) if not summary]
    if missing:
        raise ValueError(f"results {missing} have no 'summary' (expected run_benchmark or groupvit demo results)")
    protocols = {repr(run.get("benchmark")) for run in results}
    if len(protocols) > 1:
        logger.warning("aggregating results of different protocol settings: %s", sorted(protocols))
    aggregate = {}
    for name in summaries[0]:
        values = [summary.get(name) for summary in summaries]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            continue
        aggregate[name] = {
            "mean": float(np.mean(values)),
            "min": float(np.min(values)),
            "max": float(np.max(values)),
            "values": [float(v) for v in values],
        }
    return aggregate


def format_aggregate(aggregate: Mapping[str, Mapping[str, Any]]) -> str:
    """`row  mean  [min, max]` lines of :func:`aggregate_results` (in %)."""
    runs = len(next(iter(aggregate.values()))["values"]) if aggregate else 0
    values = {
        name: (entry["mean"], f"[{100 * entry['min']:.1f}, {100 * entry['max']:.1f}] over {runs} runs")
        for name, entry in aggregate.items()
    }
    return "\n".join(_rows(values)) if values else "(nothing to aggregate)"
