"""The eight-benchmark suite: protocol presets, on-disk readers and `run_suite`, on tiny layouts written here.

Every tiny dataset is written in its benchmark's real layout with hand-chosen stored labels (background, ignore
pixels, COCO-Stuff train ids and raw ids, Cityscapes label ids, ADE20K's 0). Its images carry the expected protocol
label in the red channel, so `OracleSegmenter` can predict the ground truth (or a chosen corruption of it) and the
suite's mIoU is computable by hand.
"""

import doctest
import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

import groupvit
from conftest import randomize_, tiny_config
from groupvit.cli.evaluate import main as evaluate_main
from groupvit.evaluation import suite as suite_module
from groupvit.evaluation.confusion import ConfusionMatrix
from groupvit.evaluation.datasets import COCO_STUFF_TRAIN_IDS, find_benchmark, open_benchmark, read_label_map
from groupvit.evaluation.evaluate import evaluate_segmentation
from groupvit.evaluation.suite import SUITE_PROTOCOLS, describe_protocols, paper_results, run_suite
from groupvit.segmentation.protocols import get_protocol
from groupvit.segmentation.segmenter import GroupViTSegmenter, SegmentationResult

# ---------------------------------------------------------------------------------------------------------------------
# tiny layouts: stored labels, and the labels the protocol should see (0 background, 1..C, 255 ignore)
# ---------------------------------------------------------------------------------------------------------------------

VOC_STORED = {
    "2007_000032": [[0, 0, 15, 15], [0, 255, 15, 15], [12, 12, 0, 0]],  # person 15, dog 12, a boundary pixel
    "2007_000039": [[1, 1, 1, 1], [1, 1, 255, 0], [20, 20, 20, 0]],  # aeroplane 1, tvmonitor 20
}
CONTEXT_STORED = {
    "2008_000002": [[0, 0, 1, 1], [59, 59, 15, 0]],
    "2008_000003": [[2, 2, 2, 0], [30, 30, 0, 0]],
}
COCO_TRAIN_IDS = {  # mmseg's *_labelTrainIds.png: 0..79 things, 80..170 stuff, 255 ignore
    "000000000139": [[0, 0, 80, 80], [255, 79, 170, 170], [5, 5, 0, 0]],
    "000000000285": [[100, 100, 100, 100], [0, 0, 255, 3]],
}
CITYSCAPES_LABEL_IDS = {  # *_gtFine_labelIds.png: 7 road, 8 sidewalk, 11 building, 23 sky, 24 person, 25 rider,
    # 26 car, 33 bicycle; 0 unlabeled, 1 ego vehicle and 9 parking are ignored
    "frankfurt/frankfurt_000000_000294": [[7, 7, 26, 26], [0, 8, 33, 1]],
    "lindau/lindau_000000_000019": [[11, 11, 23, 23], [24, 25, 9, 7]],
}
ADE_STORED = {
    "ADE_val_00000001": [[0, 1, 1, 2], [2, 2, 150, 0]],
    "ADE_val_00000002": [[3, 3, 3, 3], [0, 0, 4, 4]],
}

# the same maps by hand, in each protocol's label order
EXPECTED = {
    "voc": VOC_STORED,
    "voc20": {
        "2007_000032": [[255, 255, 15, 15], [255, 255, 15, 15], [12, 12, 255, 255]],
        "2007_000039": [[1, 1, 1, 1], [1, 1, 255, 255], [20, 20, 20, 255]],
    },
    "context": CONTEXT_STORED,
    "context59": {
        "2008_000002": [[255, 255, 1, 1], [59, 59, 15, 255]],
        "2008_000003": [[2, 2, 2, 255], [30, 30, 255, 255]],
    },
    "coco_stuff": {
        "000000000139": [[1, 1, 81, 81], [255, 80, 171, 171], [6, 6, 1, 1]],
        "000000000285": [[101, 101, 101, 101], [1, 1, 255, 4]],
    },
    "coco_object": {
        "000000000139": [[1, 1, 0, 0], [255, 80, 0, 0], [6, 6, 1, 1]],
        "000000000285": [[0, 0, 0, 0], [1, 1, 255, 4]],
    },
    "cityscapes": {
        "frankfurt/frankfurt_000000_000294": [[1, 1, 14, 14], [255, 2, 19, 255]],
        "lindau/lindau_000000_000019": [[3, 3, 11, 11], [12, 13, 255, 1]],
    },
    "ade20k": {
        "ADE_val_00000001": [[255, 1, 1, 2], [2, 2, 150, 255]],
        "ADE_val_00000002": [[3, 3, 3, 3], [255, 255, 4, 4]],
    },
}


