"""Input-pipeline throughput: webdataset JPEG decode + augmentation + collation, samples/s per CPU worker.

Writes synthetic 224 px JPEG shards (`groupvit.data.synthetic.write_webdataset_shards`) to a temporary directory and
reads them the way pretraining does: `ImageTextStream(webdataset_source(...), TrainTransform)` in a `DataLoader`
with `ImageTextCollator` (bundled CLIP tokenizer, `num_prompt_nouns` noun prompts per caption). It reports

- the stages in this process with one torch thread, one after the other (tar read, JPEG decode, augmentation,
  collation), as samples/s;
- the DataLoader end to end with 1 and 2 workers (persistent workers; whole epochs timed after an untimed first
  epoch that starts them), as samples/s in total and per worker.

A GPU that trains at S samples/s needs about `ceil(S / per_worker)` loader workers (`--gpu_samples_per_s S` prints
it). Real img2dataset shards hold larger JPEGs (256-512 px) than these, so decode costs more there.

    python benchmarks/bench_data.py --out benchmarks/results/data-cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import io
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader

from _report import cpu_name, write_report
from groupvit.cli import argument_parser
from groupvit.data.collate import ImageTextCollator
from groupvit.data.streams import ImageTextStream, decode_caption, decode_image, webdataset_source
from groupvit.data.synthetic import make_split, write_webdataset_shards
from groupvit.data.transforms import transform_from_processor
from groupvit.processing_groupvit import GroupViTProcessor, bundled_tokenizer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples: a smoke run")
    parser.add_argument("--num_samples", type=int, help="samples written (default 512; --quick 64)")
    parser.add_argument("--shards", type=int, default=8, help="shards written (a multiple of the worker counts)")
    parser.add_argument("--image_size", type=int, default=224, help="side of the stored JPEGs and of the crops")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--workers", default="1,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--epochs", type=int, default=2, help="timed passes over the shards per worker count")
    parser.add_argument("--num_prompt_nouns", type=int, default=3, help="noun prompts per caption (paper: 3)")
    parser.add_argument("--gpu_samples_per_s", type=float, help="print the workers this GPU step rate needs")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.num_samples = args.num_samples or (64 if args.quick else 512)
    args.workers = [int(w) for w in args.workers.split(",")]
    return args


def stage_rates(args: argparse.Namespace, pattern: str, transform: Any, collator: ImageTextCollator) -> dict:
    """Samples/s of each stage run alone in this process (no DataLoader)."""
    urls = [{"url": url} for url in wds.shardlists.expand_urls(pattern)]
    start = time.perf_counter()
    raw = [(sample["jpg"], sample["txt"]) for sample in wds.tarfile_samples(iter(urls))]
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    images = [(decode_image(image), decode_caption(caption)) for image, caption in raw]
    decode_s = time.perf_counter() - start
    rng = random.Random(args.seed)
    start = time.perf_counter()
    items = [{"pixel_values": transform(image, rng), "caption": caption} for image, caption in images]
    augment_s = time.perf_counter() - start
    start = time.perf_counter()
    for first in range(0, len(items), args.batch_size):
        collator(items[first : first + args.batch_size])
    collate_s = time.perf_counter() - start
    count = len(raw)
    rates = {
        "read": count / read_s,
        "decode": count / decode_s,
        "augment": count / augment_s,
        "collate": count / collate_s,
    }
    rates["all_stages"] = count / (read_s + decode_s + augment_s + collate_s)
    return rates


def loader_rate(args: argparse.Namespace, stream: ImageTextStream, collator: ImageTextCollator, workers: int) -> dict:
    """End-to-end DataLoader samples/s over whole epochs; a first, untimed epoch starts the workers."""
    loader = DataLoader(
        stream, batch_size=args.batch_size, num_workers=workers, collate_fn=collator, persistent_workers=True
    )
    rates = []
    for epoch in range(args.epochs + 1):
        count, start = 0, time.perf_counter()
        for batch in loader:
            count += len(batch.get("pixel_values", ()))  # a batch of skip records only has no samples
        if epoch > 0:
            rates.append(count / (time.perf_counter() - start))
    total = statistics.median(rates)
    return {"samples_per_s": total, "per_worker": total / workers, "epochs": rates}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # one intra-op thread, as in a DataLoader worker: the stage timings are then per worker, and small torch ops
    # do not wait on a second OpenMP thread that a busy machine has descheduled
    torch.set_num_threads(1)
    processor = GroupViTProcessor.from_bundled(image_size=args.image_size)
    transform = transform_from_processor(processor, args.image_size)
    collator = ImageTextCollator(bundled_tokenizer(), num_prompt_nouns=args.num_prompt_nouns, seed=args.seed)
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": f"{cpu_name()} ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "num_samples": args.num_samples,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_prompt_nouns": args.num_prompt_nouns,
    }
    with tempfile.TemporaryDirectory() as folder:
        split = make_split("objects", "train", args.num_samples, image_size=args.image_size, seed=args.seed)
        per_shard = math.ceil(args.num_samples / args.shards)
        shards = write_webdataset_shards(split, folder, samples_per_shard=per_shard, write_masks=False)
        pattern = str(Path(folder) / f"shard-{{000000..{len(shards) - 1:06d}}}.tar")
        first = next(iter(wds.tarfile_samples(iter([{"url": str(shards[0])}]))))
        with Image.open(io.BytesIO(first["jpg"])) as image:
            report["jpeg"] = {
                "size": image.size,
                "mean_bytes": sum(p.stat().st_size for p in shards) / args.num_samples,
            }
        report["stages_per_s"] = stage_rates(args, pattern, transform, collator)
        stream = ImageTextStream(webdataset_source(pattern), transform, seed=args.seed, shuffle_buffer_size=100)
        report["loader"] = {str(w): loader_rate(args, stream, collator, w) for w in args.workers}
    # a lone worker's rate: with more workers than idle cores they share cores with each other and the main process
    per_worker = report["loader"][str(min(args.workers))]["per_worker"]
    report["per_worker_samples_per_s"] = per_worker

    print(f"\n{report['cpu']} | {args.num_samples} samples, {args.image_size}px JPEG, batch {args.batch_size}")
    for stage, rate in report["stages_per_s"].items():
        print(f"stage {stage:<12}{rate:>10.1f} samples/s (one process)")
    for workers, entry in report["loader"].items():
        print(
            f"loader {workers} worker(s) {entry['samples_per_s']:>8.1f} samples/s total, "
            f"{entry['per_worker']:.1f} per worker"
        )
    if args.gpu_samples_per_s:
        needed = math.ceil(args.gpu_samples_per_s / per_worker)
        report["workers_needed"] = needed
        print(f"a GPU at {args.gpu_samples_per_s:.0f} samples/s needs about {needed} workers")
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
