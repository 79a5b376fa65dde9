"""Speed and memory of our GroupViTModel against transformers' built-in GroupViTModel (same config, same weights).

Cases (each contender runs interleaved with the baseline in this process, warm-up excluded):
- ``train``: samples/s of one training step (forward with ``return_loss=True``, backward, AdamW step, zero_grad);
- ``infer``: images/s of ``get_image_features`` under ``torch.no_grad``;
- ``seg``: seconds per image of zero-shot segmentation of one image into 20 labels, end to end (tokenise, preprocess,
  model, label map at the image size): the built-in's ``output_segmentation=True`` forward against our
  ``GroupViTSegmenter`` and the ``zero-shot-image-segmentation`` pipeline (``mode="whole"``, no resize);
- ``memory``: peak memory of one case per fresh subprocess (CUDA ``max_memory_allocated``; process peak RSS).

Device policy: CUDA runs every contender under bf16 autocast, CPU in float32 (``--cpu_bf16`` adds bf16 contenders,
which are reported but never picked as ours' best). ``return_loss=True`` is the image-text contrastive loss in
both models (the paper's multi-label term is a training-side loss, not part of the model). ``speedup`` is baseline
time / ours time (= ours/baseline throughput) from the medians, ``sp.min`` the same from the fastest repeats,
``paired`` the median of per-round ratios.
``mem_ratio`` is ours/baseline peak memory. MFU (CUDA) = FLOPs of one step counted by ``FlopCounterMode`` / median
step time / the GPU's dense bf16 peak (``PEAK_BF16_FLOPS``).

    python benchmarks/bench_model.py --device auto --out benchmarks/results/latest.json
    python benchmarks/bench_model.py --device cpu --threads 1   # steadier on a machine shared with other jobs
    python benchmarks/bench_model.py --quick                    # tiny preset, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

import groupvit
from _report import cpu_name, write_report
from groupvit.cli import argument_parser

# dense bf16 tensor-core peaks (FLOP/s); the first name contained in the device name wins
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
)
VOC_LABELS = (
    "aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike person pottedplant "
    "sheep sofa train tvmonitor"
).split()


@dataclass(frozen=True)
class Variant:
    """Settings of one contender: the baseline, or ours with some optimisations switched on."""

    name: str
    builtin: bool = False
    attn: str = "sdpa"  # ours' attention implementation ("sdpa" or "eager"); the built-in has eager only
    fused_adamw: bool = False
    compile: bool = False
    channels_last: bool = False
    cpu_bf16: bool = False  # bf16 autocast on CPU (every contender on CUDA uses it): a different dtype, never "best"


BASELINE = Variant("baseline", builtin=True)
ATTN = ("sdpa", "eager")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line and fill the device-dependent defaults."""
    parser = argument_parser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="tiny preset, few repeats: a smoke run")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--cases", default="train,infer,seg,memory", help="comma-separated subset")
    parser.add_argument("--preset", help="model preset (default: groupvit-s; --quick: groupvit-tiny)")
    parser.add_argument("--image_size", type=int, help="default: the preset's")
    parser.add_argument("--text_length", type=int, default=77, help="tokens per caption (CLIP context: 77)")
    parser.add_argument("--train_batch_sizes", help="comma-separated (default: CUDA 64,128,256; CPU 4)")
    parser.add_argument("--infer_batch_size", type=int, help="default: CUDA 256; CPU 8")
    parser.add_argument("--repeats", type=int, help="timed repeats per contender (default: CUDA 10; CPU 5)")
    parser.add_argument("--warmup", type=int, help="untimed calls per contender first (default: CUDA 3; CPU 1)")
    parser.add_argument("--steps", type=int, help="calls per timed repeat (default: CUDA 5; CPU 1)")
    parser.add_argument("--compile", default="auto", choices=["auto", "on", "off"], help="auto: on for CUDA only")
    parser.add_argument("--cpu_bf16", action="store_true", help="also time bf16 autocast contenders on CPU")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # CASE:VARIANT_JSON, one memory case in a fresh process
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    args.device = torch.device("cuda" if cuda else "cpu")
    args.preset = args.preset or ("groupvit-tiny" if args.quick else "groupvit-s")
    default_batches = "4" if args.quick or not cuda else "64,128,256"
    args.train_batch_sizes = [int(b) for b in (args.train_batch_sizes or default_batches).split(",")]
    args.infer_batch_size = args.infer_batch_size or (8 if args.quick or not cuda else 256)
    args.repeats = args.repeats or (3 if args.quick else 10 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda and not args.quick else 1)
    args.steps = args.steps or (5 if cuda and not args.quick else 1)
    args.compile = args.compile == "on" or (args.compile == "auto" and cuda)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    return args


