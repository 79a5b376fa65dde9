"""Training streams: webdataset shards and `datasets` sources, sharding, determinism, bad samples counted."""

import io
import random
import tarfile
import zlib
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from groupvit.data.collate import ImageTextCollator
from groupvit.data.streams import (
    ImageTextStream,
    StreamPosition,
    decode_caption,
    hf_dataset_source,
    indexed_source,
    load_hf_dataset,
    synthetic_source,
    webdataset_source,
)
from groupvit.data.synthetic import make_split, save_imagefolder, write_webdataset_shards
from groupvit.data.transforms import RandAugment, TrainTransform, random_erase
from groupvit.processing_groupvit import bundled_tokenizer

TRANSFORM = TrainTransform(32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), scale=(0.5, 1.0))


def _png(color=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture()
def shards(tmp_path):
    """Two good synthetic shards (12 samples), a shard with 3 bad samples among 2 good ones, and a truncated shard."""
    good = write_webdataset_shards(make_split("objects", "train", 12, 32), tmp_path / "good", samples_per_shard=6)
    bad = tmp_path / "bad" / "shard-000000.tar"
    bad.parent.mkdir()
    with tarfile.open(bad, "w") as tar:
        _add(tar, "a.png", _png())
        _add(tar, "a.txt", b"a red thing")
        _add(tar, "b.jpg", b"this is not a jpeg")  # undecodable image
        _add(tar, "b.txt", b"a broken image")
        _add(tar, "c.png", _png())
        _add(tar, "c.txt", b"   ")  # empty caption
        _add(tar, "d.png", _png())
        _add(tar, "d.json", b'{"caption": 42}')  # caption that is not text
        _add(tar, "e.png", _png((0, 0, 250)))
        _add(tar, "e.json", b'{"caption": "a blue thing"}')
    truncated = tmp_path / "bad" / "shard-000001.tar"
    data = good[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2 + 100])
    return tmp_path, good


def _collect(stream, num_workers=0, batch_size=1):
    loader = DataLoader(stream, batch_size=batch_size, num_workers=num_workers, collate_fn=lambda items: items)
    return [item for batch in loader for item in batch]


def test_webdataset_stream_reads_every_sample_once(shards):
    root, _ = shards
    items = _collect(ImageTextStream(webdataset_source(str(root / "good" / "shard-{000000..000001}.tar")), TRANSFORM))
    captions = sorted(item["caption"] for item in items)
    expected = sorted(sample.caption for sample in make_split("objects", "train", 12, 32))
    assert captions == expected
    assert items[0]["pixel_values"].shape == (3, 32, 32)
    assert sum(sum(item["skipped"].values()) for item in items) == 0


def test_bad_samples_and_truncated_shards_are_skipped_and_counted(shards):
    root, _ = shards
    stream = ImageTextStream(webdataset_source(str(root / "bad" / "shard-{000000..000001}.tar")), TRANSFORM)
    items = _collect(stream)
    captions = {item["caption"] for item in items if "caption" in item}
    assert {"a red thing", "a blue thing"} <= captions
    skipped = Counter()
    for item in items:
        skipped.update(item["skipped"])
    assert skipped["bad_image"] == 1 and skipped["empty_caption"] == 1 and skipped["bad_caption"] == 1
    assert skipped["corrupt_shard"] == 1  # the truncated tar ends the shard early, counted once, not raised
    # the good samples before the truncation point of the second shard still came through
    assert len(captions) >= 3


def test_collator_reports_skips_with_the_batch(shards):
    root, _ = shards
    # no shuffling: the three bad samples lie between the two good ones, so all are reported with the batch
    stream = ImageTextStream(
        webdataset_source(str(root / "bad" / "shard-000000.tar")), TRANSFORM, shuffle_buffer_size=0
    )
    collator = ImageTextCollator(bundled_tokenizer(), num_prompt_nouns=2, seed=0)
    batches = list(DataLoader(stream, batch_size=2, collate_fn=collator))
    assert batches[0]["pixel_values"].shape == (2, 3, 32, 32)
    assert batches[0]["prompt_input_ids"].shape[:2] == (2, 2)
    assert sum(sum(batch["skipped"].values()) for batch in batches) == 3


