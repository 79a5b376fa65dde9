"""Peak memory of zero-shot segmentation of large images with many labels: the streaming path against the old one.

The old path (before the bounded-memory change) made the pixel logits of a whole batch of windows at once
(`B x K x h x w`) and resized all `K` label logits to the original size at once (`K x H x W` floats), then
arg-maxed; the new one (`GroupViTSegmenter.segment`) makes them one window at a time and resizes label by label
with a running arg-max. Both give the same label map (checked here on every case where both fit).

Each case runs in a fresh subprocess; the figure is the process's peak RSS (`resource.getrusage`) above its RSS
after the model, the image and a warm-up call, so it is what one segmentation of that image adds. The model is a tiny
random GroupViT with 16 px patches (the memory in question is the logits', not the model's): the image is resized to
a 448 px short side and cut into 448/224 windows, as with the real checkpoints.

    python benchmarks/pipeline_memory.py                     # the default cases, new and old paths
    python benchmarks/pipeline_memory.py --cases 8000x8000x30 --paths new --out benchmarks/results/memory.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CASES = ("640x480x20", "2048x1024x171", "8000x8000x30")


def _build_segmenter():
    import torch

    import groupvit
    from groupvit.segmentation.segmenter import GroupViTSegmenter

    config = groupvit.GroupViTConfig.from_preset("groupvit-tiny")
    config.vision_config.patch_size = 16
    config.vision_config.image_size = 224
    torch.manual_seed(0)
    model = groupvit.GroupViTModel(config).eval()
    return GroupViTSegmenter(model, groupvit.GroupViTProcessor.from_bundled(image_size=224))


def _old_segment(segmenter, image, labels, options, text_embeds):
    """The pre-change computation: batch pixel logits, every label resized to the original size at once."""
    from collections import defaultdict

    import torch
    import torch.nn.functional as F

    from groupvit.segmentation.scoring import pixel_label_logits
    from groupvit.segmentation.windows import sliding_windows

    values, (height, width) = segmenter.prepare_image(image, options)
    h, w = values.shape[-2:]
    num_classes = len(labels) + int(options.with_background)
    sums, counts = torch.zeros(num_classes, h, w), torch.zeros(1, h, w)
    jobs = defaultdict(list)
    for box in sliding_windows(h, w, options.window, options.window_stride):
        jobs[(box[1] - box[0], box[3] - box[2])].append(box)
    with torch.inference_mode():
        for boxes in jobs.values():
            for start in range(0, len(boxes), options.window_batch_size):
                chunk = boxes[start : start + options.window_batch_size]
                crops = torch.cat([values[..., y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])
                pixel_maps, group_scores, _, _ = segmenter._forward_windows(crops, text_embeds, options)
                logits = pixel_label_logits(
                    pixel_maps, group_scores, options.background_threshold, options.assignment, options.score_mode
                )
                for j, (y1, y2, x1, x2) in enumerate(chunk):
                    sums[:, y1:y2, x1:x2] += logits[j]
                    counts[:, y1:y2, x1:x2] += 1
        logits = F.interpolate((sums / counts)[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        label_map = logits.argmax(0)
        winning = logits.gather(0, label_map[None]).flatten()
        totals = torch.zeros(num_classes).scatter_add_(0, label_map.flatten(), winning)
    return label_map, totals


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_case(case: str, path: str, check_against: str | None = None) -> dict:
    """One case in this process: `WxHxLABELS` with the `new` or `old` path."""
    import numpy as np
    import PIL.Image
    import torch

    torch.set_num_threads(1)
    width, height, num_labels = (int(v) for v in case.split("x"))
    segmenter = _build_segmenter()
    labels = [f"thing {i}" for i in range(num_labels)]
    options = segmenter.options.replace(background_threshold=0.5)
    text_embeds = segmenter.encode_labels(labels)
    rng = np.random.default_rng(0)
    # a smooth random image (a blown-up 64x64 noise), cheap to make at any size
    small = PIL.Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    image = small.resize((width, height), PIL.Image.Resampling.BILINEAR)
    segmenter.segment(small, labels[:2], options=options)  # warm-up: allocator pools, lazy imports
    baseline = _rss_mb()
    start = time.perf_counter()
    if path == "new":
        result = segmenter.segment(image, labels, options=options, text_embeds=text_embeds)[0]
        label_map = result.label_map
    else:
        label_map, _ = _old_segment(segmenter, image, labels, options, text_embeds)
    seconds = time.perf_counter() - start
    peak = _rss_mb()
    digest = int(torch.sum(label_map * torch.arange(label_map.numel()).reshape(label_map.shape) % 1000003))
    return {
        "case": case,
        "path": path,
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak, 1),
        "added_mb": round(peak - baseline, 1),
        "seconds": round(seconds, 2),
        "label_map_digest": digest,
        "old_full_logits_mb": round((num_labels + 1) * width * height * 4 / 2**20, 1),
    }


def _available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def main(argv: list[str] | None = None) -> int:
    from groupvit.cli import argument_parser  # here: the module stays importable without groupvit loaded

    parser = argument_parser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES), help="WxHxLABELS, comma-separated")
    parser.add_argument("--paths", default="new,old")
    parser.add_argument("--one", nargs=2, metavar=("CASE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_case(*args.one)))
        return 0
    rows = []
    for case in args.cases.split(","):
        width, height, num_labels = (int(v) for v in case.split("x"))
        for path in args.paths.split(","):
            # the old path needs the full-size logits and a bit more; skip it rather than swap or get killed
            need = 1.25 * (num_labels + 1) * width * height * 4 / 2**20 if path == "old" else 0
            if need > 0.8 * _available_mb():
                print(f"{case} {path}: skipped, needs ~{need:.0f} MB, {_available_mb():.0f} MB available")
                continue
            done = subprocess.run(
                [sys.executable, __file__, "--one", case, path], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                print(f"{case} {path}: failed ({done.returncode}): {done.stderr.strip()[-500:]}")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"{case:>14} {path}: +{row['added_mb']:8.1f} MB over {row['baseline_rss_mb']:.0f} MB "
                f"(peak {row['peak_rss_mb']:.0f} MB), {row['seconds']:.1f} s"
            )
        pair = {r["path"]: r for r in rows if r["case"] == case}
        if len(pair) == 2:
            same = pair["new"]["label_map_digest"] == pair["old"]["label_map_digest"]
            ratio = pair["old"]["added_mb"] / max(pair["new"]["added_mb"], 1e-9)
            print(f"{case:>14} old/new added memory: {ratio:.1f}x; same label map: {same}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
