"""Image-caption training streams: webdataset tar shards and Hugging Face `datasets`, with bad samples skipped.

Every stream is an `IterableDataset` that shards itself over processes (rank) and DataLoader workers, shuffles with a
seed that depends on the epoch, decodes and augments each sample, and yields only valid ones, so every batch is full
(the cross-process gather of the loss needs equal batch sizes on all ranks). A sample whose image does not decode,
whose caption is empty or not text, or a shard that is truncated (counted once per shard), is skipped and counted:
each yielded sample carries the skips its worker made since its previous sample, and a worker's last item of an epoch
is a sample-less `{"skipped": ...}` record with the skips made after its last sample, so the trainer's totals are exact
(`ImageTextCollator` keeps such records out of the batch).

Resuming: a stream is a deterministic function of (seed, epoch, rank, worker), so the trainer restores the data
position by restarting the epoch and discarding the batches it had already consumed.
"""

import io
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
CAPTION_KEYS = ("txt", "text", "caption")

# skips made in this process since the last yielded sample (each DataLoader worker is its own process)
_PENDING_SKIPS: Counter[str] = Counter()


class SampleError(ValueError):
    """A training sample that cannot be used; `reason` names the kind of problem."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


_TOTAL_SKIPS: Counter[str] = Counter()


def record_skip(reason: str, detail: str = "") -> None:
    """Count a skipped sample (or shard) in this process; the first ones of each kind, then every 1000th, are logged.

    Skips after a worker's last sample of an epoch reach the trainer only if the worker lives on (num_workers=0 or
    persistent workers); the log keeps them visible either way.
    """
    _PENDING_SKIPS[reason] += 1
    _TOTAL_SKIPS[reason] += 1
    count = _TOTAL_SKIPS[reason]
    if count <= 5 or count % 1000 == 0:
        logger.warning("skipped a training sample (%s, %d so far in this worker): %s", reason, count, detail[:200])


def take_skips() -> dict[str, int]:
    """The skips recorded since the previous call, by reason."""
    skips = dict(_PENDING_SKIPS)
    _PENDING_SKIPS.clear()
    return skips


def _shard_error_handler(url: str) -> Callable[[Exception], bool]:
    """A webdataset handler for one shard: skip tar-level errors, counting a corrupt shard once.

    A truncated tar raises twice (reading the cut member, then the next header); both are the same broken shard.
    """
    errors: list[Exception] = []

    def handler(exn: Exception) -> bool:
        if not errors:
            record_skip("corrupt_shard", f"{url}: {exn!r}")
        errors.append(exn)
        return True

    return handler


def decode_image(value: Any) -> Image.Image:
    """Decode an image given as bytes, a `datasets` image dict, an array or a PIL image into RGB."""
    try:
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, bytes | bytearray):
            image = Image.open(io.BytesIO(value))
        elif isinstance(value, str):
            image = Image.open(value)
        elif isinstance(value, np.ndarray):
            image = Image.fromarray(value)
        elif isinstance(value, Image.Image):
            image = value
        else:
            raise SampleError("bad_image", f"unsupported image type {type(value).__name__}")
        image.load()
        image = image.convert("RGB")
    except SampleError:
        raise
    except Exception as exn:  # PIL raises many types for corrupt data
        raise SampleError("bad_image", repr(exn)) from exn
    if image.width == 0 or image.height == 0:
        raise SampleError("bad_image", f"zero-size image {image.size}")
    return image


def decode_caption(value: Any) -> str:
    """A non-empty caption string from text, bytes or a JSON object with a `caption`/`text` field."""
    if isinstance(value, bytes | bytearray):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exn:
            raise SampleError("bad_caption", "caption is not UTF-8") from exn
    if isinstance(value, dict):
        value = value.get("caption", value.get("text"))
    if not isinstance(value, str):
        raise SampleError("bad_caption", f"caption of type {type(value).__name__}")
    value = value.strip()
    if not value:
        raise SampleError("empty_caption")
    return value


def _webdataset_fields(sample: dict[str, Any]) -> tuple[Any, Any]:
    image = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
    if image is None:
        raise SampleError("missing_image", f"keys {sorted(sample)}")
    caption = next((sample[k] for k in CAPTION_KEYS if k in sample), None)
    if caption is None and "json" in sample:
        try:
            caption = json.loads(sample["json"])
        except (ValueError, UnicodeDecodeError) as exn:
            raise SampleError("bad_caption", "unreadable json") from exn
    if caption is None:
        raise SampleError("missing_caption", f"keys {sorted(sample)}")
    return image, caption


@dataclass(frozen=True)
class StreamPosition:
    """Where a stream runs: its seed and epoch, the process (rank of world) and the DataLoader worker."""

    seed: int
    epoch: int
    rank: int
    world: int
    worker: int
    num_workers: int

    @classmethod
    def current(cls, seed: int, epoch: int, rank: int | None = None, world: int | None = None) -> "StreamPosition":
        """The position of the calling process and worker; `rank`/`world` default to torch.distributed's."""
        if rank is None or world is None:
            rank, world = 0, 1
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return cls(seed, epoch, rank, world, worker, num_workers)

    @property
    def shared_seed(self) -> str:
        """A seed equal on every process and worker: for orders that are then split between them."""
        return f"{self.seed}-{self.epoch}"

    def rng(self) -> random.Random:
        """A generator private to this process and worker."""
        return random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{self.worker}")


