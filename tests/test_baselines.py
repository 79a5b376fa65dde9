"""The baselines of the synthetic protocol against hand-computed values."""

import math

import numpy as np
import pytest
from PIL import Image

from groupvit.evaluation.baselines import (
    all_background,
    classes_named,
    color_scores,
    evaluate_color_baseline,
    fit_color_cooccurrence,
    predict_labels,
    quantize_colors,
    select_color_threshold,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)
CLASSES = ["sun", "leaf"]


def _image(*rows: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


def _training_set() -> tuple[list[np.ndarray], list[str]]:
    """Three 2x2 images: the sun image is mostly red, the leaf image mostly blue, the pair half and half."""
    images = [
        _image((RED, RED), (RED, BLUE)),
        _image((BLUE, BLUE), (RED, BLUE)),
        _image((RED, BLUE), (RED, BLUE)),
    ]
    captions = ["a photo of a sun.", "A leaf on a table.", "there is a sun next to a leaf."]
    return images, captions


def test_quantize_and_caption_parsing():
    assert quantize_colors(_image((RED, BLUE)), 2).tolist() == [[4, 1]]
    # 8 bins per channel: 200 -> 6, 40 -> 1, 130 -> 4: (6 * 8 + 1) * 8 + 4
    assert quantize_colors(_image(((200, 40, 130),)), 8).tolist() == [[396]]
    assert quantize_colors(Image.new("RGB", (3, 2), BLUE), 2).shape == (2, 3)
    assert classes_named("Sunflower and a LEAF.", CLASSES) == [1]  # whole words only
    with pytest.raises(ValueError, match="bins_per_channel"):
        quantize_colors(_image((RED,)), 0)


def test_enrichment_table_by_hand():
    images, captions = _training_set()
    red, blue = 4, 1  # bins with 2 per channel
    # images naming sun: red 3 + 2 = 5 of 8 pixels; naming leaf: red 1 + 2 = 3 of 8; all images: red 6 of 12
    table = fit_color_cooccurrence(images, captions, CLASSES, bins_per_channel=2, smoothing=0.0)
    assert table.num_images == 3
    assert table.pixel_counts[:, red].tolist() == [5, 3, 6] and table.pixel_counts[:, blue].tolist() == [3, 5, 6]
    assert table.enrichment[0, red] == pytest.approx(math.log((5 / 8) / (6 / 12)))  # log 1.25
    assert table.enrichment[0, blue] == pytest.approx(math.log((3 / 8) / (6 / 12)))  # log 0.75
    assert table.enrichment[1, red] == pytest.approx(math.log(0.75))
    assert table.enrichment[1, blue] == pytest.approx(math.log(1.25))
    assert np.all(np.delete(table.enrichment, [red, blue], axis=1) == 0)  # unseen bins: no evidence
    # one smoothing pixel per bin (8 bins): sun/red = (5 + 1) / (8 + 8) against (6 + 1) / (12 + 8)
    smoothed = fit_color_cooccurrence(images, captions, CLASSES, bins_per_channel=2, smoothing=1.0)
    assert smoothed.enrichment[0, red] == pytest.approx(math.log((6 / 16) / (7 / 20)))  # log 15/14
    assert smoothed.enrichment[0, blue] == pytest.approx(math.log((4 / 16) / (7 / 20)))  # log 5/7
    assert smoothed.to_dict()["top_bins"]["sun"][0] == {"rgb": [192, 64, 64], "enrichment": 0.069}


def test_patch_and_pixel_predictions_by_hand():
    images, captions = _training_set()
    table = fit_color_cooccurrence(images, captions, CLASSES, bins_per_channel=2, smoothing=0.0)
    test = _image((RED, BLUE), (RED, RED))
    pixels = color_scores(table, test, cell_size=1)
    assert pixels[:, 0, 1].tolist() == pytest.approx([math.log(0.75), math.log(1.25)])
    # per pixel: red -> sun (score log 1.25 = 0.223), blue -> leaf (0.223)
    assert predict_labels(pixels, background_threshold=0.2).tolist() == [[1, 2], [1, 1]]
    assert predict_labels(pixels, background_threshold=0.3).tolist() == [[0, 0], [0, 0]]
    # one 2x2 cell: sun scores (3 log 1.25 + log 0.75) / 4 = 0.0954, leaf (log 1.25 + 3 log 0.75) / 4 = -0.160
    cell = color_scores(table, test, cell_size=2)
    assert cell[:, 0, 0].tolist() == pytest.approx([0.0954, -0.1600], abs=1e-4)
    assert predict_labels(cell, background_threshold=0.09).tolist() == [[1, 1], [1, 1]]
    assert predict_labels(cell, background_threshold=0.1).tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match="cell_size"):
        color_scores(table, test, cell_size=3)


def test_threshold_selection_and_scores_by_hand():
    images, captions = _training_set()
    table = fit_color_cooccurrence(images, captions, CLASSES, bins_per_channel=2, smoothing=0.0)
    image = _image((RED, BLUE), (RED, RED))
    # the truth: the top row is background, the bottom row sun
    annotation = np.array([[0, 0], [1, 1]])
    best, scores = select_color_threshold(table, [(image, annotation)], cell_size=1, candidates=[0.0, 0.2, 0.3])
    # t <= 0.223: prediction [[1, 2], [1, 1]] -> background IoU 0/2, sun 2/3, leaf 0/1 -> mIoU (0 + 2/3 + 0) / 3
    # t = 0.3: all background -> background 2/4, sun 0 -> mIoU 1/4
    assert scores[0.0] == pytest.approx(2 / 9) and scores[0.2] == pytest.approx(2 / 9)
    assert scores[0.3] == pytest.approx(0.25) and best == 0.3
    report = evaluate_color_baseline(table, [(image, annotation)], background_threshold=0.2)
    assert report["mean_iou"] == pytest.approx(2 / 9) and report["per_category_iou"]["sun"] == pytest.approx(2 / 3)
    assert report["num_images"] == 1 and report["cell_size"] == 1


def test_all_background_by_hand():
    annotations = [np.array([[0, 0, 1, 1]]), np.array([[0, 2, 255, 0]])]
    report = all_background(annotations, CLASSES)
    # background: 4 true of 7 scored pixels, all 7 predicted -> IoU 4/7; sun and leaf present -> 0
    assert report["per_category_iou"]["background"] == pytest.approx(4 / 7)
    assert report["mean_iou"] == pytest.approx(4 / 21) and report["num_images"] == 2


def test_bad_inputs_raise():
    images, captions = _training_set()
    with pytest.raises(ValueError, match="more images than captions"):
        fit_color_cooccurrence(images, captions[:2], CLASSES)
    with pytest.raises(ValueError, match="more captions"):
        fit_color_cooccurrence(images[:2], captions, CLASSES)
    with pytest.raises(ValueError, match="smoothing"):
        fit_color_cooccurrence(images, captions, CLASSES, smoothing=-1)
    with pytest.raises(ValueError, match="uint8"):
        quantize_colors(np.zeros((2, 2, 3), np.float32))
