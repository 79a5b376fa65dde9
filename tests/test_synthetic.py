"""Tests for groupvit.data.synthetic: determinism, mask/caption consistency, splits and writers."""

from __future__ import annotations

import colorsys
import hashlib
import io
import json
import math
import re
import tarfile

import numpy as np
import pytest
from PIL import Image

from groupvit.data.synthetic import (
    RECOLORS,
    SPLITS,
    SyntheticSpec,
    generate_sample,
    generate_samples,
    get_spec,
    list_specs,
    make_split,
    recolor_objects,
    save_imagefolder,
    split_seed,
    to_hf_dataset,
    write_webdataset_shards,
)

PRESETS = ("shapes", "objects")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------------------------------


def test_presets_registered():
    assert set(PRESETS) <= set(list_specs())
    shapes, objects = get_spec("shapes"), get_spec("objects")
    assert "circle" in shapes.class_names and "triangle" in shapes.class_names
    assert 6 <= objects.num_classes <= 8
    assert objects.class_index(objects.class_names[0]) == 1
    assert get_spec(shapes) is shapes


def test_unknown_spec_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="no-such-preset"):
        get_spec("no-such-preset")


def test_spec_validation():
    with pytest.raises(ValueError, match="unicorn"):
        SyntheticSpec(name="bad", renderer="objects", class_names=("sun", "unicorn"))
    with pytest.raises(ValueError, match="renderer"):
        SyntheticSpec(name="bad", renderer="nope", class_names=("sun",))


# --------------------------------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_same_seed_gives_identical_bytes_regardless_of_order(preset):
    forward = [generate_sample(preset, i, seed=7, image_size=48) for i in range(6)]
    backward = [generate_sample(preset, i, seed=7, image_size=48) for i in reversed(range(6))][::-1]
    for a, b in zip(forward, backward, strict=True):
        assert _png(a.image) == _png(b.image)
        assert a.caption == b.caption
        assert a.classes == b.classes
        np.testing.assert_array_equal(a.mask, b.mask)


@pytest.mark.parametrize("preset", PRESETS)
def test_different_seeds_differ(preset):
    a = [generate_sample(preset, i, seed=0, image_size=48) for i in range(5)]
    b = [generate_sample(preset, i, seed=1, image_size=48) for i in range(5)]
    assert all(_png(x.image) != _png(y.image) for x, y in zip(a, b, strict=True))
    assert [x.caption for x in a] != [y.caption for y in b]


def test_generate_samples_matches_generate_sample():
    batch = list(generate_samples("objects", 3, seed=3, image_size=32, start=5))
    assert [s.index for s in batch] == [5, 6, 7]
    assert batch[1].caption == generate_sample("objects", 6, seed=3, image_size=32).caption


def test_sequence_seed_and_bad_arguments():
    a = generate_sample("shapes", 0, seed=(1, 2), image_size=32)
    b = generate_sample("shapes", 0, seed=[1, 2], image_size=32)
    assert _png(a.image) == _png(b.image)
    with pytest.raises(ValueError):
        generate_sample("shapes", 0, image_size=8)
    with pytest.raises(ValueError):
        generate_sample("shapes", -1)
    with pytest.raises(ValueError, match="variant"):
        generate_sample("shapes", 0, variant="weird")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------------------
# Mask / caption consistency
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("variant", ["standard", "shifted"])
def test_mask_and_caption_agree(preset, variant):
    spec = get_spec(preset)
    counts = set()
    for i in range(60):
        s = generate_sample(spec, i, seed=11, image_size=64, variant=variant)
        assert s.image.mode == "RGB" and s.image.size == (64, 64)
        assert s.mask.dtype == np.uint8 and s.mask.shape == (64, 64)
        assert 1 <= len(s.classes) <= spec.max_objects
        assert len(set(s.classes)) == len(s.classes)
        counts.add(len(s.classes))
        # Mask values present <=> classes listed.
        values = set(np.unique(s.mask).tolist()) - {0}
        assert values == {spec.class_index(c) for c in s.classes}
        for c in s.classes:
            assert (s.mask == spec.class_index(c)).sum() >= 6
        # Caption names exactly the classes present.
        mentioned = {c for c in spec.class_names if re.search(rf"\b{c}\b", s.caption)}
        assert mentioned == set(s.classes), s.caption
    assert counts == {1, 2, 3}