def test_collator_carries_every_caption_noun_not_only_the_sampled_prompts():
    import torch

    collator = ImageTextCollator(bundled_tokenizer(), num_prompt_nouns=1, seed=0)
    image = torch.zeros(3, 8, 8)
    captions = ["a ball, a fish and a tree near the window.", "an image with a leaf.", "a photo."]
    batch = collator([{"pixel_values": image, "caption": caption} for caption in captions])
    expected = [["ball", "fish", "tree", "window"], ["leaf"], []]
    ids = [[zlib.crc32(noun.encode()) & 0x7FFFFFFF for noun in nouns] for nouns in expected]
    assert batch["caption_noun_ids"].tolist() == [row + [-1] * (4 - len(row)) for row in ids]
    # one prompt per caption, drawn from its nouns (the third caption has none: a copy of the caption, id -1)
    assert batch["prompt_noun_ids"][0, 0].item() in ids[0] and batch["prompt_noun_ids"][2, 0].item() == -1
    # each caption's nouns are extracted once per batch, for the prompts and the caption noun ids together
    calls = []

    def counting(caption):
        calls.append(caption)
        return collator.noun_extractor(caption)

    counted = ImageTextCollator(bundled_tokenizer(), num_prompt_nouns=1, noun_extractor=counting, seed=0)
    again = counted([{"pixel_values": image, "caption": caption} for caption in captions])
    assert calls == captions
    assert torch.equal(again["caption_noun_ids"], batch["caption_noun_ids"])
    assert torch.equal(again["prompt_noun_ids"], batch["prompt_noun_ids"])


def test_streams_split_between_ranks_and_workers_without_overlap():
    split = make_split("objects", "train", 40, 32)
    source = indexed_source(len(split), lambda i: (i, f"caption {i}"))
    seen = []
    for rank in range(2):
        for worker in range(3):
            position = StreamPosition(seed=0, epoch=1, rank=rank, world=2, worker=worker, num_workers=3)
            seen += [caption for _, caption in source(position, random.Random(0))]
    assert sorted(seen) == sorted(f"caption {i}" for i in range(40))
    # a new epoch reorders
    first = [c for _, c in source(StreamPosition(0, 1, 0, 1, 0, 1), random.Random(0))]
    second = [c for _, c in source(StreamPosition(0, 2, 0, 1, 0, 1), random.Random(0))]
    assert sorted(first) == sorted(second) and first != second


def test_webdataset_shards_split_between_workers(shards):
    root, _ = shards
    stream = ImageTextStream(webdataset_source(str(root / "good" / "shard-{000000..000001}.tar")), TRANSFORM)
    items = _collect(stream, num_workers=2)
    assert len(items) == 12
    assert sorted(item["caption"] for item in items) == sorted(
        s.caption for s in make_split("objects", "train", 12, 32)
    )


def test_stream_is_deterministic_per_seed_and_epoch():
    split = make_split("objects", "train", 16, 32)

    def run(seed, epoch):
        stream = ImageTextStream(synthetic_source(split), TRANSFORM, seed=seed, shuffle_buffer_size=4)
        stream.set_epoch(epoch)
        items = _collect(stream)
        return [i["caption"] for i in items], torch.stack([i["pixel_values"] for i in items])

    a, pa = run(0, 0)
    b, pb = run(0, 0)
    c, _ = run(0, 1)
    assert a == b and torch.equal(pa, pb) and a != c


def test_hf_imagefolder_source_skips_corrupt_files(tmp_path):
    folder = tmp_path / "folder"
    save_imagefolder(make_split("objects", "train", 6, 32), folder)
    images = sorted((folder / "images").iterdir())
    images[0].write_bytes(b"corrupt")
    dataset = load_hf_dataset(str(folder))
    assert {"image", "text"} <= set(dataset.column_names)
    items = _collect(ImageTextStream(hf_dataset_source(dataset), TRANSFORM))
    assert len(items) == 5
    assert sum(sum(i["skipped"].values()) for i in items) == 1
    with pytest.raises(ValueError, match="no column"):
        hf_dataset_source(dataset, text_column="caption")


def test_hf_streaming_source(tmp_path):
    folder = tmp_path / "folder"
    save_imagefolder(make_split("objects", "train", 6, 32), folder)
    dataset = load_hf_dataset(str(folder), streaming=True)
    items = _collect(ImageTextStream(hf_dataset_source(dataset), TRANSFORM))
    assert len(items) == 6


def test_save_to_disk_folder_with_splits_gives_the_asked_split(tmp_path):
    import datasets

    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["a", "b", "c"]}),
            "validation": datasets.Dataset.from_dict({"text": ["d"]}),
        }
    )
    splits.save_to_disk(str(tmp_path / "pairs"))
    assert load_hf_dataset(str(tmp_path / "pairs"), split="validation")["text"] == ["d"]
    assert load_hf_dataset(str(tmp_path / "pairs"))["text"] == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"has no split 'test'; its splits: \['train', 'validation'\]"):
        load_hf_dataset(str(tmp_path / "pairs"), split="test")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"a cat", "a cat"), ({"caption": " a dog "}, "a dog"), ({"text": "a cow"}, "a cow"), ("x", "x")],
)
def test_decode_caption(value, expected):
    assert decode_caption(value) == expected


