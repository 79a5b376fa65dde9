"""Readers for the on-disk layouts of the eight open-vocabulary segmentation benchmarks.

The layouts are those mmsegmentation's dataset preparation produces (and GroupViT, TCL, SCLIP and ProxyCLIP read),
all under one data root:

```
DATA_ROOT/
  VOCdevkit/VOC2012/  JPEGImages/*.jpg  SegmentationClass/*.png  ImageSets/Segmentation/val.txt   (voc, voc20)
  VOCdevkit/VOC2010/  JPEGImages/*.jpg  SegmentationClassContext/*.png
                      ImageSets/SegmentationContext/val.txt                           (context, context59)
  coco_stuff164k/     images/val2017/*.jpg  annotations/val2017/*_labelTrainIds.png   (coco_stuff, coco_object)
  cityscapes/         leftImg8bit/val/<city>/*_leftImg8bit.png
                      gtFine/val/<city>/*_gtFine_labelTrainIds.png (or *_gtFine_labelIds.png)   (cityscapes)
  ade/ADEChallengeData2016/  images/validation/*.jpg  annotations/validation/*.png      (ade20k)
```
`DATA_ROOT` may also be the benchmark's own folder (e.g. `.../VOCdevkit/VOC2012`), and ADE20K may sit at
`DATA_ROOT/ADEChallengeData2016`.

Every reader yields :class:`~groupvit.evaluation.evaluate.EvaluationSample`s whose annotation follows the one
convention `evaluate_segmentation` scores: `0` background, `1..C` the protocol's classes in its order, `255` ignored.
Benchmarks without a background class never contain `0` (their unlabelled pixels are `255`). The dataset-specific
mappings are lookup tables from the stored value to that convention:

| preset | stored labels | mapping |
|---|---|---|
| voc | VOC palette indices: 0 background, 1..20, 255 boundary | identity |
| voc20 | same files | 0 -> 255 (mmseg `reduce_zero_label`) |
| context | mmseg-converted Context masks: 0 background, 1..59 | identity |
| context59 | same files | 0 -> 255 (mmseg `PascalContextDataset59`) |
| coco_stuff | `_labelTrainIds.png` 0..170 / 255, or the raw 182-id `.png` | t -> t + 1 (raw: mmseg's id table) |
| coco_object | GroupViT's `_instanceTrainIds.png` (0..80), else COCO-Stuff's | things t < 80 -> t + 1, stuff -> 0 |
| cityscapes | `_gtFine_labelTrainIds.png` 0..18 / 255, or `_gtFine_labelIds.png` | t -> t + 1 (ids: their table) |
| ade20k | 0 "other", 1..150 | 0 -> 255 (mmseg `reduce_zero_label`) |

A stored value outside the table raises a ValueError naming the file and the values, so a wrong folder (e.g. colour
PNGs or the wrong COCO files) is never scored silently.

Example:
    ```python
    >>> files = find_benchmark("voc", "/data")  # None when /data holds no VOC folder
    >>> for sample in files.samples(limit=2):  # doctest: +SKIP
    ...     print(sample.name, sample.image.size, np.unique(sample.annotation))

    ```
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from groupvit.evaluation.evaluate import EvaluationSample

__all__ = [
    "BACKGROUND_INDEX",
    "BENCHMARK_LAYOUTS",
    "IGNORE_INDEX",
    "BenchmarkFiles",
    "BenchmarkLayout",
    "LabelSource",
    "find_benchmark",
    "get_layout",
    "open_benchmark",
    "read_label_map",
]

IGNORE_INDEX = 255
"""Annotation value of ignored pixels, in every benchmark after mapping."""
BACKGROUND_INDEX = 0
"""Annotation value of background pixels (only in benchmarks with a background class)."""
_INVALID = -1


def _lookup_table(mapping: Mapping[int, int]) -> np.ndarray:
    """A 256-entry table `stored value -> protocol label`; values absent from `mapping` are invalid (-1)."""
    table = np.full(256, _INVALID, dtype=np.int64)
    for stored, label in mapping.items():
        table[stored] = label
    return table


def _shifted(num_classes: int) -> dict[int, int]:
    """Train ids `0..num_classes-1 -> 1..num_classes` (0 is our background), 255 kept."""
    return {**{t: t + 1 for t in range(num_classes)}, IGNORE_INDEX: IGNORE_INDEX}


def _identity(num_labels: int) -> dict[int, int]:
    return {**{v: v for v in range(num_labels)}, IGNORE_INDEX: IGNORE_INDEX}


def _zero_ignored(num_classes: int) -> dict[int, int]:
    """mmseg's `reduce_zero_label` in our convention: 0 -> ignored, 1..C kept."""
    return {**_identity(num_classes + 1), 0: IGNORE_INDEX}