def test_shapes_captions_name_colour_and_shape():
    s = generate_sample("shapes", 4, seed=0)
    for colour, shape in zip(s.attributes, s.classes, strict=True):
        assert f"{colour} {shape}" in s.caption


def test_objects_captions_vary():
    captions = {generate_sample("objects", i, seed=2, image_size=32).caption for i in range(40)}
    prefixes = {c.split(" ")[0].lower() for c in captions}
    assert len(prefixes) >= 5


# --------------------------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------------------------


def test_splits_use_different_streams_and_test_is_shifted():
    splits = {name: make_split("objects", name, num_samples=4, image_size=32, seed=5) for name in SPLITS}
    images = {name: [_png(s.image) for s in split] for name, split in splits.items()}
    assert images["train"] != images["validation"] != images["test"] != images["train"]
    assert splits["test"].variant == "shifted" and splits["train"].variant == "standard"
    assert splits["validation"].variant == "standard"
    expected = generate_sample("objects", 2, seed=split_seed(5, "test"), image_size=32, variant="shifted")
    assert _png(splits["test"][2].image) == _png(expected.image)
    assert splits["test"][-1].index == 3
    assert [s.index for s in splits["train"][1:3]] == [1, 2]
    assert len(splits["train"]) == 4
    with pytest.raises(IndexError):
        splits["train"][4]
    with pytest.raises(ValueError, match="holdout"):
        make_split("objects", "holdout", 3)  # type: ignore[arg-type]


def test_test_split_uses_held_out_backgrounds_and_scales():
    spec = get_spec("objects")
    assert not set(spec.backgrounds) & set(spec.test_backgrounds)
    assert spec.scale_range != spec.test_scale_range
    # Shifted variant has more objects on average (layout prior).
    n_std = np.mean([len(generate_sample(spec, i, 0, 32).classes) for i in range(40)])
    n_test = np.mean([len(generate_sample(spec, i, 0, 32, variant="shifted").classes) for i in range(40)])
    assert n_test > n_std


# --------------------------------------------------------------------------------------------------------------------
# Recoloured splits (the objectness probe)
# --------------------------------------------------------------------------------------------------------------------


def _digest(split) -> str:
    digest = hashlib.sha256()
    for sample in split:
        digest.update(sample.image.tobytes() + sample.mask.tobytes() + sample.caption.encode())
    return digest.hexdigest()


def test_plain_splits_are_unchanged_by_the_recolor_option():
    # pinned before recolouring existed: the option must not consume draws of the standard stream
    expected = "da7df52743aa097c9f6512570e0ac2ce7b1f6121e82788730fc7cb1be68d732e"
    assert _digest(make_split("objects", "test", 6, 64, seed=0)) == expected
    assert _digest(make_split("objects", "test", 6, 64, seed=0, recolor=None)) == expected


@pytest.mark.parametrize("recolor", RECOLORS)
def test_recolored_split_is_byte_identical_for_the_same_seed(recolor):
    first = _digest(make_split("objects", "test", 5, 48, seed=3, recolor=recolor))
    assert _digest(make_split("objects", "test", 5, 48, seed=3, recolor=recolor)) == first
    assert _digest(make_split("objects", "test", 5, 48, seed=4, recolor=recolor)) != first
    assert _digest(make_split("objects", "test", 5, 48, seed=3)) != first


@pytest.mark.parametrize("recolor", RECOLORS)
def test_recoloring_changes_only_object_pixels(recolor):
    plain = make_split("objects", "test", 6, 64, seed=1)
    probe = make_split("objects", "test", 6, 64, seed=1, recolor=recolor)
    assert probe.info()["recolor"] == recolor and "recolor" in repr(probe)
    for a, b in zip(plain, probe, strict=True):
        assert a.caption == b.caption and a.classes == b.classes
        np.testing.assert_array_equal(a.mask, b.mask)
        pixels_a, pixels_b = np.asarray(a.image), np.asarray(b.image)
        background = a.mask == 0
        np.testing.assert_array_equal(pixels_a[background], pixels_b[background])
        # most object pixels change colour (white spots, eyes and mortar may keep theirs)
        changed = np.abs(pixels_a.astype(int) - pixels_b.astype(int)).max(-1)[~background] > 10
        assert changed.mean() > 0.5