def test_transform_crops_flips_and_normalises():
    image = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :, None], (64, 1, 3)) * 4)
    plain = TrainTransform(
        64, mean=(0, 0, 0), std=(1, 1, 1), scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0, color_jitter=0
    )
    out = plain(image, random.Random(0))
    torch.testing.assert_close(out[0, 0, :8], torch.arange(8) * 4 / 255.0, atol=0.02, rtol=0)
    flipped = TrainTransform(64, (0, 0, 0), (1, 1, 1), scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0, color_jitter=0)
    torch.testing.assert_close(flipped(image, random.Random(0)), out.flip(-1))


def _gray(value: int, size: tuple[int, int] = (20, 20)) -> Image.Image:
    return Image.new("RGB", size, (value, value, value))


def _first_pixel(image: Image.Image) -> int:
    return image.getpixel((0, 0))[0]


def test_rand_augment_operations_against_hand_computed_values():
    ops = RandAugment(magnitude=5, increasing=True).ops
    rng = random.Random(0)
    assert len(ops) == 15
    assert _first_pixel(ops["Invert"](_gray(200), 5, rng, (0, 0, 0))) == 55
    # level 5: keep 4 - int(5 / 10 * 4) = 2 bits: 200 = 0b11001000 -> 0b11000000
    assert _first_pixel(ops["PosterizeIncreasing"](_gray(200), 5, rng, (0, 0, 0))) == 192
    # level 5: threshold 256 - 128 = 128; 200 is inverted, 100 is kept
    assert _first_pixel(ops["SolarizeIncreasing"](_gray(200), 5, rng, (0, 0, 0))) == 55
    assert _first_pixel(ops["SolarizeIncreasing"](_gray(100), 5, rng, (0, 0, 0))) == 100
    # level 5: + int(5 / 10 * 110) = 55 below 128 only
    assert _first_pixel(ops["SolarizeAdd"](_gray(100), 5, rng, (0, 0, 0))) == 155
    assert _first_pixel(ops["SolarizeAdd"](_gray(200), 5, rng, (0, 0, 0))) == 200
    # level 10: brightness factor 1 +- 0.9
    assert _first_pixel(ops["BrightnessIncreasing"](_gray(100), 10, rng, (0, 0, 0))) in (10, 190)
    assert _first_pixel(RandAugment(magnitude=5).ops["Brightness"](_gray(100), 10, rng, (0, 0, 0))) == 190
    assert list(ops["Rotate"](_gray(100), 0, rng, (0, 0, 0)).getdata()) == list(_gray(100).getdata())
    # level 10: a shift of 0.45 * 20 = 9 columns either way, the uncovered ones filled
    stripes = Image.fromarray(np.tile((np.arange(20, dtype=np.uint8) * 10)[None, :, None], (20, 1, 3)))
    moved = np.asarray(ops["TranslateXRel"](stripes, 10, random.Random(1), (7, 7, 7)))[0, :, 0].tolist()
    columns = (np.arange(20) * 10).tolist()
    assert moved in (columns[9:] + [7] * 9, [7] * 9 + columns[:11])


def test_rand_augment_draws_operations_magnitudes_and_probability_like_timm():
    augment = RandAugment.from_policy("rand-m9-mstd0.5-inc1", fill=(124, 116, 104))
    assert (augment.magnitude, augment.num_ops, augment.magnitude_std, augment.increasing) == (9, 2, 0.5, True)
    assert augment.fill == (124, 116, 104) and "PosterizeIncreasing" in augment.ops and "Posterize" not in augment.ops
    assert RandAugment.from_policy("rand-m7-n3-inc0").num_ops == 3 and "Posterize" in RandAugment(7).ops
    calls: list[tuple[str, float]] = []
    for name in augment.ops:
        augment.ops[name] = lambda image, level, rng, fill, name=name: calls.append((name, level)) or image
    rng = random.Random(0)
    for _ in range(3000):
        augment(_gray(0), rng)
    # 2 draws per image, each kept with probability 0.5; all 15 operations, uniformly
    assert 0.95 < len(calls) / 3000 < 1.05
    counts = Counter(name for name, _ in calls)
    assert len(counts) == 15 and max(counts.values()) < 1.35 * min(counts.values())
    levels = np.array([level for _, level in calls])
    assert abs(levels.mean() - 9.0) < 0.05 and abs(levels.std() - 0.5) < 0.05 and levels.max() <= 10.0


@pytest.mark.parametrize("policy", ["auto-m9", "rand-x9", "rand-mfoo", "rand-n2", "rand-m11"])
def test_rand_augment_refuses_a_bad_policy(policy):
    with pytest.raises(ValueError, match="RandAugment"):
        RandAugment.from_policy(policy)