# --------------------------------------------------------------------------------------------------------------------
# Models and inputs
# --------------------------------------------------------------------------------------------------------------------


def build_config(args: argparse.Namespace) -> groupvit.GroupViTConfig:
    """The preset with the multi-label loss off (the built-in has none), at `--image_size` if given."""
    vision = {"image_size": args.image_size} if args.image_size else {}
    config = groupvit.GroupViTConfig.from_preset(args.preset, vision_config=vision)
    args.image_size = config.vision_config.image_size
    return config


def build_model(args: argparse.Namespace, config: groupvit.GroupViTConfig, variant: Variant) -> Any:
    """Our model (SDPA) or the built-in one with our weights copied in (not in a memory child: it would count both)."""
    torch.manual_seed(args.seed)
    values = {k: v for k, v in config.to_dict().items() if k != "model_type"}
    if variant.builtin and args.child:
        return transformers.GroupViTModel(transformers.GroupViTConfig(**values)).to(args.device)
    model = groupvit.GroupViTModel(copy.deepcopy(config))
    if variant.attn != "sdpa":
        model.set_attn_implementation(variant.attn)
    if variant.builtin:
        builtin = transformers.GroupViTModel(transformers.GroupViTConfig(**values))
        missing, unexpected = builtin.load_state_dict(model.state_dict(), strict=False)
        if missing or unexpected:
            raise RuntimeError(f"weights do not line up: missing {missing}, unexpected {unexpected}")
        model = builtin
    model.to(args.device)
    if variant.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def make_batch(args: argparse.Namespace, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Random images `(batch, 3, size, size)` and full-length random captions `(batch, text_length)`."""
    generator = torch.Generator().manual_seed(seed)
    size = args.image_size
    pixel_values = torch.randn(batch_size, 3, size, size, generator=generator)
    # (batch, length) token ids ending in <|endoftext|> (49407), no padding
    input_ids = torch.randint(1, 49406, (batch_size, args.text_length), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 49406, 49407
    batch = {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    return {k: v.to(args.device) for k, v in batch.items()}


def autocast(args: argparse.Namespace, variant: Variant) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (every contender) and for CPU bf16 contenders; float32 otherwise."""
    if args.device.type == "cuda" or variant.cpu_bf16:
        return torch.autocast(args.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(args: argparse.Namespace) -> None:
    """Wait for queued CUDA work, so that the clock measures it."""
    if args.device.type == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------------------------------
# Cases: each returns a zero-argument callable doing one unit of work
# --------------------------------------------------------------------------------------------------------------------


def train_step(args: argparse.Namespace, config: Any, variant: Variant, batch_size: int) -> Callable[[], None]:
    """One optimisation step: forward with the loss, backward, AdamW (lr 1e-4, default decay), zero_grad."""
    model = build_model(args, config, variant).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if variant.fused_adamw else {}))
    forward = torch.compile(model) if variant.compile else model
    batch = make_batch(args, batch_size, args.seed)
    if variant.channels_last:
        batch["pixel_values"] = batch["pixel_values"].contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with autocast(args, variant):
            loss = forward(**batch, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def infer_step(args: argparse.Namespace, config: Any, variant: Variant, batch_size: int) -> Callable[[], None]:
    """Projected image embeddings of a batch (`get_image_features`) without gradients."""
    model = build_model(args, config, variant).eval()
    features = torch.compile(model.get_image_features) if variant.compile else model.get_image_features
    pixel_values = make_batch(args, batch_size, args.seed)["pixel_values"]
    if variant.channels_last:
        pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.no_grad(), autocast(args, variant):
            features(pixel_values=pixel_values)

    return step


def seg_step(args: argparse.Namespace, config: Any, variant: Variant) -> Callable[[], None]:
    """Segment one RGB image (`image_size` square, so no resize) into the 20 VOC labels, up to the label map."""
    from groupvit.segmentation import GroupViTSegmenter

    model = build_model(args, config, variant).eval()
    processor = groupvit.GroupViTProcessor.from_bundled(image_size=args.image_size)
    rng = np.random.default_rng(args.seed)
    image = PIL.Image.fromarray(rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8))
    labels = list(VOC_LABELS)
    if variant.builtin:
        prompts = [f"a photo of a {label}." for label in labels]

        def step() -> None:
            inputs = processor(images=image, text=prompts, padding=True, return_tensors="pt").to(args.device)
            with torch.inference_mode(), autocast(args, variant):
                logits = model(**inputs, output_segmentation=True).segmentation_logits
            logits[0].argmax(0).cpu()  # (height, width) label map

        return step
    options = {"mode": "whole", "short_side": args.image_size}
    if variant.name.endswith("pipeline"):
        pipe = transformers.pipeline(
            "zero-shot-image-segmentation", model=model, processor=processor, device=args.device
        )

        def step() -> None:
            with autocast(args, variant):
                pipe(image, candidate_labels=labels, **options)

        return step
    segmenter = GroupViTSegmenter(model, processor, **options)

    def step() -> None:
        with autocast(args, variant):
            segmenter.segment(image, labels)

    return step


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call (matmuls and convolutions, forward and backward) as `FlopCounterMode` counts them."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


