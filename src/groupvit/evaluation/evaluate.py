"""Zero-shot segmentation evaluation: mIoU with a streaming confusion matrix, classification accuracy, overlays.

The protocol (class names, renames, template, background threshold, resolution, sliding window) comes from a named
preset (`groupvit.segmentation.protocols.get_protocol`): `voc`, `context`, `coco_object`, or `synthetic` for our
generated data.
Annotations use 0 for background, 1..C for the classes in protocol order and 255 for "ignore", so predictions are made
with the background first. A protocol without a background class (`background_threshold=None`: VOC20, Context59,
COCO-Stuff, Cityscapes, ADE20K) predicts one of the C classes at every pixel; its annotations must then hold no 0, and
its mIoU is over the C classes.

`evaluate_segmentation` runs on one process or under Accelerate: each process takes every `num_processes`-th image
and the confusion matrices are summed across processes at the end.
"""

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from groupvit.evaluation.confusion import ConfusionMatrix
from groupvit.evaluation.diagnostics import GroupingDiagnostics
from groupvit.segmentation.protocols import SegmentationProtocol, get_protocol
from groupvit.segmentation.segmenter import GroupViTSegmenter, resize_logits
from groupvit.segmentation.visualization import colorize, grid, group_overlay, label_colors, legend, overlay

logger = logging.getLogger(__name__)


@dataclass
class EvaluationSample:
    """An image and its annotation (`(H, W)` ints: 0 background, 1..C classes, 255 ignore)."""

    image: Image.Image
    annotation: np.ndarray
    name: str = ""


@dataclass
class EvaluationReport:
    """What `evaluate_segmentation` measured."""

    protocol: str
    labels: list[str]
    num_images: int
    mean_iou: float
    mean_accuracy: float
    overall_accuracy: float
    per_category_iou: dict[str, float]
    classification_accuracy: float
    groups_used: list[float]
    options: dict[str, Any] = field(default_factory=dict)
    oracle_group_miou: float | None = None
    patch_oracle_miou: float | None = None
    group_label_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def load_annotated_dataset(source: str, split: str = "validation") -> Any:
    """The `split` of a `datasets` source (see `groupvit.data.streams.load_hf_dataset`), refused when it has no rows.

    Raises:
        ValueError: For a `save_to_disk` folder without `split` (naming the splits it has), or a dataset without rows.
    """
    from groupvit.data.streams import EmptyDatasetError, load_hf_dataset

    empty = f"split {split!r} of dataset {source!r} has no rows: nothing to evaluate"
    try:
        dataset = load_hf_dataset(source, split=split)
    except EmptyDatasetError as error:
        raise ValueError(empty) from error
    if hasattr(dataset, "__len__") and len(dataset) == 0:
        raise ValueError(empty)
    return dataset


def samples_from_dataset(dataset: Any, image_column: str = "image", annotation_column: str = "annotation") -> Iterator:
    """`EvaluationSample`s from a `datasets` dataset (or any iterable of dicts) with image + annotation columns."""
    for index, row in enumerate(dataset):
        for column in (image_column, annotation_column):
            if column not in row:
                raise ValueError(f"evaluation rows need a {column!r} column, got {sorted(row)}")
        annotation = np.asarray(row[annotation_column])
        if annotation.ndim == 3:  # an RGB-saved label image: the classes are in the first channel
            annotation = annotation[..., 0]
        yield EvaluationSample(row[image_column].convert("RGB"), annotation.astype(np.int64), str(index))


def synthetic_samples(preset: str, split: str, num_samples: int, image_size: int = 64, seed: int = 0) -> Iterator:
    """`EvaluationSample`s of a `groupvit.data.synthetic` split; its masks already use 0 = background."""
    from groupvit.data.synthetic import make_split

    for sample in make_split(preset, split, num_samples, image_size, seed):
        yield EvaluationSample(sample.image, sample.mask.astype(np.int64), f"{split}-{sample.index:05d}")