def save_label(path: Path, values, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = PIL.Image.fromarray(np.asarray(values, dtype=np.uint8), mode="L")
    if palette:  # VOC's SegmentationClass PNGs are palette images
        image = image.convert("P")
        image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    image.save(path, format="PNG")


def save_image(path: Path, labels) -> None:
    """An RGB image whose red channel is the protocol label (ignored pixels: 0); lossless even under a .jpg name."""
    labels = np.asarray(labels)
    red = np.where(labels == 255, 0, labels).astype(np.uint8)
    rgb = np.stack([red, np.full_like(red, 40), np.full_like(red, 200)], axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(rgb).save(path, format="PNG")


def write_voc(root: Path) -> None:
    base = root / "VOCdevkit" / "VOC2012"
    for image_id, stored in VOC_STORED.items():
        save_image(base / "JPEGImages" / f"{image_id}.jpg", stored)
        save_label(base / "SegmentationClass" / f"{image_id}.png", stored, palette=True)
    save_image(base / "JPEGImages" / "2007_000033.jpg", [[3]])  # a train image: not in val.txt, never read
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(VOC_STORED) + "\n")


def write_context(root: Path) -> None:
    base = root / "VOCdevkit" / "VOC2010"
    for image_id, stored in CONTEXT_STORED.items():
        save_image(base / "JPEGImages" / f"{image_id}.jpg", stored)
        save_label(base / "SegmentationClassContext" / f"{image_id}.png", stored)
    (base / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (base / "ImageSets" / "SegmentationContext" / "val.txt").write_text("\n".join(CONTEXT_STORED) + "\n")


def write_coco(root: Path) -> None:
    base = root / "coco_stuff164k"
    for image_id, train_ids in COCO_TRAIN_IDS.items():
        save_image(base / "images" / "val2017" / f"{image_id}.jpg", EXPECTED["coco_stuff"][image_id])
        save_label(base / "annotations" / "val2017" / f"{image_id}_labelTrainIds.png", train_ids)
        # mmseg's converter keeps the raw files beside; 11 is an unused id, so reading them would fail the test
        save_label(base / "annotations" / "val2017" / f"{image_id}.png", np.full_like(train_ids, 11))


def write_cityscapes(root: Path) -> None:
    base = root / "cityscapes"
    for image_id, label_ids in CITYSCAPES_LABEL_IDS.items():
        save_image(base / "leftImg8bit" / "val" / f"{image_id}_leftImg8bit.png", EXPECTED["cityscapes"][image_id])
        save_label(base / "gtFine" / "val" / f"{image_id}_gtFine_labelIds.png", label_ids)
        save_label(base / "gtFine" / "val" / f"{image_id}_gtFine_instanceIds.png", np.full_like(label_ids, 200))


def write_ade(root: Path) -> None:
    base = root / "ade" / "ADEChallengeData2016"
    for image_id, stored in ADE_STORED.items():
        save_image(base / "images" / "validation" / f"{image_id}.jpg", EXPECTED["ade20k"][image_id])
        save_label(base / "annotations" / "validation" / f"{image_id}.png", stored)


WRITERS = {
    "voc": write_voc,
    "voc20": write_voc,
    "context": write_context,
    "context59": write_context,
    "coco_stuff": write_coco,
    "coco_object": write_coco,
    "cityscapes": write_cityscapes,
    "ade20k": write_ade,
}


class OracleSegmenter:
    """Predicts the label in each image's red channel, with `corrupt` (protocol labels -> others) applied.

    It follows `GroupViTSegmenter.segment`'s contract: background first when the options have a threshold, labels
    `0..C-1` without one. COCO-Object reads the COCO-Stuff labels of the shared images (stuff -> background).
    """

    def __init__(self, corrupt: dict[int, int] | None = None) -> None:
        self.corrupt = corrupt or {}
        self.images = 0

    def encode_labels(self, labels, templates=None, template_ensemble=None):
        return torch.zeros(len(labels), 4)

    def segment(self, image, labels, *, options, text_embeds=None):
        self.images += 1
        truth = np.asarray(image)[..., 0].astype(np.int64)
        if options.with_background and len(labels) == 80:
            truth = np.where(truth <= 80, truth, 0)
        truth = np.vectorize(lambda v: self.corrupt.get(v, v))(truth)
        if options.with_background:
            assert options.background_first
            names, background_index, label_map = ["background", *labels], 0, truth
        else:
            names, background_index, label_map = list(labels), None, np.clip(truth - 1, 0, None)
        label_map = torch.from_numpy(label_map)
        logits = torch.nn.functional.one_hot(label_map, len(names)).permute(2, 0, 1).float()
        return [
            SegmentationResult(
                labels=names,
                label_logits=logits,
                label_map=label_map,
                scores=torch.zeros(len(names)),
                image_scores=torch.zeros(len(labels)),
                background_index=background_index,
            )
        ]


def run_one(tmp_path: Path, name: str, segmenter=None, **kwargs):
    WRITERS[name](tmp_path / "data")
    segmenter = segmenter or OracleSegmenter()
    return run_suite(segmenter, [name], tmp_path / "data", tmp_path / "out", progress=False, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------------------------------------------------


def test_presets_classes_background_and_settings():
    counts = {"voc20": 20, "context59": 59, "coco_stuff": 171, "cityscapes": 19, "ade20k": 150}
    for name, count in counts.items():
        protocol = get_protocol(name)
        assert len(protocol.labels) == count and protocol.options.background_threshold is None, name
        options = protocol.options
        assert (options.short_side, options.max_long_side, options.mode, options.window, options.window_stride) == (
            448,
            2048,
            "slide",
            448,
            224,
        ), name
        assert "tcl" in protocol.description.lower() and "mmseg" in protocol.description.lower(), name
    for name, count in {"voc": 20, "context": 59, "coco_object": 80}.items():
        assert len(get_protocol(name).labels) == count and get_protocol(name).options.with_background
    # the no-background variants score the same classes with the same prompts
    assert get_protocol("voc20").labels == get_protocol("voc").labels
    assert get_protocol("context59").labels == get_protocol("context").labels
    assert get_protocol("coco_stuff").class_names[:80] == get_protocol("coco_object").class_names
    stuff = get_protocol("coco_stuff").class_names
    assert stuff[80] == "banner" and stuff[-1] == "wood"
    assert get_protocol("cityscapes").class_names[0] == "road" and get_protocol("cityscapes").class_names[-1] == (
        "bicycle"
    )
    ade = get_protocol("ade20k").class_names
    assert ade[0] == "wall" and ade[7] == "bed" and ade[-1] == "flag"
    assert all(name == name.strip() for name in ade)


def test_describe_protocols_one_line_per_preset():
    lines = describe_protocols()
    assert len(lines) == 8 and [line.split()[0] for line in lines] == list(SUITE_PROTOCOLS)
    assert "21 classes: 20 + background (threshold 0.95)" in lines[0]
    assert "150 classes, no background" in lines[-1] and "short side 448" in lines[-1]
    assert "slide 448/224" in lines[-1]
    assert doctest.testmod(suite_module, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


# ---------------------------------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SUITE_PROTOCOLS)
def test_reader_maps_labels_to_protocol_order(tmp_path, name):
    WRITERS[name](tmp_path)
    samples = list(open_benchmark(name, tmp_path).samples())
    assert [s.name for s in samples] == list(EXPECTED[name])
    for sample in samples:
        assert sample.annotation.dtype == np.int64 and sample.image.mode == "RGB"
        np.testing.assert_array_equal(sample.annotation, np.asarray(EXPECTED[name][sample.name]), err_msg=sample.name)
        assert sample.image.size == sample.annotation.shape[::-1]


def test_coco_raw_ids_map_to_171_train_ids(tmp_path):
    # raw COCO-Stuff ids: 0 person, 12 stop sign (11 is unused), 91 banner (first stuff), 181 wood, 255 unlabeled
    base = tmp_path / "coco_stuff164k"
    save_image(base / "images" / "val2017" / "000000000632.jpg", [[1, 12, 81, 171, 255]])
    save_label(base / "annotations" / "val2017" / "000000000632.png", [[0, 12, 91, 181, 255]])
    stuff = open_benchmark("coco_stuff", tmp_path)
    assert "raw" in stuff.label_source.description
    np.testing.assert_array_equal(next(stuff.samples()).annotation, [[1, 12, 81, 171, 255]])
    np.testing.assert_array_equal(
        next(open_benchmark("coco_object", tmp_path).samples()).annotation, [[1, 12, 0, 0, 255]]
    )
    assert len(COCO_STUFF_TRAIN_IDS) == 171 and COCO_STUFF_TRAIN_IDS[181] == 170
    save_label(base / "annotations" / "val2017" / "000000000632.png", [[0, 11, 11, 25, 255]])
    with pytest.raises(ValueError, match=r"value\(s\) \[11, 25\].*raw COCO-Stuff ids"):
        next(open_benchmark("coco_stuff", tmp_path).samples())


def test_coco_object_prefers_groupvit_instance_train_ids(tmp_path):
    write_coco(tmp_path)
    folder = tmp_path / "coco_stuff164k" / "annotations" / "val2017"
    for image_id in COCO_TRAIN_IDS:
        save_label(folder / f"{image_id}_instanceTrainIds.png", np.asarray(EXPECTED["coco_object"][image_id]))
    files = open_benchmark("coco_object", tmp_path)
    assert files.label_source.suffix == "_instanceTrainIds.png" and len(files) == 2
    assert open_benchmark("coco_stuff", tmp_path).label_source.suffix == "_labelTrainIds.png"


def test_cityscapes_prefers_train_ids_over_label_ids(tmp_path):
    write_cityscapes(tmp_path)
    image_id = "frankfurt/frankfurt_000000_000294"
    folder = tmp_path / "cityscapes" / "gtFine" / "val"
    for other in CITYSCAPES_LABEL_IDS:
        save_label(folder / f"{other}_gtFine_labelTrainIds.png", [[0, 0, 13, 13], [255, 1, 18, 255]])
    files = open_benchmark("cityscapes", tmp_path)
    assert files.label_source.suffix == "_gtFine_labelTrainIds.png"
    assert dict((s.name, s.annotation.tolist()) for s in files.samples())[image_id] == EXPECTED["cityscapes"][image_id]


def test_absent_benchmark_is_none_and_broken_folders_name_what_is_missing(tmp_path):
    assert find_benchmark("voc", tmp_path) is None
    with pytest.raises(ValueError, match=r"expected VOCdevkit/VOC2012/JPEGImages under"):
        open_benchmark("voc", tmp_path)
    write_voc(tmp_path)
    base = tmp_path / "VOCdevkit" / "VOC2012"
    (base / "Annotations").mkdir()
    for path in (base / "SegmentationClass").iterdir():
        path.unlink()
    (base / "SegmentationClass").rmdir()
    with pytest.raises(
        ValueError, match=r"expected SegmentationClass under .*VOC2012; found: Annotations, ImageSets, JPEGImages"
    ):
        find_benchmark("voc", tmp_path)
    write_voc(tmp_path / "again")
    base = tmp_path / "again" / "VOCdevkit" / "VOC2012"
    (base / "JPEGImages" / "2007_000039.jpg").unlink()
    with pytest.raises(
        ValueError, match=r"1 of the 4 image/annotation files .* missing, e\.g\. JPEGImages/2007_000039\.jpg"
    ):
        open_benchmark("voc", tmp_path / "again")
    (base / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(ValueError, match=r"expected ImageSets/Segmentation/val\.txt under"):
        open_benchmark("voc", tmp_path / "again")


def test_data_root_may_be_the_benchmark_folder(tmp_path):
    write_voc(tmp_path)
    write_ade(tmp_path / "flat")
    (tmp_path / "flat" / "ade" / "ADEChallengeData2016").rename(tmp_path / "flat" / "ADEChallengeData2016")
    voc2012 = tmp_path / "VOCdevkit" / "VOC2012"
    assert len(open_benchmark("voc", voc2012)) == 2 and len(open_benchmark("ade20k", tmp_path / "flat")) == 2
    # the VOC2012 folder has JPEGImages but no Context annotations: Context is absent there, not broken
    assert find_benchmark("context59", voc2012) is None
    with pytest.raises(ValueError, match=r"expected VOCdevkit/VOC2010/JPEGImages under .*; found: ImageSets, JPEG"):
        open_benchmark("context59", voc2012)


def test_colour_annotations_and_mismatched_sizes_are_rejected(tmp_path):
    write_ade(tmp_path)
    folder = tmp_path / "ade" / "ADEChallengeData2016"
    PIL.Image.new("RGB", (4, 2)).save(folder / "annotations" / "validation" / "ADE_val_00000001.png")
    with pytest.raises(ValueError, match=r"has mode RGB: expected a single-channel"):
        list(open_benchmark("ade20k", tmp_path).samples())
    save_label(folder / "annotations" / "validation" / "ADE_val_00000001.png", [[1, 1, 1]])
    with pytest.raises(ValueError, match=r"is 2x4 but its annotation .* is 1x3"):
        list(open_benchmark("ade20k", tmp_path).samples())
    save_label(folder / "annotations" / "validation" / "ADE_val_00000001.png", [[0, 1, 1, 2], [2, 2, 151, 0]])
    with pytest.raises(ValueError, match=r"value\(s\) \[151\]"):
        read_label_map(
            folder / "annotations" / "validation" / "ADE_val_00000001.png",
            open_benchmark("ade20k", tmp_path).label_source,
        )


# ---------------------------------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SUITE_PROTOCOLS)
def test_ground_truth_prediction_scores_100(tmp_path, name):
    result = run_one(tmp_path, name).results[name]
    assert result.mean_iou == pytest.approx(1.0) and result.num_images == result.num_available == 2
    present = {int(v) for labels in EXPECTED[name].values() for v in np.unique(labels)} - {255}
    labels = (["background"] if get_protocol(name).options.with_background else []) + get_protocol(name).labels
    offset = 0 if get_protocol(name).options.with_background else 1
    scored = {labels[v - offset] for v in present}
    assert {k for k, v in result.per_category_iou.items() if not np.isnan(v)} == scored
    assert ("background" in result.per_category_iou) == get_protocol(name).options.with_background


@pytest.mark.parametrize(
    "name, corrupt, expected",
    [
        # person (15) predicted as dog (12): bg 7/7, aeroplane 6/6, tvmonitor 3/3, person 0/4, dog 2/6
        ("voc", {15: 12}, (1 + 1 + 1 + 0 + 2 / 6) / 5),
        # the same without background: its pixels are ignored
        ("voc20", {15: 12}, (1 + 1 + 0 + 2 / 6) / 4),
        # ADE label 2 predicted as 1: class 1 2/5, class 2 0/3, 150 1/1, 3 4/4, 4 2/2
        ("ade20k", {2: 1}, (2 / 5 + 0 + 1 + 1 + 1) / 5),
        # Cityscapes car (train id 13 -> label 14) predicted as road (label 1): road 3/5, car 0/2, 6 others 1
        ("cityscapes", {14: 1}, (3 / 5 + 0 + 6) / 8),
    ],
)
def test_corrupted_prediction_scores_hand_computed_miou(tmp_path, name, corrupt, expected):
    result = run_one(tmp_path, name, OracleSegmenter(corrupt)).results[name]
    assert result.mean_iou == pytest.approx(expected)


def test_real_segmenter_without_background_matches_an_independent_confusion_matrix(tmp_path):
    model = randomize_(groupvit.GroupViTModel(tiny_config()), seed=1).eval()
    segmenter = GroupViTSegmenter(model, groupvit.GroupViTProcessor.from_bundled(image_size=32))
    changes = {"short_side": 32, "window": 32, "stride": 16}
    result = run_one(tmp_path, "voc20", segmenter, option_changes=changes).results["voc20"]
    protocol = get_protocol("voc20")
    options = protocol.options.replace(**changes)
    reference = ConfusionMatrix(20, ignore_index=255)
    for sample in open_benchmark("voc20", tmp_path / "data").samples():
        prediction = segmenter.segment(sample.image, protocol.labels, options=options)[0].label_map.numpy()
        # annotations 1..20 -> 0..19, ignored pixels stay 255
        reference.update(prediction, np.where(sample.annotation == 255, 255, sample.annotation - 1))
    metrics = reference.compute()
    assert result.mean_iou == pytest.approx(float(metrics["mean_iou"]))
    assert list(result.per_category_iou) == protocol.labels
    np.testing.assert_allclose(list(result.per_category_iou.values()), metrics["per_category_iou"])
    assert result.options["background_threshold"] is None and result.options["short_side"] == 32


def test_all_run_writes_table_skips_absent_and_restart_reuses_finished(tmp_path):
    data = tmp_path / "data"
    for writer in (write_voc, write_context, write_coco, write_ade):
        writer(data)
    oracle = OracleSegmenter({15: 12})
    suite = run_suite(oracle, "all", data, tmp_path / "out", progress=False, model_name="nvidia/groupvit-gcc-yfcc")
    measured = ["voc", "context", "coco_object", "voc20", "context59", "coco_stuff", "ade20k"]
    assert list(suite.results) == measured and list(suite.skipped) == ["cityscapes"]
    assert "no cityscapes under" in suite.skipped["cityscapes"]
    assert oracle.images == 2 * len(measured)
    table = (tmp_path / "out" / "results.md").read_text()
    assert table == suite.table
    header = "| | VOC21 | Context60 | Object | VOC20 | Context59 | Stuff | City | ADE | Avg (7 of 8) |"
    assert header in table
    values = [suite.results[n].mean_iou for n in measured]
    assert suite.average_miou == pytest.approx(np.mean(values))
    assert suite.results["voc"].mean_iou == pytest.approx((1 + 1 + 1 + 0 + 2 / 6) / 5)
    assert suite.results["ade20k"].mean_iou == 1.0  # nothing to corrupt there
    cells = [f"{100 * suite.results[n].mean_iou:.1f}" if n in suite.results else "—" for n in SUITE_PROTOCOLS]
    assert "| measured | " + " | ".join(cells) + f" | {100 * np.mean(values):.1f} |" in table
    assert "| paper | 52.3 | 22.4 | 24.3 | — | — | — | — | — | — |" in table
    assert "City skipped: no cityscapes under" in table and "Partial run" not in table
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["order"] == list(SUITE_PROTOCOLS) and saved["partial"] is False
    assert saved["benchmarks"]["ade20k"]["num_images"] == 2 and saved["skipped"] == suite.skipped
    assert sorted(p.name for p in (tmp_path / "out" / "benchmarks").iterdir()) == sorted(f"{n}.json" for n in measured)

    # restart: nothing finished is redone, the table is the same but notes the reuse
    again = OracleSegmenter({15: 12})
    restarted = run_suite(again, "all", data, tmp_path / "out", progress=False, model_name="nvidia/groupvit-gcc-yfcc")
    assert again.images == 0 and restarted.reused == measured
    assert [r.mean_iou for r in restarted.results.values()] == values
    # a benchmark whose file is gone, or another limit, is measured again
    (tmp_path / "out" / "benchmarks" / "voc.json").unlink()
    run_suite(again, "all", data, tmp_path / "out", progress=False, model_name="nvidia/groupvit-gcc-yfcc")
    assert again.images == 2
    partial = run_suite(again, "all", data, tmp_path / "out", limit=1, progress=False, model_name="m")
    assert again.images == 2 + len(measured) and all(r.num_images == 1 and r.partial for r in partial.results.values())
    assert "Partial run: at most 1 images per benchmark" in partial.table and "| 1 of 2 |" in partial.table
    assert json.loads((tmp_path / "out" / "results.json").read_text())["partial"] is True


def test_reuse_needs_a_model_identity_and_the_same_weights(tmp_path):
    write_ade(tmp_path / "data")
    nameless = OracleSegmenter()
    for _ in range(2):  # no name: a finished benchmark may belong to another model, so it is measured again
        run_suite(nameless, ["ade20k"], tmp_path / "data", tmp_path / "out", progress=False)
    assert nameless.images == 4
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    named = OracleSegmenter()
    for _ in range(2):
        run_suite(named, ["ade20k"], tmp_path / "data", tmp_path / "out2", progress=False, model_name=str(folder))
    assert named.images == 2
    (folder / "model.safetensors").write_bytes(b"retrained weights")  # rewritten in place
    run_suite(named, ["ade20k"], tmp_path / "data", tmp_path / "out2", progress=False, model_name=str(folder))
    assert named.images == 4


def test_model_folder_is_loaded_and_named_in_the_table(tmp_path):
    folder = tmp_path / "groupvit-gcc-yfcc"  # named like the Hub checkpoint: the table shows its paper numbers
    randomize_(groupvit.GroupViTModel(tiny_config()), seed=2).save_pretrained(folder)
    groupvit.GroupViTProcessor.from_bundled(image_size=32).save_pretrained(folder)
    changes = {"short_side": 32, "window": 32, "stride": 16}
    suite = run_one(tmp_path, "voc", str(folder), option_changes=changes)
    assert suite.model == str(folder) and 0.0 <= suite.results["voc"].mean_iou <= 1.0
    assert "| paper | 52.3 | 52.3 |" in suite.table  # VOC21 column, and its average
    assert "short side 32 (long side <= 2048), slide 32/16, background threshold 0.95 (changed from" in suite.table


def test_requested_benchmark_must_be_present_and_bad_arguments_fail_early(tmp_path):
    write_voc(tmp_path)
    with pytest.raises(ValueError, match=r"benchmark 'ade20k': expected ade/ADEChallengeData2016"):
        run_suite(OracleSegmenter(), ["voc", "ade20k"], tmp_path, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match=r"unknown suite protocol\(s\) \['synthetic'\]"):
        run_suite(OracleSegmenter(), ["synthetic"], tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match=r"limit must be None or a positive int, got 0"):
        run_suite(OracleSegmenter(), "all", tmp_path, tmp_path / "out", limit=0)
    assert not (tmp_path / "out").exists()


def test_paper_results_lookup():
    assert paper_results("nvidia/groupvit-gcc-yfcc").miou["voc"] == 52.3
    assert paper_results("/models/groupvit-gcc-redcaps/").miou["coco_object"] == 27.5
    assert paper_results("my-model") is None and paper_results(None) is None


# ---------------------------------------------------------------------------------------------------------------------
# evaluate_segmentation without a background class, and the `groupvit evaluate` command line
# ---------------------------------------------------------------------------------------------------------------------

SMALL = ["--short_side", "32", "--window", "32", "--stride", "16"]


def test_evaluate_segmentation_without_background_scores_the_c_classes(tmp_path):
    write_voc(tmp_path)
    samples = list(open_benchmark("voc20", tmp_path).samples())
    report = evaluate_segmentation(OracleSegmenter({15: 12}), samples, get_protocol("voc20"), progress=False)
    # VOC20 by hand: person (15) 4 px predicted dog (12): person 0/4, dog 2/6, aeroplane and tvmonitor 1; the other
    # 16 classes are absent from both (NaN, left out)
    assert report.mean_iou == pytest.approx((0 + 2 / 6 + 1 + 1) / 4)
    assert report.labels == get_protocol("voc20").labels and "background" not in report.per_category_iou
    with pytest.raises(ValueError, match=r"annotation '2007_000032' holds background \(0\) pixels"):
        voc21 = list(open_benchmark("voc", tmp_path).samples())
        evaluate_segmentation(OracleSegmenter(), voc21, get_protocol("voc20"), progress=False)
    with pytest.raises(ValueError, match="no images to evaluate"):
        evaluate_segmentation(OracleSegmenter(), [], get_protocol("voc"), progress=False)


def test_cli_lists_the_protocols(capsys):
    assert evaluate_main(["--list_protocols"]) == 0
    assert capsys.readouterr().out.splitlines() == describe_protocols()


def test_cli_runs_the_suite_on_a_comma_list_and_prints_the_table(tiny_checkpoint, tmp_path, capsys):
    write_voc(tmp_path / "data")
    write_ade(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["--model", tiny_checkpoint, "--protocol", "voc,ade20k", "--data_root", str(tmp_path / "data")]
    assert evaluate_main([*argv, "--output", str(out), "--limit", "1", *SMALL]) == 0
    printed = capsys.readouterr().out
    table = (out / "results.md").read_text()
    assert table in printed and "| 1 of 2 |" in table and "Partial run: at most 1 images per benchmark" in table
    assert "short side 32 (long side <= 2048), slide 32/16" in table
    saved = json.loads((out / "results.json").read_text())
    assert sorted(saved["benchmarks"]) == ["ade20k", "voc"] and saved["partial"] is True
    # the same numbers as run_suite called directly with the same segmenter settings
    segmenter = GroupViTSegmenter.from_pretrained(tiny_checkpoint)
    direct = run_suite(
        segmenter, ["voc", "ade20k"], tmp_path / "data", tmp_path / "direct", limit=1, progress=False,
        option_changes={"short_side": 32, "window": 32, "stride": 16},
    )  # fmt: skip
    for name in ("voc", "ade20k"):
        assert saved["benchmarks"][name]["mean_iou"] == pytest.approx(direct.results[name].mean_iou)
    # 'all' skips the absent benchmarks with a note
    assert evaluate_main(["--model", tiny_checkpoint, "--protocol", "all", "--data_root", str(tmp_path / "data"),
                          "--output", str(tmp_path / "all"), "--limit", "1", *SMALL]) == 0  # fmt: skip
    assert "City skipped: no cityscapes under" in capsys.readouterr().out


def test_cli_suite_arguments_are_checked(tiny_checkpoint, tmp_path, capsys):
    assert evaluate_main(["--model", tiny_checkpoint, "--protocol", "voc,ade20k"]) == 2
    assert "give --data_root DIR" in capsys.readouterr().err
    assert evaluate_main(["--model", tiny_checkpoint, "--protocol", "voc"]) == 2
    assert "needs --dataset (a datasets source) or --data_root" in capsys.readouterr().err
    argv = ["--model", tiny_checkpoint, "--protocol", "voc,synthetic", "--data_root", str(tmp_path)]
    assert evaluate_main(argv) == 2
    assert "unknown suite protocol(s) ['synthetic']" in capsys.readouterr().err


def _save_dataset(folder: Path, rows: int, splits: bool) -> None:
    import datasets

    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    images = [PIL.Image.fromarray(np.full((8, 8, 3), 60 * i, dtype=np.uint8)) for i in range(rows)]
    masks = [PIL.Image.fromarray(np.full((8, 8), i % 3, dtype=np.uint8)) for i in range(rows)]
    dataset = datasets.Dataset.from_dict({"image": images, "annotation": masks}, features=features)
    (datasets.DatasetDict({"validation": dataset}) if splits else dataset).save_to_disk(str(folder))


def test_cli_dataset_folder_with_splits_and_empty_datasets(tiny_checkpoint, tmp_path, capsys):
    _save_dataset(tmp_path / "splits", rows=2, splits=True)
    argv = ["--model", tiny_checkpoint, "--protocol", "voc", "--dataset", str(tmp_path / "splits"), *SMALL]
    assert evaluate_main([*argv, "--split", "validation", "--output", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["num_images"] == 2
    capsys.readouterr()
    assert evaluate_main([*argv, "--split", "test", "--output", str(tmp_path / "out2")]) == 2
    assert "has no split 'test'; its splits: ['validation']" in capsys.readouterr().err
    # a dataset without rows, and no images at all: a clear error and exit 2, never mIoU NaN with exit 0
    _save_dataset(tmp_path / "empty", rows=0, splits=False)
    argv = ["--model", tiny_checkpoint, "--protocol", "voc", "--dataset", str(tmp_path / "empty"), *SMALL]
    assert evaluate_main([*argv, "--output", str(tmp_path / "out3")]) == 2
    assert "has no rows: nothing to evaluate" in capsys.readouterr().err
    argv = ["--model", tiny_checkpoint, "--protocol", "synthetic", "--num_samples", "0", *SMALL]
    assert evaluate_main([*argv, "--output", str(tmp_path / "out4")]) == 2
    assert "no images to evaluate" in capsys.readouterr().err
    assert not (tmp_path / "out4" / "results.json").exists()
