"""Tests for groupvit.data.synthetic: determinism, mask/caption consistency, splits and writers."""

from __future__ import annotations

import io
import json
import re
import tarfile

import numpy as np
import pytest
from PIL import Image

from groupvit.data.synthetic import (
    SPLITS,
    SyntheticSpec,
    generate_sample,
    generate_samples,
    get_spec,
    list_specs,
    make_split,
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