# --------------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------------


def time_interleaved(args: argparse.Namespace, steps: dict[str, Callable[[], None]]) -> dict[str, dict[str, Any]]:
    """Warm every contender up, then time `args.repeats` rounds, rotating the order each round."""
    results: dict[str, dict[str, Any]] = {name: {"times": []} for name in steps}
    for name, step in steps.items():
        start = time.perf_counter()
        for _ in range(args.warmup):
            step()
        sync(args)
        results[name]["warmup_s"] = time.perf_counter() - start
    names = list(steps)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            sync(args)
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[name]()
            sync(args)
            results[name]["times"].append((time.perf_counter() - start) / args.steps)
    return results


def summarize(results: dict[str, dict[str, Any]], items: int, rate: bool) -> None:
    """Add median/min/max/IQR and speedups against `baseline` (in place).

    `speedup` compares medians, `speedup_min` the fastest repeats (interference on a shared machine only ever adds
    time, so the minimum is the steadiest estimate of the work itself), `paired` is the median of per-round ratios.
    """
    base = results["baseline"]["times"]
    for entry in results.values():
        times = entry["times"]
        q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
        entry["seconds"] = {
            "median": statistics.median(times),
            "min": min(times),
            "max": max(times),
            "q1": q1,
            "q3": q3,
        }
        if rate:
            # the slowest repeat is the lowest rate
            flipped = {"median": "median", "min": "max", "max": "min", "q1": "q3", "q3": "q1"}
            entry["per_s"] = {k: items / entry["seconds"][flipped[k]] for k in flipped}
        entry["speedup"] = statistics.median(base) / entry["seconds"]["median"]
        entry["speedup_min"] = min(base) / entry["seconds"]["min"]
        entry["paired"] = statistics.median(b / t for b, t in zip(base, times, strict=True))


def pick_best(results: dict[str, dict[str, Any]], variants: list[Variant]) -> str:
    """Ours' fastest contender (by median) under the baseline's dtype policy."""
    ours = [v.name for v in variants if not v.builtin and not v.cpu_bf16]
    return min(ours, key=lambda name: results[name]["seconds"]["median"])


def run_case(
    args: argparse.Namespace, variants: list[Variant], make: Callable, items: int, rate: bool, flops: bool = False
) -> dict[str, Any]:
    """Build every contender's step, time them interleaved, and summarise (with the FLOPs of one baseline call)."""
    steps = {variant.name: make(variant) for variant in variants}
    case: dict[str, Any] = {"flops_per_call": count_flops(steps["baseline"]) if flops else None}
    results = time_interleaved(args, steps)
    summarize(results, items, rate)
    for variant in variants:
        results[variant.name]["variant"] = asdict(variant)
    return {**case, "contenders": results, "best": pick_best(results, variants)}


# --------------------------------------------------------------------------------------------------------------------
# Memory: one case in a fresh process
# --------------------------------------------------------------------------------------------------------------------