def _mean_hue(pixels: np.ndarray) -> float:
    """Circular mean hue of `(N, 3)` uint8 pixels."""
    hues = np.array([colorsys.rgb_to_hsv(*(p / 255.0))[0] for p in pixels])
    angle = np.arctan2(np.sin(2 * np.pi * hues).mean(), np.cos(2 * np.pi * hues).mean())
    return float(angle / (2 * np.pi) % 1.0)


def _hue_distance(a: float, b: float) -> float:
    return min(abs(a - b) % 1.0, 1 - abs(a - b) % 1.0)


def test_swap_gives_each_category_its_partner_palette():
    spec = get_spec("objects")
    hues: dict[str, list[tuple[float, float]]] = {"sun": [], "leaf": [], "mushroom": []}
    plain = make_split("objects", "validation", 40, 64, seed=0)
    probe = make_split("objects", "validation", 40, 64, seed=0, recolor="swap")
    for a, b in zip(plain, probe, strict=True):
        for name in set(hues) & set(a.classes):
            inside = a.mask == spec.class_index(name)
            hues[name].append((_mean_hue(np.asarray(a.image)[inside]), _mean_hue(np.asarray(b.image)[inside])))
    palettes, swap = dict(spec.palettes), dict(spec.palette_swap)
    assert swap == {"sun": "fish", "fish": "sun", "leaf": "brick", "brick": "leaf", "tree": "mushroom",
                    "mushroom": "tree", "ball": "flower", "flower": "ball"}  # fmt: skip
    for name, pairs in hues.items():
        assert len(pairs) >= 5, name
        before = _mean_hue(np.array([[*colorsys.hsv_to_rgb(h, 1, 1)] for h, _ in pairs]) * 255)
        after = _mean_hue(np.array([[*colorsys.hsv_to_rgb(h, 1, 1)] for _, h in pairs]) * 255)
        # a sun is yellow-orange and turns blue-grey like a fish; a leaf turns brick-red; a red mushroom turns green
        assert _hue_distance(before, palettes[name][0]) < 0.06, name
        assert _hue_distance(after, palettes[swap[name]][0]) < 0.06, name


def test_recolor_objects_against_colorsys():
    spec = get_spec("objects")
    canvas = np.zeros((2, 2, 3), np.float32)
    canvas[0, 0] = (200, 40, 40)  # a red pixel labelled sun
    canvas[0, 1] = (30, 90, 160)  # a blue pixel labelled fish
    canvas[1] = (70, 80, 90)  # background
    labels = np.array([[1, 5], [0, 0]], np.uint8)
    out = recolor_objects(spec, canvas, labels, "swap")
    palettes = dict(spec.palettes)
    for (row, col), name, target in (((0, 0), "sun", "fish"), ((0, 1), "fish", "sun")):
        h, s, v = colorsys.rgb_to_hsv(*(canvas[row, col] / 255.0))
        (h_a, s_a, v_a), (h_b, s_b, v_b) = palettes[name], palettes[target]
        expected = colorsys.hsv_to_rgb((h + h_b - h_a) % 1.0, min(s * s_b / s_a, 1.0), min(v * v_b / v_a, 1.0))
        np.testing.assert_allclose(out[row, col], np.array(expected) * 255, atol=1e-3)
    np.testing.assert_array_equal(out[1], canvas[1])
    rotated = recolor_objects(spec, canvas, labels, "random", np.random.default_rng(0))
    turns = np.random.default_rng(0).uniform(0.25, 0.75, size=2)  # one per object, in class order (1 then 5)
    for (row, col), turn in zip(((0, 0), (0, 1)), turns, strict=True):
        h, s, v = colorsys.rgb_to_hsv(*(canvas[row, col] / 255.0))
        np.testing.assert_allclose(
            rotated[row, col], np.array(colorsys.hsv_to_rgb((h + turn) % 1, s, v)) * 255, atol=1e-3
        )


def test_jitter_recolor_against_colorsys():
    spec = get_spec("objects")
    canvas = np.zeros((2, 2, 3), np.float32)
    canvas[0, 0] = (200, 40, 40)
    canvas[0, 1] = (30, 90, 160)
    canvas[1] = (70, 80, 90)  # background
    labels = np.array([[1, 5], [0, 0]], np.uint8)
    out = recolor_objects(spec, canvas, labels, "jitter", np.random.default_rng(3))
    draws = np.random.default_rng(3).uniform([0, -0.8, -0.6], [1, 0.8, 0.6], size=(2, 3))  # per object, in order
    for (row, col), (turn, log_s, log_v) in zip(((0, 0), (0, 1)), draws, strict=True):
        h, s, v = colorsys.rgb_to_hsv(*(canvas[row, col] / 255.0))
        expected = colorsys.hsv_to_rgb((h + turn) % 1, min(s * math.exp(log_s), 1.0), min(v * math.exp(log_v), 1.0))
        np.testing.assert_allclose(out[row, col], np.array(expected) * 255, atol=1e-3)
    np.testing.assert_array_equal(out[1], canvas[1])