def evaluate_segmentation(
    segmenter: GroupViTSegmenter,
    samples: Iterable[EvaluationSample],
    protocol: SegmentationProtocol,
    *,
    accelerator: Any = None,
    overlay_dir: str | Path | None = None,
    num_overlays: int = 8,
    progress: bool = True,
) -> EvaluationReport:
    """Segment every sample with the protocol's labels and options and score it.

    Args:
        segmenter: The model wrapper.
        samples: Images with annotations in protocol label order.
        protocol: Labels and inference options. With `background_threshold=None` every pixel gets one of the C
            labels, the annotations must hold no background (0) and the report's classes are the C labels.
        accelerator: Optional `accelerate.Accelerator`: images are split across processes and results summed.
        overlay_dir: Where to write `overlay_grid.png` (image | ground truth | prediction) and group maps.
        num_overlays: Images (from the first process) shown in the overlay grid.
        progress: Show a progress bar on the main process.

    Raises:
        ValueError: When there is no image to score (on every process together), for an annotation whose size
            differs from its image, or a background pixel in a protocol without background.

    Returns:
        The report (identical on every process). When every image took one window, it also holds the grouping
        diagnostics of :func:`groupvit.evaluation.diagnostics.grouping_diagnostics`: the mIoU of the group oracle
        and of the patch oracle, and the share of foreground groups the model labels correctly.
    """
    from tqdm.auto import tqdm

    options = protocol.options.replace(background_first=True)
    with_background = options.with_background
    labels = protocol.labels
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    text_embeds = segmenter.encode_labels(labels, options.templates, options.template_ensemble)
    confusion = ConfusionMatrix(len(labels) + 1, ignore_index=255)
    diagnostics = GroupingDiagnostics(len(labels) + 1, ignore_index=255)
    hits, images = 0, 0
    rows: list[list[Image.Image]] = []
    group_rows: list[list[Image.Image]] = []
    bar = tqdm(desc=f"eval {protocol.name}", disable=not progress or rank != 0, unit="img")
    for index, sample in enumerate(samples):
        if index % world != rank:
            continue
        result = segmenter.segment(sample.image, labels, options=options, text_embeds=text_embeds)[0]
        # in the annotations' numbering: 0 background, 1..C the labels
        prediction = result.label_map.cpu().numpy() + (0 if with_background else 1)
        if not with_background and (sample.annotation == 0).any():
            raise ValueError(
                f"{protocol.name}: annotation {sample.name!r} holds background (0) pixels, but the protocol has no "
                "background class (background_threshold=None)"
            )
        label_logits = None
        if result.group_maps:  # the diagnostics (one window only) read the labels' logits after a background row
            label_logits = resize_logits(result.label_logits, tuple(result.label_map.shape))
            if not with_background:
                label_logits = torch.cat([label_logits.new_full((1, *label_logits.shape[1:]), -1.0), label_logits])
        if prediction.shape != sample.annotation.shape:
            raise ValueError(
                f"annotation {sample.name!r} has shape {sample.annotation.shape}, image {prediction.shape}"
            )
        confusion.update(prediction, sample.annotation)
        present = {int(v) for v in np.unique(sample.annotation)} - {0, 255}
        if present:
            hits += int(int(result.image_scores.argmax()) + 1 in present)
            images += 1
        diagnostics.update(sample.annotation, result.group_maps, label_logits)
        if len(rows) < num_overlays and overlay_dir is not None:
            rows.append(_overlay_row(sample, result, labels))
            if result.group_maps:
                group_rows.append([sample.image] + [group_overlay(sample.image, m) for m in result.group_maps])
        bar.update(1)
    bar.close()

    num_images = diagnostics.num_images
    if accelerator is not None and world > 1:
        confusion = confusion.synchronize(accelerator.gather, accelerator.device)
        diagnostics = diagnostics.synchronize(accelerator)
        totals = accelerator.reduce(torch.tensor([hits, images], device=accelerator.device), reduction="sum")
        hits, images = (int(v) for v in totals.tolist())
        num_images = diagnostics.num_images
    if num_images == 0:
        raise ValueError(f"no images to evaluate for protocol {protocol.name!r}: the dataset is empty")
    # without a background class its row and column of the matrix stay empty: NaN IoU, left out of the means
    metrics = confusion.compute()
    names = ["background", *labels] if with_background else labels
    per_category = metrics["per_category_iou"][0 if with_background else 1 :]
    report = EvaluationReport(
        protocol=protocol.name,
        labels=names,
        num_images=num_images,
        mean_iou=float(metrics["mean_iou"]),
        mean_accuracy=float(metrics["mean_accuracy"]),
        overall_accuracy=float(metrics["overall_accuracy"]),
        per_category_iou={name: float(v) for name, v in zip(names, per_category, strict=True)},
        classification_accuracy=hits / max(1, images),
        options=options.to_dict(),
        **diagnostics.summary(),
    )
    if overlay_dir is not None and rank == 0 and rows:
        write_overlays(Path(overlay_dir), rows, group_rows, labels)
    return report