def test_random_erase_replaces_one_box_with_noise():
    for seed in range(50):
        erased = random_erase(torch.zeros(3, 64, 64), random.Random(seed))
        rows, cols = torch.nonzero(erased[0], as_tuple=True)
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert len(rows) == h * w  # one filled rectangle, the same in every channel
        assert bool((erased[:, rows, cols] != 0).all())
        assert 0.015 < h * w / 64**2 < 0.36 and 0.25 < h / w < 4.0
    big = random_erase(torch.zeros(3, 200, 200), random.Random(3), area=(0.3, 0.3))
    noise = big[big != 0]
    assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1.0) < 0.05
    torch.testing.assert_close(
        random_erase(torch.zeros(3, 8, 8), random.Random(5)), random_erase(torch.zeros(3, 8, 8), random.Random(5))
    )


def test_transform_applies_rand_augment_and_erasing_reproducibly():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    kwargs = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "color_jitter": 0}
    plain = TrainTransform(32, **kwargs)
    paper = TrainTransform(32, rand_augment="rand-m9-mstd0.5-inc1", random_erasing=1.0, **kwargs)
    first, again = paper(image, random.Random(4)), paper(image, random.Random(4))
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, plain(image, random.Random(4)))
    with pytest.raises(ValueError, match="random_erasing"):
        TrainTransform(32, random_erasing=2.0, **kwargs)


def _tiny_tensor(image, rng):
    return torch.zeros(1)


@pytest.fixture(scope="module")
def parquet_shards(tmp_path_factory):
    """A `datasets` parquet source in 4 shards of 10 rows, captions `sample 0` .. `sample 39`."""
    import datasets

    folder = tmp_path_factory.mktemp("parquet")
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    for shard in range(4):
        rows = {
            "image": [{"bytes": _png(), "path": None}] * 10,
            "text": [f"sample {shard * 10 + i}" for i in range(10)],
        }
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / f"part-{shard}.parquet"))
    return str(folder / "*.parquet")


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
@pytest.mark.parametrize("num_workers", [0, 1, 2])
@pytest.mark.parametrize("world_size", [1, 2])
def test_every_sample_exactly_once_per_epoch(parquet_shards, streaming, num_workers, world_size, monkeypatch):
    import datasets

    # datasets sleeps 5 s after each shuffled multi-shard stream ends (waiting for reader threads): not under test
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    dataset = load_hf_dataset(parquet_shards, streaming=streaming)
    if streaming:
        assert dataset.num_shards == 4
    for epoch in (0, 1):
        seen = []
        for rank in range(world_size):
            stream = ImageTextStream(
                hf_dataset_source(dataset), _tiny_tensor, shuffle_buffer_size=4, rank=rank, world_size=world_size
            )
            stream.set_epoch(epoch)
            seen += [item["caption"] for item in _collect(stream, num_workers=num_workers) if "caption" in item]
        assert sorted(seen) == sorted(f"sample {i}" for i in range(40)), (epoch, len(seen))


def test_stream_rank_arguments_are_checked():
    with pytest.raises(ValueError, match="rank=2 and world_size=2"):
        ImageTextStream(indexed_source(4, lambda i: (i, "x")), _tiny_tensor, rank=2, world_size=2)


def _shard_with_a_cut_member(path, good_before: int) -> None:
    """`good_before` good samples, then a member whose data is cut off (the file ends inside it)."""
    with tarfile.open(path, "w") as tar:
        for i in range(good_before):
            _add(tar, f"g{i}.png", _png())
            _add(tar, f"g{i}.txt", f"good {i}".encode())
        _add(tar, "cut.png", _png() * 50)
    data = path.read_bytes()
    end = data.index(b"cut.png") + 512 + 300  # header block + part of the member's data
    path.write_bytes(data[:end])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_truncated_shard_counts_once_and_trailing_skips_are_kept(tmp_path, num_workers):
    paths = []
    for shard in range(2):
        paths.append(tmp_path / f"shard-{shard}.tar")
        _shard_with_a_cut_member(paths[-1], good_before=3)
    stream = ImageTextStream(webdataset_source([str(p) for p in paths]), _tiny_tensor, shuffle_buffer_size=0)
    items = _collect(stream, num_workers=num_workers)
    skipped = Counter()
    for item in items:
        skipped.update(item["skipped"])
    assert sorted(i["caption"] for i in items if "caption" in i) == sorted([f"good {i}" for i in range(3)] * 2)
    assert skipped == {"corrupt_shard": 2}  # one per truncated shard; they come after each worker's last sample