def test_a_recolor_share_recolors_a_fixed_part_of_the_split():
    plain = make_split("objects", "train", 60, 32, seed=2)
    full = make_split("objects", "train", 60, 32, seed=2, recolor="jitter")
    half = make_split("objects", "train", 60, 32, seed=2, recolor="jitter", recolor_share=0.5)
    picked = [half.is_recolored(i) for i in range(60)]
    assert 18 <= sum(picked) <= 42 and all(full.is_recolored(i) for i in range(60))
    assert not any(plain.is_recolored(i) for i in range(60))
    for i, recolored in enumerate(picked):
        # a picked sample is the fully recoloured split's, any other the plain split's, byte for byte
        assert half[i].image.tobytes() == (full if recolored else plain)[i].image.tobytes()
        assert half[i].caption == plain[i].caption
    assert picked == [make_split("objects", "train", 60, 32, seed=2, recolor="jitter", recolor_share=0.5)
                      .is_recolored(i) for i in range(60)]  # fmt: skip
    assert half.info()["recolor_share"] == 0.5 and "recolor_share=0.5" in repr(half)
    with pytest.raises(ValueError, match=r"recolor_share must be in \(0, 1\], got 1.5"):
        make_split("objects", "train", 2, recolor="jitter", recolor_share=1.5)
    with pytest.raises(ValueError, match="recolor_share=0.5 needs a recolor mode"):
        make_split("objects", "train", 2, recolor_share=0.5)


def test_swap_halves_change_hue_or_saturation_and_value_only_and_compose_to_swap():
    spec = get_spec("objects")
    rng = np.random.default_rng(5)
    canvas = rng.uniform(20, 235, size=(6, 6, 3)).astype(np.float32)
    labels = rng.integers(0, len(spec.class_names) + 1, size=(6, 6)).astype(np.uint8)
    hue, sat_val = recolor_objects(spec, canvas, labels, "swap_hue"), recolor_objects(spec, canvas, labels, "swap_sv")
    palettes, swap = dict(spec.palettes), dict(spec.palette_swap)
    for row, col in np.ndindex(labels.shape):
        if labels[row, col] == 0:
            np.testing.assert_array_equal(hue[row, col], canvas[row, col])
            np.testing.assert_array_equal(sat_val[row, col], canvas[row, col])
            continue
        name = spec.class_names[labels[row, col] - 1]
        (h_a, s_a, v_a), (h_b, s_b, v_b) = palettes[name], palettes[swap[name]]
        h, s, v = colorsys.rgb_to_hsv(*(canvas[row, col] / 255.0))
        expected_hue = colorsys.hsv_to_rgb((h + h_b - h_a) % 1.0, s, v)
        expected_sv = colorsys.hsv_to_rgb(h, min(s * s_b / s_a, 1.0), min(v * v_b / v_a, 1.0))
        np.testing.assert_allclose(hue[row, col], np.array(expected_hue) * 255, atol=1e-3)
        np.testing.assert_allclose(sat_val[row, col], np.array(expected_sv) * 255, atol=1e-3)
    both = recolor_objects(spec, hue, labels, "swap_sv")
    np.testing.assert_allclose(both, recolor_objects(spec, canvas, labels, "swap"), atol=1e-2)


def test_bad_recolor_arguments_raise_naming_them():
    with pytest.raises(ValueError, match="sepia"):
        make_split("objects", "test", 2, recolor="sepia")  # type: ignore[arg-type]
    for recolor in ("swap", "swap_hue", "swap_sv"):
        with pytest.raises(ValueError, match=f"recolor='{recolor}' needs a preset with a palette_swap; 'shapes' has"):
            make_split("shapes", "test", 2, recolor=recolor)  # type: ignore[arg-type]
    assert len(list(make_split("shapes", "test", 2, 32, recolor="random"))) == 2
    with pytest.raises(ValueError, match="derangement"):
        SyntheticSpec(
            name="bad",
            renderer="objects",
            class_names=("sun", "leaf"),
            min_objects=1,
            max_objects=1,
            count_weights=(1.0,),
            test_count_weights=(1.0,),
            palettes=(("sun", (0.1, 0.5, 0.5)), ("leaf", (0.3, 0.5, 0.5))),
            palette_swap=(("sun", "sun"), ("leaf", "leaf")),
        )