def proc_status_mib(field: str) -> float:
    """`VmRSS`/`VmHWM` of this process in MiB (Linux), else `ru_maxrss`.

    `ru_maxrss` survives `execve`, so a child started from a large parent reports the parent's peak; `VmHWM` belongs
    to the child's own address space.
    """
    with contextlib.suppress(OSError, StopIteration):
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
        return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main(args: argparse.Namespace) -> int:
    case, variant_json = args.child.split(":", 1)
    variant = Variant(**json.loads(variant_json))
    config = build_config(args)
    rss_before = proc_status_mib("VmRSS")
    if case == "train":
        step = train_step(args, config, variant, args.train_batch_sizes[-1])
    elif case == "infer":
        step = infer_step(args, config, variant, args.infer_batch_size)
    else:
        step = seg_step(args, config, variant)
    if args.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        step()
    sync(args)
    report = {
        "rss_before_model_mib": rss_before,
        "peak_rss_mib": proc_status_mib("VmHWM"),
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.device.type == "cuda":
        report["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print("CHILD_RESULT " + json.dumps(report))
    return 0


def measure_memory(argv: list[str], case: str, variant: Variant) -> dict[str, Any]:
    """Run one case in a fresh interpreter and return its peak memory (MiB)."""
    command = [sys.executable, os.path.abspath(__file__), *argv, "--child", f"{case}:{json.dumps(asdict(variant))}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("CHILD_RESULT "):
            return json.loads(line.removeprefix("CHILD_RESULT "))
    return {"error": (done.stderr or done.stdout)[-2000:]}


def memory_report(
    args: argparse.Namespace, argv: list[str], report: dict[str, Any], variants: dict[str, list[Variant]]
) -> dict[str, Any]:
    """Baseline and ours' best (as timed; else ours' first variant) of each requested case, one process each.

    The CPU figure is the process peak RSS, which includes the interpreter and the imported libraries
    (`rss_before_model_mib`); `model_peak_rss_mib` subtracts that, and the ratio uses it.
    """
    best = {case["name"].split()[0]: case["best"] for case in report["cases"]}
    key = "cuda_peak_mib" if args.device.type == "cuda" else "model_peak_rss_mib"
    memory: dict[str, Any] = {}
    for kind in ("train", "infer", "seg"):
        if kind not in args.cases or (kind == "seg" and not any(c["name"].startswith("seg") for c in report["cases"])):
            continue  # not asked for, or segmentation did not import
        ours = next(v for v in variants[kind] if v.name == best.get(kind, variants[kind][1].name))
        entries = {}
        for variant in (BASELINE, ours):
            entry = measure_memory(argv, kind, variant)
            if "peak_rss_mib" in entry:
                entry["model_peak_rss_mib"] = entry["peak_rss_mib"] - entry["rss_before_model_mib"]
            entries[variant.name] = entry
        if all(e.get(key) for e in entries.values()):
            entries["mem_ratio"] = entries[ours.name][key] / entries["baseline"][key]
        memory[kind] = entries
        print(f"memory {kind}: done", flush=True)
    return memory


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model with its core and thread counts."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def peak_flops(name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a known GPU, else None (then no MFU)."""
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def print_table(report: dict[str, Any]) -> None:
    """The timing table (rates or latencies: median, min, max over repeats, speedups) and the memory table."""
    columns = f"{'median':>10}{'min':>10}{'max':>10}  {'unit':<10}{'speedup':>8}{'sp.min':>8}{'paired':>8}"
    print(f"\n{report['device']} | torch {report['torch']} | {report['preset']} @ {report['image_size']}px")
    print(f"{'case':<16}{'contender':<34}{columns}")
    for case in report["cases"]:
        for name, entry in case["contenders"].items():
            values = entry.get("per_s", entry["seconds"])
            label = name + (" *" if name == case["best"] else "")
            print(
                f"{case['name']:<16}{label:<34}{values['median']:>10.4g}{values['min']:>10.4g}{values['max']:>10.4g}  "
                f"{case['unit']:<10}{entry['speedup']:>8.2f}{entry['speedup_min']:>8.2f}{entry['paired']:>8.2f}"
            )
        if case.get("flops_per_call"):
            achieved = ", ".join(
                f"{n} {e['tflop_per_s']:.3g}" + (f" (MFU {e['mfu']:.1%})" if e["mfu"] else "")
                for n, e in case["contenders"].items()
            )
            print(f"{'':<16}{case['flops_per_call'] / 1e9:.1f} GFLOP/step; TFLOP/s: {achieved}")
    for kind, entries in report.get("memory", {}).items():
        for name, entry in entries.items():
            if name == "mem_ratio":
                continue
            if "error" in entry:
                print(f"memory {kind:<9}{name:<34}failed: {entry['error'].splitlines()[-1:]}")
                continue
            cuda = f", CUDA peak {entry['cuda_peak_mib']:.0f} MiB" if "cuda_peak_mib" in entry else ""
            print(
                f"memory {kind:<9}{name:<34}peak RSS {entry['peak_rss_mib']:.0f} MiB "
                f"(above imports {entry['model_peak_rss_mib']:.0f}){cuda}"
            )
        if "mem_ratio" in entries:
            print(f"memory {kind:<9}{'ours/baseline':<34}{entries['mem_ratio']:.2f}")
    print("* ours' best (lowest median). speedup = baseline/ours time from medians, sp.min from the fastest repeats,")
    print("  paired = median of per-round ratios. Rates: min/max are the slowest/fastest repeat.")


def contenders(args: argparse.Namespace) -> dict[str, list[Variant]]:
    """The baseline and ours' settings to try, per case."""
    train = [
        BASELINE,
        Variant("ours[sdpa+adamw]"),  # the baseline's optimizer: the model alone
        Variant("ours[sdpa+fused_adamw]", fused_adamw=True),
        Variant("ours[eager+fused_adamw]", attn="eager", fused_adamw=True),
    ]
    infer = [
        BASELINE,
        Variant("ours[sdpa]"),
        Variant("ours[eager]", attn="eager"),
        Variant("ours[sdpa+channels_last]", channels_last=True),
    ]
    if args.compile:
        train.append(Variant("ours[sdpa+fused_adamw+compile]", fused_adamw=True, compile=True))
        infer.append(Variant("ours[sdpa+compile]", compile=True))
    if args.cpu_bf16 and args.device.type == "cpu":
        bf16 = Variant("baseline[bf16]", builtin=True, cpu_bf16=True)
        train.append(bf16)
        train += [Variant(f"ours[{a}+fused_adamw+bf16]", attn=a, fused_adamw=True, cpu_bf16=True) for a in ATTN]
        infer.append(bf16)
        infer += [Variant(f"ours[{a}+bf16]", attn=a, cpu_bf16=True) for a in ATTN]
    return {"train": train, "infer": infer, "seg": [BASELINE, Variant("ours[segmenter]"), Variant("ours[pipeline]")]}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()
    if args.child:
        return child_main(args)
    config = build_config(args)
    cuda = args.device.type == "cuda"
    variants = contenders(args)
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(args.device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "preset": args.preset,
        "image_size": args.image_size,
        "text_length": args.text_length,
        "dtype": "bf16 autocast" if cuda else "float32",
        "repeats": args.repeats,
        "warmup": args.warmup,
        "steps_per_repeat": args.steps,
        "cases": [],
    }
    peak = peak_flops(report["device"]) if cuda else None
    started = time.perf_counter()
    jobs = []
    if "train" in args.cases:
        for b in args.train_batch_sizes:
            make = lambda v, b=b: train_step(args, config, v, b)  # noqa: E731
            jobs.append(("train", make, b, {"name": f"train bs{b}", "unit": "samples/s", "batch_size": b}))
    if "infer" in args.cases:
        make = lambda v, b=args.infer_batch_size: infer_step(args, config, v, b)  # noqa: E731
        jobs.append(("infer", make, args.infer_batch_size, {"name": f"infer bs{args.infer_batch_size}"}))
        jobs[-1][3].update(unit="images/s", batch_size=args.infer_batch_size)
    if "seg" in args.cases:
        try:
            import groupvit.segmentation.segmenter  # noqa: F401
        except ImportError as error:
            print(f"seg: skipped, groupvit.segmentation.segmenter does not import ({error})")
        else:
            make = lambda v: seg_step(args, config, v)  # noqa: E731
            jobs.append(("seg", make, 1, {"name": f"seg {len(VOC_LABELS)} labels", "unit": "s/image"}))
    for kind, make, items, info in jobs:
        try:
            case = {**info, **run_case(args, variants[kind], make, items, kind != "seg", flops=kind == "train")}
        except torch.cuda.OutOfMemoryError:
            report.setdefault("out_of_memory", []).append(info["name"])
            print(f"{info['name']}: out of memory, skipped", flush=True)
            continue
        finally:  # the contenders' models and optimizer states go with their closures
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
        if case["flops_per_call"]:
            for entry in case["contenders"].values():
                entry["tflop_per_s"] = case["flops_per_call"] / entry["seconds"]["median"] / 1e12
                entry["mfu"] = entry["tflop_per_s"] * 1e12 / peak if peak else None
        report["cases"].append(case)
        print(f"{info['name']}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    if "memory" in args.cases:
        report["memory"] = memory_report(args, argv, report, variants)
        print(f"memory: done ({time.perf_counter() - started:.0f} s)", flush=True)
    report["wall_s"] = time.perf_counter() - started
    print_table(report)
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