# COCO-Stuff-164k raw annotation ids (0-based, 182 ids of which 11 are unused) -> the 171 contiguous train ids, as in
# mmseg's tools/dataset_converters/coco_stuff164k.py (`clsID_to_trID`): the unused thing ids are 11, 25, 28, 29, 44,
# 65, 67, 68, 70, 82 and 90; ids 0..90 are the 80 things, 91..181 the 91 stuff classes.
_COCO_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
COCO_STUFF_TRAIN_IDS: dict[int, int] = {
    raw: train for train, raw in enumerate(r for r in range(182) if r not in _COCO_UNUSED_IDS)
}
_COCO_NUM_THINGS = 80

# Cityscapes label ids -> train ids (cityscapesScripts helpers/labels.py; every other id is ignored).
CITYSCAPES_TRAIN_IDS: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
# label ids 0..33 ("unlabeled" .. "bicycle") -> our labels: train id + 1, or ignored
_CITYSCAPES_ID_LABELS = {i: CITYSCAPES_TRAIN_IDS[i] + 1 if i in CITYSCAPES_TRAIN_IDS else 255 for i in range(34)}


@dataclass(frozen=True, eq=False)
class LabelSource:
    """One way a benchmark's annotations are stored: the file-name ending and the table to the protocol's labels.

    Args:
        suffix: How the annotation file names end, e.g. `"_gtFine_labelTrainIds.png"`.
        table: `(256,)` int64 lookup `stored value -> label` (0 background, 1..C classes, 255 ignore, -1 invalid).
        description: What the stored values mean, for error messages and the results.
    """

    suffix: str
    table: np.ndarray
    description: str


@dataclass(frozen=True, eq=False)
class BenchmarkLayout:
    """Where a benchmark's validation files are and how their labels map to the protocol's class order.

    Args:
        name: The protocol preset it is scored with (`groupvit.segmentation.segmenter.get_protocol(name)`).
        roots: Candidate benchmark folders relative to the data root (the data root itself is tried last).
        image_dir: Image folder relative to the benchmark folder.
        label_dir: Annotation folder relative to the benchmark folder.
        image_suffix: How image file names end (`".jpg"`, `"_leftImg8bit.png"`).
        label_sources: Annotation formats, tried in order; the first with files in `label_dir` is read.
        split_file: Text file of image ids (relative to the benchmark folder); None: every annotation file under
            `label_dir` (sub-folders included, as Cityscapes' cities).
        num_images: Images of the full validation split (for the notes; not enforced).
    """

    name: str
    roots: tuple[str, ...]
    image_dir: str
    label_dir: str
    image_suffix: str
    label_sources: tuple[LabelSource, ...]
    split_file: str | None = None
    num_images: int | None = None