def _overlay_row(sample: EvaluationSample, result: Any, labels: list[str]) -> list[Image.Image]:
    colors = label_colors(len(labels) + 1, background_index=0)
    truth = colorize(sample.annotation, colors)
    prediction = overlay(sample.image, result.label_map, result.labels, background_index=0, with_legend=False)
    return [sample.image, truth, prediction]


def write_overlays(
    directory: Path, rows: list[list[Image.Image]], group_rows: list[list[Image.Image]], labels: list[str]
) -> None:
    """`overlay_grid.png` (image | ground truth | prediction, with a legend) and `groups.png` (both stages)."""
    directory.mkdir(parents=True, exist_ok=True)
    cell = (max(96, rows[0][0].width), max(96, rows[0][0].height))
    picture = grid(rows, column_titles=["image", "ground truth", "prediction"], cell_size=cell)
    colors = label_colors(len(labels) + 1, background_index=0)
    key = legend(["background", *labels], colors, width=picture.width)
    canvas = Image.new("RGB", (picture.width, picture.height + key.height), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    canvas.paste(key, (0, picture.height))
    canvas.save(directory / "overlay_grid.png")
    if group_rows:
        titles = ["image"] + [f"groups, stage {i + 1}" for i in range(len(group_rows[0]) - 1)]
        grid(group_rows, column_titles=titles, cell_size=cell).save(directory / "groups.png")
    logger.info("wrote overlays to %s", directory)


def synthetic_protocol(preset: str, **option_changes: Any) -> SegmentationProtocol:
    """The `synthetic` protocol filled with a synthetic preset's class names."""
    from groupvit.data.synthetic import get_spec

    return get_protocol("synthetic").with_class_names(list(get_spec(preset).class_names), **option_changes)


def format_report(report: EvaluationReport) -> str:
    """A plain-text table: per-class IoU, then the summary numbers."""
    width = max(len(name) for name in report.per_category_iou) + 2
    lines = [f"{'class':<{width}} IoU (%)"]
    lines += [f"{name:<{width}} {100 * iou:6.1f}" for name, iou in report.per_category_iou.items()]
    lines.append(f"{'mIoU':<{width}} {100 * report.mean_iou:6.1f}")
    lines.append(f"classification accuracy {100 * report.classification_accuracy:.1f}% on {report.num_images} images")
    if report.groups_used:
        lines.append(
            "groups used per image: " + ", ".join(f"stage {i + 1}: {g:.2f}" for i, g in enumerate(report.groups_used))
        )
    if report.oracle_group_miou is not None:
        lines.append(
            f"diagnostics: group-oracle mIoU {100 * report.oracle_group_miou:.1f}, patch-oracle mIoU "
            f"{100 * report.patch_oracle_miou:.1f}, foreground groups labelled right "
            f"{100 * report.group_label_accuracy:.1f}%"
        )
    return "\n".join(lines)


THRESHOLD_CANDIDATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def select_background_threshold(
    segmenter: GroupViTSegmenter,
    samples: list[EvaluationSample],
    protocol: SegmentationProtocol,
    candidates: Iterable[float] = THRESHOLD_CANDIDATES,
) -> tuple[float, dict[float, float]]:
    """The background threshold with the best mIoU on `samples` (a validation split; never the test split).

    Returns:
        The best threshold and the mIoU of every candidate.
    """
    scores = {}
    for threshold in candidates:
        candidate = protocol.with_class_names(list(protocol.class_names), background_threshold=threshold)
        scores[threshold] = evaluate_segmentation(segmenter, samples, candidate, progress=False).mean_iou
    best = max(scores, key=lambda t: (scores[t], -t))
    logger.info("background threshold %.2f (validation mIoU %.3f)", best, scores[best])
    return best, scores
