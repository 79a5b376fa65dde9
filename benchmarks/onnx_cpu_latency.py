"""CPU latency of GroupViT's image tower: ONNX Runtime against PyTorch eager, one image.

The image tower is what :class:`groupvit.segmentation.onnx.OnnxGroupViTSegmenter` runs per window: the vision
transformer,
the projection of the pooled output and of the group tokens, and the soft grouping maps. Random weights (latency does
not depend on them), the GroupViT-S preset, a 224x224 image, batch 1, float32, the same number of threads for both.

    python benchmarks/onnx_cpu_latency.py --threads 1 2 --output benchmarks/results/onnx-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

import groupvit
from _report import cpu_name, write_report
from groupvit.cli import argument_parser
from groupvit.segmentation.onnx import export_onnx


def _time(function: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return times


def _summary(times: list[float]) -> dict[str, float]:
    quantiles = np.percentile(times, [10, 90])
    return {
        "median_ms": round(statistics.median(times), 2),
        "p10_ms": round(float(quantiles[0]), 2),
        "p90_ms": round(float(quantiles[1]), 2),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="groupvit-s", help="config preset (default: %(default)s)")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="intra-op thread counts to measure")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--output", default=None, help="JSON file for the results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import onnxruntime as ort

    torch.manual_seed(0)
    model = groupvit.GroupViTModel(groupvit.GroupViTConfig.from_preset(args.preset)).eval()
    processor = groupvit.GroupViTProcessor.from_bundled(image_size=args.image_size)
    pixel_values = torch.randn(1, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(0))
    feeds = {"pixel_values": pixel_values.numpy()}

    def run_torch() -> object:
        with torch.inference_mode():
            vision = model.vision_model(pixel_values, interpolate_pos_encoding=True)
            return (
                model.visual_projection(vision.pooler_output),
                model.get_group_embeddings(vision.last_hidden_state),
                vision.attentions,
            )

    runs = []
    with tempfile.TemporaryDirectory() as directory:
        export = export_onnx(model, directory, processor, image_size=args.image_size, validate=True)
        for threads in args.threads:
            torch.set_num_threads(threads)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(export.image_model), options, providers=["CPUExecutionProvider"])
            # interleave the two so that a burst of load on shared cores hits both
            torch_times, onnx_times = [], []
            for _ in range(2):
                torch_times += _time(run_torch, args.warmup, args.repeats // 2)
                onnx_times += _time(lambda session=session: session.run(None, feeds), args.warmup, args.repeats // 2)
            torch_summary, onnx_summary = _summary(torch_times), _summary(onnx_times)
            runs.append(
                {
                    "threads": threads,
                    "repeats": len(torch_times),
                    "pytorch_eager": torch_summary,
                    "onnxruntime": onnx_summary,
                    "speedup_median": round(torch_summary["median_ms"] / onnx_summary["median_ms"], 2),
                    "load_average_after": [round(x, 2) for x in os.getloadavg()],
                }
            )

    results = {
        "benchmark": "image tower (vision transformer + projections + grouping maps), batch 1, CPU",
        "preset": args.preset,
        "weights": "random",
        "image_size": args.image_size,
        "dtype": "float32",
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "pytorch": {"mode": "eager, inference_mode", "attn_implementation": model.config._attn_implementation},
        "onnxruntime": {"opset": export.metadata["opset"], "graph_optimization": "ORT_ENABLE_ALL (default)"},
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "groupvit": groupvit.__version__,
        },
        "runs": runs,
        "parity_max_abs_error": export.parity,
    }
    text = json.dumps(results, indent=2)
    print(text)
    write_report(results, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