_VOC = dict(
    roots=("VOCdevkit/VOC2012",),
    image_dir="JPEGImages",
    label_dir="SegmentationClass",
    image_suffix=".jpg",
    split_file="ImageSets/Segmentation/val.txt",
    num_images=1449,
)
_CONTEXT = dict(
    roots=("VOCdevkit/VOC2010",),
    image_dir="JPEGImages",
    label_dir="SegmentationClassContext",
    image_suffix=".jpg",
    split_file="ImageSets/SegmentationContext/val.txt",
    num_images=5105,
)
_COCO = dict(
    roots=("coco_stuff164k",),
    image_dir="images/val2017",
    label_dir="annotations/val2017",
    image_suffix=".jpg",
    num_images=5000,
)
_COCO_RAW = "raw COCO-Stuff ids 0..181 (unused ids invalid), 255 ignore"

BENCHMARK_LAYOUTS: dict[str, BenchmarkLayout] = {
    "voc": BenchmarkLayout(
        name="voc",
        label_sources=(LabelSource(".png", _lookup_table(_identity(21)), "VOC indices: 0 background, 1..20, 255"),),
        **_VOC,
    ),
    "voc20": BenchmarkLayout(
        name="voc20",
        label_sources=(
            LabelSource(".png", _lookup_table(_zero_ignored(20)), "VOC indices: 0 background (ignored), 1..20, 255"),
        ),
        **_VOC,
    ),
    "context": BenchmarkLayout(
        name="context",
        label_sources=(
            LabelSource(".png", _lookup_table(_identity(60)), "mmseg Context labels: 0 background, 1..59"),
        ),
        **_CONTEXT,
    ),
    "context59": BenchmarkLayout(
        name="context59",
        label_sources=(
            LabelSource(
                ".png", _lookup_table(_zero_ignored(59)), "mmseg Context labels: 0 background (ignored), 1..59"
            ),
        ),
        **_CONTEXT,
    ),
    "coco_stuff": BenchmarkLayout(
        name="coco_stuff",
        label_sources=(
            LabelSource("_labelTrainIds.png", _lookup_table(_shifted(171)), "COCO-Stuff train ids 0..170, 255"),
            LabelSource(
                ".png",
                _lookup_table({**{r: t + 1 for r, t in COCO_STUFF_TRAIN_IDS.items()}, IGNORE_INDEX: IGNORE_INDEX}),
                _COCO_RAW,
            ),
        ),
        **_COCO,
    ),
    "coco_object": BenchmarkLayout(
        name="coco_object",
        label_sources=(
            LabelSource(
                "_instanceTrainIds.png", _lookup_table(_identity(81)), "GroupViT COCO-Object: 0 background, 1..80"
            ),
            LabelSource(
                "_labelTrainIds.png",
                _lookup_table({**_shifted(_COCO_NUM_THINGS), **{t: 0 for t in range(_COCO_NUM_THINGS, 171)}}),
                "COCO-Stuff train ids: things 0..79 kept, stuff 80..170 -> background",
            ),
            LabelSource(
                ".png",
                _lookup_table(
                    {
                        **{r: (t + 1 if t < _COCO_NUM_THINGS else 0) for r, t in COCO_STUFF_TRAIN_IDS.items()},
                        IGNORE_INDEX: IGNORE_INDEX,
                    }
                ),
                _COCO_RAW + "; stuff -> background",
            ),
        ),
        **_COCO,
    ),
    "cityscapes": BenchmarkLayout(
        name="cityscapes",
        roots=("cityscapes",),
        image_dir="leftImg8bit/val",
        label_dir="gtFine/val",
        image_suffix="_leftImg8bit.png",
        label_sources=(
            LabelSource("_gtFine_labelTrainIds.png", _lookup_table(_shifted(19)), "Cityscapes train ids 0..18, 255"),
            LabelSource(
                "_gtFine_labelIds.png",
                _lookup_table(_CITYSCAPES_ID_LABELS),
                "Cityscapes label ids 0..33 (-> train ids; the others ignored)",
            ),
        ),
        num_images=500,
    ),
    "ade20k": BenchmarkLayout(
        name="ade20k",
        roots=("ade/ADEChallengeData2016", "ADEChallengeData2016"),
        image_dir="images/validation",
        label_dir="annotations/validation",
        image_suffix=".jpg",
        label_sources=(
            LabelSource(".png", _lookup_table(_zero_ignored(150)), "ADE20K labels: 0 other (ignored), 1..150"),
        ),
        num_images=2000,
    ),
}


