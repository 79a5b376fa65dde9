"""The evaluation suite the field reports: eight zero-shot segmentation benchmarks in one table.

Column order as in TCL (CVPR'23) and SCLIP (ECCV'24): with a background class VOC21, Context60, COCO-Object; without
VOC20, Context59, COCO-Stuff, Cityscapes, ADE20K; then the average. Each benchmark is a protocol preset
(`groupvit/resources/protocols/<name>.json`: class names, prompt renames, background threshold, resolution, sliding
window) plus an on-disk layout (:mod:`groupvit.evaluation.datasets`).

:func:`run_suite` scores every benchmark whose folder is under the data root with
:func:`~groupvit.evaluation.evaluate.evaluate_segmentation` (so `accelerate launch` splits the images and sums the
confusion matrices), skips the absent ones with a note, and writes to the output directory:

- `benchmarks/<name>.json`: each finished benchmark, written as soon as it finishes; a restarted run with the same
  model, limit and settings reuses it instead of recomputing,
- `results.json`: everything, and `results.md`: the Markdown table (measured, the published numbers of the original
  checkpoints where they exist, images/s and the settings used).

A run with `limit` scores only the first images of each benchmark and is labelled a partial run everywhere.

Example:
    ```python
    >>> print("\\n".join(describe_protocols()[:1]))  # doctest: +NORMALIZE_WHITESPACE
    voc  VOC21  21 classes: 20 + background (threshold 0.95)  short side 448 (long side <= 2048), slide 448/224

    ```
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from groupvit.evaluation.datasets import BenchmarkFiles, find_benchmark, get_layout, open_benchmark
from groupvit.evaluation.evaluate import evaluate_segmentation
from groupvit.segmentation.protocols import SegmentationOptions, SegmentationProtocol, get_protocol
from groupvit.segmentation.segmenter import GroupViTSegmenter

logger = logging.getLogger(__name__)

__all__ = [
    "COLUMN_NAMES",
    "PAPER_RESULTS",
    "SUITE_PROTOCOLS",
    "BenchmarkResult",
    "PaperResults",
    "SuiteResult",
    "describe_protocols",
    "format_table",
    "paper_results",
    "run_suite",
]

SUITE_PROTOCOLS = ("voc", "context", "coco_object", "voc20", "context59", "coco_stuff", "cityscapes", "ade20k")
"""The eight presets, in the column order of the published tables (with background first)."""
COLUMN_NAMES = {
    "voc": "VOC21",
    "context": "Context60",
    "coco_object": "Object",
    "voc20": "VOC20",
    "context59": "Context59",
    "coco_stuff": "Stuff",
    "cityscapes": "City",
    "ade20k": "ADE",
}


@dataclass(frozen=True)
class PaperResults:
    """Published mIoU (%) of one checkpoint, per preset, and where they are printed."""

    miou: Mapping[str, float]
    source: str


# Published numbers of the original checkpoints, under the presets' settings. A protocol field would be the nicer home
# (`SegmentationProtocol.paper_miou: {checkpoint: value}`); they live here while the protocol keeps inference settings.
PAPER_RESULTS: dict[str, PaperResults] = {
    "nvidia/groupvit-gcc-yfcc": PaperResults(
        {"voc": 52.3, "context": 22.4, "coco_object": 24.3},
        "GroupViT paper (Xu et al., CVPR 2022) / NVlabs/GroupViT README, GCC + YFCC checkpoint "
        "(group_vit_gcc_yfcc_30e)",
    ),
    "nvidia/groupvit-gcc-redcaps": PaperResults(
        {"voc": 50.8, "context": 23.7, "coco_object": 27.5},
        "NVlabs/GroupViT README, GCC + RedCaps checkpoint (group_vit_gcc_redcap_30e)",
    ),
}


def paper_results(model_name: str | os.PathLike | None) -> PaperResults | None:
    """The published numbers of `model_name` (a Hub id, or a local folder named like one), or None."""
    if model_name is None:
        return None
    name = os.fspath(model_name).rstrip("/")
    if name in PAPER_RESULTS:
        return PAPER_RESULTS[name]
    base = os.path.basename(name)
    return next((results for key, results in PAPER_RESULTS.items() if key.split("/")[-1] == base), None)


def _settings_text(options: SegmentationOptions) -> str:
    """Resolution and window of `options`, e.g. `short side 448 (long side <= 2048), slide 448/224`."""
    size = "original size" if options.short_side is None else f"short side {options.short_side}"
    if options.short_side is not None and options.max_long_side is not None:
        size += f" (long side <= {options.max_long_side})"
    window = "whole image" if options.mode == "whole" else f"slide {options.window}/{options.window_stride}"
    return f"{size}, {window}"


def _classes_text(protocol: SegmentationProtocol) -> str:
    count = len(protocol.class_names)
    if protocol.options.with_background:
        return f"{count + 1} classes: {count} + background (threshold {protocol.options.background_threshold:g})"
    return f"{count} classes, no background (background pixels ignored)"


def describe_protocols(names: Sequence[str] = SUITE_PROTOCOLS) -> list[str]:
    """One line per preset: name, column, classes evaluated, background handling and resolution.

    Args:
        names: Presets to describe (default: the eight of the suite, in table order).
    """
    rows = []
    for name in names:
        protocol = get_protocol(name)
        rows.append((name, COLUMN_NAMES.get(name, name), _classes_text(protocol), _settings_text(protocol.options)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3] for row in rows]


@dataclass
class BenchmarkResult:
    """One finished benchmark of a suite run.

    Args:
        protocol: Preset name.
        mean_iou: mIoU in [0, 1] over the evaluated classes (NaN-mean: classes absent from both the annotations and
            the predictions do not count).
        num_images: Images scored.
        num_available: Images of the benchmark found on disk.
        seconds: Wall time of the evaluation.
        per_category_iou: IoU per evaluated class (no `background` entry for presets without one).
        options: The segmentation options used.
        label_format: How the annotations were stored (see :class:`~groupvit.evaluation.datasets.LabelSource`).
        fingerprint: What a restarted run must match to reuse this result (model, limit, options, images).
    """

    protocol: str
    mean_iou: float
    num_images: int
    num_available: int
    seconds: float
    per_category_iou: dict[str, float]
    options: dict[str, Any]
    label_format: str
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else math.nan

    @property
    def partial(self) -> bool:
        return self.num_images < self.num_available

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values.update(images_per_second=self.images_per_second, partial=self.partial)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> BenchmarkResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})


@dataclass
class SuiteResult:
    """What :func:`run_suite` measured and wrote.

    Args:
        model: The model's name or path.
        results: Finished benchmarks, in table order.
        skipped: Preset -> why it was not run.
        limit: The per-benchmark image cap (None: full benchmarks).
        reused: Presets whose result was read from an earlier run instead of recomputed.
        table: The Markdown table (also in `results.md`).
    """

    model: str
    results: dict[str, BenchmarkResult]
    skipped: dict[str, str]
    limit: int | None = None
    reused: list[str] = field(default_factory=list)
    table: str = ""

    @property
    def average_miou(self) -> float | None:
        """Mean of the measured mIoUs (None when nothing was measured)."""
        values = [r.mean_iou for r in self.results.values()]
        return float(np.mean(values)) if values else None

    def to_dict(self) -> dict[str, Any]:
        paper = paper_results(self.model)
        return {
            "model": self.model,
            "partial": self.limit is not None,
            "limit": self.limit,
            "order": [name for name in SUITE_PROTOCOLS if name in self.results or name in self.skipped],
            "average_miou": self.average_miou,
            "benchmarks": {name: result.to_dict() for name, result in self.results.items()},
            "skipped": dict(self.skipped),
            "reused": list(self.reused),
            "paper": None if paper is None else {"miou": dict(paper.miou), "source": paper.source},
        }


def _percent(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def format_table(suite: SuiteResult) -> str:
    """The Markdown table of a suite run: mIoU (%) per benchmark in the field's column order, the average, the
    published numbers beside them where known, then images, settings and throughput per benchmark."""
    names = [name for name in SUITE_PROTOCOLS if name in suite.results or name in suite.skipped]
    names += [name for name in [*suite.results, *suite.skipped] if name not in names]
    paper = paper_results(suite.model)
    measured = [suite.results[n].mean_iou if n in suite.results else None for n in names]
    count = sum(v is not None for v in measured)
    average_title = "Avg" if count == len(names) == len(SUITE_PROTOCOLS) else f"Avg ({count} of {len(names)})"
    lines = [f"## Zero-shot segmentation mIoU (%): {suite.model}", ""]
    if suite.limit is not None:
        lines += [
            f"**Partial run: at most {suite.limit} images per benchmark; not comparable to published numbers.**",
            "",
        ]
    with_background = [COLUMN_NAMES.get(n, n) for n in names if get_protocol(n).options.with_background]
    without = [COLUMN_NAMES.get(n, n) for n in names if not get_protocol(n).options.with_background]
    lines += [
        f"With background: {', '.join(with_background) or '—'}; without: {', '.join(without) or '—'}.",
        "",
        "| | " + " | ".join(COLUMN_NAMES.get(n, n) for n in names) + f" | {average_title} |",
        "|---" * (len(names) + 2) + "|",
        "| measured | " + " | ".join(_percent(v) for v in measured) + f" | {_percent(suite.average_miou)} |",
    ]
    if paper is not None:
        values = [paper.miou.get(n) for n in names]
        known = [values[i] for i, v in enumerate(measured) if v is not None]
        average = float(np.mean(known)) / 100 if known and all(v is not None for v in known) else None
        cells = ["—" if v is None else f"{v:.1f}" for v in values]
        lines.append("| paper | " + " | ".join(cells) + f" | {_percent(average)} |")
    lines += ["", "| benchmark | images | settings | images/s |", "|---|---|---|---|"]
    for name, result in suite.results.items():
        protocol = get_protocol(name)
        options = SegmentationOptions.from_dict(result.options)
        settings = _settings_text(options)
        if options.with_background:
            settings += f", background threshold {options.background_threshold:g}"
        if result.options != protocol.options.to_dict():
            settings += " (changed from the preset)"
        images = f"{result.num_images} of {result.num_available}"
        lines.append(f"| {COLUMN_NAMES.get(name, name)} | {images} | {settings} | {result.images_per_second:.2f} |")
    notes = [f"- {COLUMN_NAMES.get(n, n)} skipped: {why}" for n, why in suite.skipped.items()]
    notes += [f"- {COLUMN_NAMES.get(n, n)}: reused the result of an earlier run" for n in suite.reused]
    if paper is not None:
        notes.append(f"- paper: {paper.source}")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _resolve_protocols(protocols: Sequence[str] | str) -> list[str]:
    if protocols == "all":
        return list(SUITE_PROTOCOLS)
    names = [protocols] if isinstance(protocols, str) else list(protocols)
    if not names:
        raise ValueError("no protocols given; pass a list of presets or 'all'")
    unknown = [name for name in names if name not in SUITE_PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown suite protocol(s) {unknown}; available: {list(SUITE_PROTOCOLS)} or 'all'")
    if len(set(names)) != len(names):
        raise ValueError(f"protocols listed twice: {names}")
    return [name for name in SUITE_PROTOCOLS if name in names]


def _load_finished(path: Path, fingerprint: Mapping[str, Any]) -> BenchmarkResult | None:
    """The result saved at `path` if it was measured with the same `fingerprint`, else None."""
    if not path.is_file():
        return None
    try:
        result = BenchmarkResult.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        logger.warning("ignoring unreadable earlier result %s (%s)", path, error)
        return None
    if result.fingerprint != json.loads(json.dumps(fingerprint)):
        logger.info("%s was measured with other settings; measuring again", path)
        return None
    return result


def _weights_identity(model_name: str) -> list[list[Any]]:
    """Name, size and modification time of the weight files when `model_name` is a local folder (so a checkpoint
    rewritten in place is not mistaken for the one an earlier run measured); empty for a Hub id."""
    folder = Path(model_name) if model_name else None
    if folder is None or not folder.is_dir():
        return []
    weights = sorted(p for pattern in ("*.safetensors", "*.bin") for p in folder.glob(pattern))
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in weights]


def _write_json(path: Path, values: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(values, indent=2, default=str) + "\n")
    temporary.replace(path)  # a run killed while writing leaves the previous file intact


def run_suite(
    segmenter: GroupViTSegmenter | str | os.PathLike,
    protocols: Sequence[str] | Literal["all"],
    data_root: str | os.PathLike,
    output_dir: str | os.PathLike,
    limit: int | None = None,
    accelerator: Any = None,
    *,
    option_changes: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    progress: bool = True,
) -> SuiteResult:
    """Score a model on the benchmarks found under `data_root` and write the table.

    Args:
        segmenter: A :class:`~groupvit.segmentation.segmenter.GroupViTSegmenter` (or an object with its
            `encode_labels`/`segment`), or a model folder / Hub id to load one from.
        protocols: Preset names (see :data:`SUITE_PROTOCOLS`), or `"all"`. With `"all"` a benchmark without a folder
            under `data_root` is skipped with a note; a preset named explicitly must be there.
        data_root: The folder holding the benchmarks in mmsegmentation's layouts (see
            :mod:`groupvit.evaluation.datasets`).
        output_dir: Where `results.json`, `results.md` and `benchmarks/<name>.json` go.
        limit: Score only the first `limit` images of each benchmark (a partial run, labelled as such).
        accelerator: Optional `accelerate.Accelerator`; images are split across its processes and only the main
            process writes files.
        option_changes: Segmentation options changed for every benchmark (e.g. `{"short_side": 224}`); the table
            marks the settings as changed from the preset.
        model_name: Name shown in the table and used to look up published numbers (default: the path, or the
            model's `name_or_path`). With the sizes and times of a local folder's weight files, it is how a restarted
            run recognises its finished benchmarks; a model without any name never reuses them.
        progress: Show a progress bar per benchmark.

    Returns:
        The :class:`SuiteResult` (also written to `output_dir`).

    Raises:
        ValueError: For an unknown preset, a benchmark folder that is incomplete (before any model runs), an
            explicitly requested benchmark that is absent, or a bad `limit`.
    """
    names = _resolve_protocols(protocols)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ValueError(f"limit must be None or a positive int, got {limit!r}")
    option_changes = dict(option_changes or {})
    # find every benchmark first: a broken folder fails before the model is loaded
    found: dict[str, BenchmarkFiles] = {}
    skipped: dict[str, str] = {}
    for name in names:
        files = find_benchmark(name, data_root)
        if files is not None:
            found[name] = files
            continue
        if protocols != "all":
            open_benchmark(name, data_root)  # raises, saying what was expected and found
        expected = " or ".join(get_layout(name).roots)
        skipped[name] = f"no {expected} under {os.fspath(data_root)}"
        logger.info("skipping %s: %s", name, skipped[name])
    if isinstance(segmenter, (str, os.PathLike)):
        model_name = model_name or os.fspath(segmenter)
        device = accelerator.device if accelerator is not None else None
        segmenter = GroupViTSegmenter.from_pretrained(segmenter, device=device)
    known_name = model_name or str(getattr(getattr(segmenter, "model", None), "name_or_path", "") or "")
    model_name = known_name or type(segmenter).__name__
    if not known_name:
        logger.warning("the model has no name or path: finished benchmarks of earlier runs will not be reused")
    is_main = accelerator is None or accelerator.is_main_process
    output_dir = Path(output_dir)
    suite = SuiteResult(model=model_name, results={}, skipped=skipped, limit=limit)
    for name, files in found.items():
        protocol = get_protocol(name)
        options = protocol.options.replace(**option_changes)
        fingerprint = {
            "model": model_name,
            "weights": _weights_identity(known_name),
            "limit": limit,
            "num_available": len(files),
            "options": options.to_dict(),
        }
        path = output_dir / "benchmarks" / f"{name}.json"
        previous = _load_finished(path, fingerprint) if known_name else None
        if previous is not None:
            logger.info("%s: reusing the finished result in %s", name, path)
            suite.results[name] = previous
            suite.reused.append(name)
            continue
        scored = dataclasses.replace(protocol, options=options)
        start = time.perf_counter()
        report = evaluate_segmentation(
            segmenter, files.samples(limit), scored, accelerator=accelerator, progress=progress
        )
        seconds = time.perf_counter() - start
        per_category = dict(report.per_category_iou)
        result = BenchmarkResult(
            protocol=name,
            mean_iou=report.mean_iou,
            num_images=report.num_images,
            num_available=len(files),
            seconds=seconds,
            per_category_iou=per_category,
            options=options.to_dict(),
            label_format=files.label_source.description,
            fingerprint=fingerprint,
        )
        logger.info("%s: mIoU %.1f on %d images", name, 100 * result.mean_iou, result.num_images)
        suite.results[name] = result
        if is_main:
            _write_json(path, result.to_dict())
    suite.table = format_table(suite)
    if is_main:
        _write_json(output_dir / "results.json", suite.to_dict())
        (output_dir / "results.md").write_text(suite.table)
    return suite
