"""Images/s of the `zero-shot-image-segmentation` pipeline at `batch_size=8` against `batch_size=1` (CPU by default).

With `batch_size=B` the pipeline prepares B images and sends all their sliding windows through the model together,
`window_batch_size` (8) windows per call, whatever the images' sizes; with 1 an image's 1-3 windows make a call of
their own. The images here have mixed sizes (landscape, portrait, square), so the batches mix windows of different
images. The label maps are checked to be the same at both batch sizes.

The model is random (speed does not depend on the weights): the tiny preset with 16 px patches by default (784
tokens per 448 px window), or `--preset groupvit-s` (GroupViT-S, 16 px patches, slower).

    python benchmarks/pipeline_batching.py                       # tiny, 16 images, 3 repeats
    python benchmarks/pipeline_batching.py --preset groupvit-s --images 8 --repeats 1
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

SIZES = ((640, 480), (480, 640), (500, 500), (800, 600), (600, 450), (448, 448), (1024, 768), (375, 500))


def main(argv: list[str] | None = None) -> int:
    from groupvit.cli import argument_parser  # here: the module stays importable without groupvit loaded

    parser = argument_parser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="groupvit-tiny")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--labels", type=int, default=20)
    parser.add_argument("--batch_sizes", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)

    import numpy as np
    import PIL.Image
    import torch
    from transformers import pipeline

    import groupvit
    from groupvit.segmentation.pipeline import TASK

    if args.threads:
        torch.set_num_threads(args.threads)
    config = groupvit.GroupViTConfig.from_preset(args.preset)
    if args.preset == "groupvit-tiny":
        config.vision_config.patch_size, config.vision_config.image_size = 16, 224
    torch.manual_seed(0)
    model = groupvit.GroupViTModel(config).eval()
    processor = groupvit.GroupViTProcessor.from_bundled(image_size=config.vision_config.image_size)
    segmenter = pipeline(TASK, model=model, processor=processor, device=args.device)
    rng = np.random.default_rng(0)
    images = []
    for i in range(args.images):
        width, height = SIZES[i % len(SIZES)]
        small = PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        images.append(small.resize((width, height), PIL.Image.Resampling.BILINEAR))
    labels = [f"thing {i}" for i in range(args.labels)]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    segmenter(images[:2], candidate_labels=labels, batch_size=2)  # warm-up
    times: dict[int, list[float]] = {b: [] for b in batch_sizes}
    maps: dict[int, list[np.ndarray]] = {}
    for _ in range(args.repeats):
        for batch_size in batch_sizes:  # interleaved, so that load from other jobs hits both alike
            start = time.perf_counter()
            out = segmenter(images, candidate_labels=labels, batch_size=batch_size)
            times[batch_size].append(time.perf_counter() - start)
            maps[batch_size] = [np.stack([np.asarray(e["mask"]) for e in entries]) for entries in out]
    same = all(
        all(np.array_equal(a, b) for a, b in zip(maps[batch_sizes[0]], maps[b], strict=True)) for b in batch_sizes
    )
    rows = []
    for batch_size in batch_sizes:
        median = statistics.median(times[batch_size])
        rows.append({"batch_size": batch_size, "seconds": times[batch_size], "images_per_s": args.images / median})
        print(f"batch_size={batch_size}: {args.images / median:.2f} images/s (median of {args.repeats})")
    ratio = rows[-1]["images_per_s"] / rows[0]["images_per_s"]
    print(f"batch {batch_sizes[-1]} / batch {batch_sizes[0]}: {ratio:.2f}x; same masks: {same}")
    if args.out:
        threads = torch.get_num_threads()
        result = {"preset": args.preset, "images": args.images, "labels": args.labels, "threads": threads}
        Path(args.out).write_text(json.dumps({**result, "rows": rows, "ratio": ratio, "same_masks": same}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