def get_layout(name: str) -> BenchmarkLayout:
    """The on-disk layout of benchmark `name` (a protocol preset name)."""
    if name not in BENCHMARK_LAYOUTS:
        raise ValueError(f"no on-disk layout for benchmark {name!r}; known: {sorted(BENCHMARK_LAYOUTS)}")
    return BENCHMARK_LAYOUTS[name]


def read_label_map(path: str | os.PathLike, source: LabelSource) -> np.ndarray:
    """Read one annotation PNG and map it to the protocol's labels.

    Args:
        path: A single-channel (grayscale or palette) PNG of stored label values.
        source: The format the file is stored in.

    Returns:
        `(H, W)` int64 array: 0 background, 1..C classes, 255 ignore.

    Raises:
        ValueError: For a colour (RGB) image or a stored value the format does not have, naming the file and values.
    """
    with Image.open(path) as image:
        if image.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(
                f"annotation {os.fspath(path)!r} has mode {image.mode}: expected a single-channel (grayscale or "
                f"palette) PNG of label indices ({source.description})"
            )
        stored = np.asarray(image).astype(np.int64)
    out_of_range = (stored < 0) | (stored > 255)
    labels = source.table[np.where(out_of_range, 0, stored)]
    invalid = out_of_range | (labels == _INVALID)
    if invalid.any():
        values = np.unique(stored[invalid]).tolist()
        raise ValueError(
            f"annotation {os.fspath(path)!r} holds value(s) {values[:10]} that are not valid here; expected "
            f"{source.description}"
        )
    return labels


def _listing(folder: Path, limit: int = 12) -> str:
    """The names in `folder`, for error messages."""
    if not folder.is_dir():
        return f"{folder} does not exist"
    names = sorted(entry.name for entry in folder.iterdir())
    if not names:
        return "nothing (empty folder)"
    return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def _strip(name: str, suffix: str) -> str:
    return name[: -len(suffix)]