class ImageTextStream(IterableDataset):
    """Yields `{"pixel_values", "caption", "skipped"}` dicts from a raw source, skipping bad samples.

    Args:
        source: `source(position, rng)` yielding raw `(image, caption)` pairs for this process and worker (see
            `StreamPosition`), or a `SampleError` in place of an item it could not read.
        transform: `transform(pil_image, rng) -> tensor`.
        seed: Base seed; the stream of epoch `e` is a deterministic function of (seed, e, rank, worker).
        shuffle_buffer_size: Buffer size of the sample-level shuffle (0 disables it).
        rank: This process' rank among `world_size` (None: from `torch.distributed`, 0 when not initialised).
        world_size: Number of processes sharing the data (None: from `torch.distributed`, 1 when not initialised).
    """

    def __init__(
        self,
        source: Callable[..., Iterator[Any]],
        transform: Callable[[Image.Image, random.Random], torch.Tensor],
        seed: int = 0,
        shuffle_buffer_size: int = 1000,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        if (rank is None) != (world_size is None) or (world_size is not None and not 0 <= rank < world_size):
            raise ValueError(
                f"rank={rank!r} and world_size={world_size!r} must both be set with 0 <= rank < world_size"
            )
        self.rank = rank
        self.world_size = world_size
        self.source = source
        self.transform = transform
        self.seed = seed
        self.shuffle_buffer_size = shuffle_buffer_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        position = StreamPosition.current(self.seed, self.epoch, self.rank, self.world_size)
        rng = position.rng()
        raw = self.source(position, rng)
        if self.shuffle_buffer_size > 1:
            import webdataset as wds

            # webdataset's buffer shuffle, filled completely (initial=size) before the first draw, with our seeded rng
            raw = wds.shuffle(self.shuffle_buffer_size, initial=self.shuffle_buffer_size, rng=rng)(iter(raw))
        for item in raw:
            try:
                if isinstance(item, SampleError):
                    raise item
                image, caption = item
                caption = decode_caption(caption)
                pixel_values = self.transform(decode_image(image), rng)
            except SampleError as exn:
                record_skip(exn.reason, str(exn))
                continue
            yield {"pixel_values": pixel_values, "caption": caption, "skipped": take_skips()}
        trailing = take_skips()
        if trailing:  # skips after the last sample: a record without a sample, so that they are counted too
            yield {"skipped": trailing}


def webdataset_source(urls: str | list[str], resampled: bool = False) -> Callable[..., Iterator[Any]]:
    """Raw pairs from webdataset tar shards (img2dataset layout: `key.jpg` + `key.txt` and/or `key.json`).

    Args:
        urls: Brace-expandable shard pattern(s), e.g. `"data/shard-{000000..000099}.tar"`, local paths or URLs.
        resampled: Draw shards with replacement, forever (for multi-node runs where shards cannot be split evenly);
            otherwise each epoch shuffles the shard list and splits it over processes, then workers.
    """
    import webdataset as wds

    patterns = [urls] if isinstance(urls, str) else list(urls)
    shards = [url for pattern in patterns for url in wds.shardlists.expand_urls(pattern)]
    if not shards:
        raise ValueError(f"No shards match {urls!r}")

    def source(position: StreamPosition, rng: random.Random) -> Iterator[Any]:
        if resampled:
            picks = ({"url": rng.choice(shards)} for _ in iter(int, 1))
        else:
            order = list(shards)
            random.Random(position.shared_seed).shuffle(order)
            # ours, not `wds.split_by_node`: that one reads the rank from RANK/torch.distributed only, and the stream's
            # rank may be given explicitly (ImageTextStream(rank=, world_size=)); the same rule splits `indexed_source`
            mine = order[position.rank :: position.world]
            if len(mine) < position.num_workers:
                logger.warning("%d shards for %d workers on rank %d", len(mine), position.num_workers, position.rank)
            picks = ({"url": url} for url in wds.split_by_worker(mine))
        for pick in picks:
            for sample in wds.tarfile_samples([pick], handler=_shard_error_handler(pick["url"])):
                try:
                    yield _webdataset_fields(sample)
                except SampleError as exn:
                    yield exn

    source.num_shards = len(shards)
    return source


def hf_dataset_source(dataset: Any, image_column: str = "image", text_column: str = "text") -> Callable:
    """Raw pairs from a Hugging Face `datasets.Dataset` (map-style) or `IterableDataset` (streaming).

    Images are read undecoded (`Image(decode=False)`) and decoded by the stream, so a corrupt file is skipped rather
    than raising inside `datasets`.
    """
    import datasets

    missing = [c for c in (image_column, text_column) if c not in (dataset.column_names or [])]
    if missing:
        raise ValueError(f"Dataset has no column(s) {missing}; its columns are {dataset.column_names}")
    if isinstance(dataset.features[image_column], datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))

    if isinstance(dataset, datasets.IterableDataset):
        from datasets.distributed import split_dataset_by_node

        def source(position: StreamPosition, rng: random.Random) -> Iterator[Any]:
            # split over processes here; the split over DataLoader workers is done by `datasets` itself when it is
            # iterated inside a worker (by shard), so slicing rows by worker again would drop data
            shard = split_dataset_by_node(dataset, rank=position.rank, world_size=position.world)
            shard = shard.shuffle(seed=position.seed + position.epoch, buffer_size=1000)
            for row in shard:
                yield row[image_column], row[text_column]

        return source

    def get_pair(index: int) -> tuple[Any, Any]:
        row = dataset[index]
        return row[image_column], row[text_column]

    return indexed_source(len(dataset), get_pair)