# --------------------------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------------------------


def test_webdataset_shards_roundtrip_and_determinism(tmp_path):
    import webdataset as wds

    split = make_split("shapes", "train", num_samples=7, image_size=32, seed=1)
    shards = write_webdataset_shards(split, tmp_path / "a", samples_per_shard=3)
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    again = write_webdataset_shards(split, tmp_path / "b", samples_per_shard=3)
    assert [p.read_bytes() for p in shards] == [p.read_bytes() for p in again]
    info = json.loads((tmp_path / "a" / "info.json").read_text())
    assert info["num_samples"] == 7 and info["class_names"] == list(split.spec.class_names)

    with tarfile.open(shards[0]) as tar:
        names = tar.getnames()
        assert names[:4] == ["000000000.jpg", "000000000.txt", "000000000.json", "000000000.mask.png"]
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())

    # Raw records: the masks must be decoded as mode "L" (webdataset's "pil" decoder would convert them to RGB).
    records = list(wds.WebDataset([str(p) for p in shards], shardshuffle=False))
    assert [r["__key__"] for r in records] == [f"{i:09d}" for i in range(7)]
    assert [r["txt"].decode() for r in records] == [s.caption for s in split]
    for record, sample in zip(records, split, strict=True):
        meta = json.loads(record["json"])
        assert meta["caption"] == sample.caption and meta["classes"] == sample.classes
        assert meta["class_ids"] == [split.spec.class_index(c) for c in sample.classes]
        mask = Image.open(io.BytesIO(record["mask.png"]))
        assert mask.mode == "L"
        np.testing.assert_array_equal(np.asarray(mask), sample.mask)
    decoded = list(wds.WebDataset([str(shards[1])], shardshuffle=False).decode("pil"))
    assert decoded[0]["jpg"].size == (32, 32) and decoded[0]["txt"] == split[3].caption


def test_webdataset_png_images_are_lossless(tmp_path):
    import webdataset as wds

    samples = list(generate_samples("objects", 2, seed=4, image_size=32))
    shards = write_webdataset_shards(samples, tmp_path, samples_per_shard=10, image_format="png", write_masks=False)
    records = list(wds.WebDataset([str(shards[0])], shardshuffle=False).decode("pil"))
    assert "mask.png" not in records[0]
    np.testing.assert_array_equal(np.asarray(records[1]["png"]), np.asarray(samples[1].image))


def test_to_hf_dataset_columns_and_features():
    import datasets

    split = make_split("objects", "validation", num_samples=5, image_size=32)
    ds = to_hf_dataset(split, chunk_size=2)
    assert len(ds) == 5
    assert set(ds.column_names) == {"image", "text", "annotation", "classes"}
    assert isinstance(ds.features["image"], datasets.Image)
    assert isinstance(ds.features["annotation"], datasets.Image)
    assert ds.features["annotation"].mode == "L"
    row = ds[3]
    assert row["text"] == split[3].caption
    assert row["classes"] == split[3].classes
    assert row["image"].mode == "RGB" and row["image"].size == (32, 32)
    assert row["annotation"].mode == "L"
    np.testing.assert_array_equal(np.asarray(row["annotation"]), split[3].mask)
    assert len(to_hf_dataset([])) == 0


def test_save_imagefolder_loads_with_datasets(tmp_path):
    import datasets

    split = make_split("shapes", "test", num_samples=3, image_size=32)
    out = save_imagefolder(split, tmp_path / "folder")
    lines = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    assert lines[0]["file_name"] == "images/000000000.png"
    assert lines[2]["text"] == split[2].caption
    ds = datasets.load_dataset("imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "hf_cache"))
    assert len(ds) == 3
    assert {"image", "annotation", "text", "classes"} <= set(ds.column_names)
    by_text = {row["text"]: row for row in ds}
    sample = split[1]
    np.testing.assert_array_equal(np.asarray(by_text[sample.caption]["annotation"]), sample.mask)