@dataclass
class BenchmarkFiles:
    """A benchmark found on disk: the validated list of `(image_id, image_path, label_path)` and its label format."""

    layout: BenchmarkLayout
    root: Path
    label_source: LabelSource
    entries: list[tuple[str, Path, Path]]

    def __len__(self) -> int:
        return len(self.entries)

    def samples(self, limit: int | None = None) -> Iterator[EvaluationSample]:
        """`EvaluationSample`s (RGB image, mapped `(H, W)` int64 annotation, image id) in id order.

        Args:
            limit: Only the first `limit` images (None: all).
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
            raise ValueError(f"limit must be None or a positive int, got {limit!r}")
        for image_id, image_path, label_path in self.entries[:limit]:
            annotation = read_label_map(label_path, self.label_source)
            with Image.open(image_path) as image:
                rgb = image.convert("RGB")
            if (rgb.height, rgb.width) != annotation.shape:
                raise ValueError(
                    f"{self.layout.name}: image {image_path} is {rgb.height}x{rgb.width} but its annotation "
                    f"{label_path} is {annotation.shape[0]}x{annotation.shape[1]}"
                )
            yield EvaluationSample(rgb, annotation, image_id)


def _candidate_roots(layout: BenchmarkLayout, data_root: Path) -> list[Path]:
    """Benchmark folders that exist: a named sub-folder, or the data root itself when it holds both the image and
    the annotation folder (VOC2012 and VOC2010 share `JPEGImages`; only the annotation folder tells them apart)."""
    found = [data_root / rel for rel in layout.roots if (data_root / rel).is_dir()]
    if not found and (data_root / layout.image_dir).is_dir() and (data_root / layout.label_dir).is_dir():
        found.append(data_root)
    return found


def _choose_label_source(layout: BenchmarkLayout, label_dir: Path) -> tuple[LabelSource, list[Path]]:
    """The first label format with files under `label_dir` (recursively), and those files."""
    for source in layout.label_sources:
        # a shorter suffix (".png") must not pick up the files of a longer one ("_labelTrainIds.png")
        longer = tuple(
            s.suffix for s in layout.label_sources if s.suffix != source.suffix and s.suffix.endswith(source.suffix)
        )
        files = sorted(p for p in label_dir.rglob(f"*{source.suffix}") if p.is_file() and not p.name.endswith(longer))
        if files:
            return source, files
    expected = " or ".join(f"*{s.suffix}" for s in layout.label_sources)
    raise ValueError(
        f"benchmark {layout.name!r}: expected annotation files {expected} under {label_dir}; found: "
        f"{_listing(label_dir)}"
    )


def open_benchmark(name: str, data_root: str | os.PathLike) -> BenchmarkFiles:
    """Find and validate benchmark `name` under `data_root` (see the module doc for the layouts).

    Every listed image must have its image and annotation file; the check is done up front so a broken folder fails
    before any model runs.

    Raises:
        ValueError: One message naming what was expected and what was found: no benchmark folder, a missing image or
            annotation folder, split file or files.
    """
    layout = get_layout(name)
    files = find_benchmark(name, data_root)
    if files is None:
        expected = " or ".join(os.path.join(rel, layout.image_dir) for rel in layout.roots)
        raise ValueError(
            f"benchmark {name!r}: expected {expected} under {os.fspath(data_root)}; found: {_listing(Path(data_root))}"
        )
    return files


def find_benchmark(name: str, data_root: str | os.PathLike) -> BenchmarkFiles | None:
    """Like :func:`open_benchmark`, but None when `data_root` holds no folder of this benchmark at all.

    A folder that is there but incomplete still raises the ValueError, so it is never skipped silently.
    """
    layout = get_layout(name)
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise ValueError(f"data root {os.fspath(data_root)!r} is not a directory")
    candidates = _candidate_roots(layout, data_root)
    if not candidates:
        return None
    root = candidates[0]
    where = f"benchmark {name!r}: expected {{}} under {root}; found: {_listing(root)}"
    image_dir, label_dir = root / layout.image_dir, root / layout.label_dir
    for folder, relative in ((image_dir, layout.image_dir), (label_dir, layout.label_dir)):
        if not folder.is_dir():
            raise ValueError(where.format(relative))
    source, label_files = _choose_label_source(layout, label_dir)
    if layout.split_file is not None:
        split = root / layout.split_file
        if not split.is_file():
            raise ValueError(where.format(layout.split_file))
        ids = [line.strip() for line in split.read_text().splitlines() if line.strip()]
        if not ids:
            raise ValueError(f"benchmark {name!r}: split file {split} lists no image ids")
        entries = [(i, image_dir / f"{i}{layout.image_suffix}", label_dir / f"{i}{source.suffix}") for i in ids]
    else:
        entries = []
        for label_path in label_files:
            image_id = _strip(label_path.relative_to(label_dir).as_posix(), source.suffix)
            entries.append((image_id, image_dir / f"{image_id}{layout.image_suffix}", label_path))
    missing = [
        path for _, image_path, label_path in entries for path in (image_path, label_path) if not path.is_file()
    ]
    if missing:
        shown = ", ".join(os.fspath(p.relative_to(root)) for p in missing[:3])
        raise ValueError(
            f"benchmark {name!r}: {len(missing)} of the {2 * len(entries)} image/annotation files listed under {root} "
            f"are missing, e.g. {shown}"
        )
    return BenchmarkFiles(layout=layout, root=root, label_source=source, entries=entries)