def indexed_source(length: int, get_pair: Callable[[int], tuple[Any, Any]]) -> Callable[..., Iterator[Any]]:
    """Raw pairs from anything indexable: one permutation per epoch, shared by all processes, split between them."""
    if length <= 0:
        raise ValueError(f"The dataset is empty (length {length})")

    def source(position: StreamPosition, rng: random.Random) -> Iterator[Any]:
        order = list(range(length))
        random.Random(position.shared_seed).shuffle(order)
        start = position.rank * position.num_workers + position.worker
        for index in order[start :: position.world * position.num_workers]:
            try:
                yield get_pair(index)
            except SampleError as exn:
                yield exn

    source.num_rows = length
    return source


def synthetic_source(split: Any) -> Callable[..., Iterator[Any]]:
    """Raw pairs from a `groupvit.data.synthetic` split (generated on the fly; masks are never used)."""

    def get_pair(index: int) -> tuple[Any, Any]:
        sample = split[index]
        return sample.image, sample.caption

    return indexed_source(len(split), get_pair)


class EmptyDatasetError(ValueError):
    """A dataset source that holds no rows."""


def load_hf_dataset(path: str, split: str = "train", streaming: bool = False, **kwargs: Any) -> Any:
    """Load a dataset by Hub id, a `save_to_disk` folder, an `imagefolder` directory or parquet/arrow files.

    A `save_to_disk` folder may hold one dataset or several splits (`dataset_dict.json`); `split` picks one.

    Raises:
        ValueError: A `save_to_disk` folder without `split` (naming the splits it has).
        EmptyDatasetError: A `save_to_disk` dataset saved without rows (`datasets.load_from_disk` would fail with an
            IndexError).
    """
    import json
    import os

    import datasets

    source, splits_file = path, os.path.join(path, "dataset_dict.json")
    if os.path.isdir(path) and os.path.isfile(splits_file):
        with open(splits_file) as handle:
            names = json.load(handle).get("splits", [])
        if split not in names:
            raise ValueError(f"dataset {path!r} has no split {split!r}; its splits: {sorted(names)}")
        path = os.path.join(path, split)
    state_file = os.path.join(path, "state.json")
    if os.path.isdir(path) and os.path.isfile(state_file):
        with open(state_file) as handle:
            if not json.load(handle).get("_data_files"):
                raise EmptyDatasetError(f"split {split!r} of dataset {source!r} has no rows")
        loaded = datasets.load_from_disk(path)
        return loaded.to_iterable_dataset() if streaming else loaded
    if os.path.isdir(path):
        return datasets.load_dataset("imagefolder", data_dir=path, split=split, streaming=streaming, **kwargs)
    for suffix, builder in ((".parquet", "parquet"), (".arrow", "arrow")):
        if path.endswith(suffix):
            return datasets.load_dataset(builder, data_files=path, split=split, streaming=streaming, **kwargs)
    return datasets.load_dataset(path, split=split, streaming=streaming, **kwargs)
