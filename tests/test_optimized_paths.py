"""The optimised execution paths compute what the plain ones do: torch.compile, foreach/fused AdamW, bf16 autocast.

Also a smoke run of the two benchmark scripts in benchmarks/.

SDPA against eager attention is tested in test_modeling.py. Compiling the whole tiny model with inductor takes about a
minute on two CPU cores, so inductor compiles one grouping block (the part with GroupViT's own ops) and the full
training forward/backward goes through `aot_eager` (Dynamo capture and AOTAutograd, without code generation).
"""

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import groupvit
from conftest import randomize_, tiny_config
from groupvit.training.config import LossArguments
from groupvit.training.losses import GroupViTPretrainingLoss

# training mode without randomness: no Gumbel noise, no stochastic depth (the straight-through hard assignment stays)
DETERMINISTIC = {"vision_config": {"gumbel": False, "drop_path_rate": 0.0}}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def training_loss(model, batch, forward=None):
    """The run's objective (ITC + multi-label on the batch's prompts), the model called through `forward`."""
    loss_fn = GroupViTPretrainingLoss.from_arguments(LossArguments(), num_prompt_nouns=2, pad_token_id=49407)
    outputs = (model if forward is None else forward)(**loss_fn.model_inputs(batch))
    return outputs, loss_fn(model, outputs, batch)


def tiny_model(**overrides) -> groupvit.GroupViTModel:
    return randomize_(groupvit.GroupViTModel(tiny_config(**DETERMINISTIC, **overrides)), seed=0)


@pytest.fixture()
def batch(text_inputs, pixel_values) -> dict[str, torch.Tensor]:
    """Two captions, two images, and K=2 noun prompts per caption for the multi-label loss."""
    # (batch=2, K=2, length=5): "a photo of a cat" style prompts ending in <|endoftext|>
    prompts = torch.tensor([[[49406, 320, 1125, 2368, 49407]] * 2, [[49406, 320, 1125, 1929, 49407]] * 2])
    return {**text_inputs, "pixel_values": pixel_values[:2], "prompt_input_ids": prompts}


def test_inductor_compiled_grouping_block_matches_eager():
    block = tiny_model().eval().vision_model.encoder.stages[0].downsample
    generator = torch.Generator().manual_seed(0)
    # (batch, 64 patches, hidden) image tokens and (batch, 8 group tokens, hidden)
    image_tokens, group_tokens = (
        torch.randn(2, 64, 32, generator=generator),
        torch.randn(2, 8, 32, generator=generator),
    )
    compiled = torch.compile(block, backend="inductor", fullgraph=True)
    with torch.no_grad():
        expected = block(image_tokens, group_tokens)
        actual = compiled(image_tokens, group_tokens)
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_compiled_training_step_matches_eager_without_graph_breaks(batch):
    eager = tiny_model().train()
    compiled_model = copy.deepcopy(eager)
    # fullgraph=True: a graph break anywhere in the forward with the loss raises
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)
    expected_outputs, expected = training_loss(eager, batch)
    actual_outputs, actual = training_loss(compiled_model, batch, forward=compiled)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        actual_outputs.logits_per_image, expected_outputs.logits_per_image, rtol=1e-5, atol=1e-5
    )
    expected.loss.backward()
    actual.loss.backward()
    for (name, want), got in zip(eager.named_parameters(), compiled_model.parameters(), strict=True):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("path", ["image_features", "segmentation"])
def test_inference_paths_have_no_graph_breaks(path, batch):
    model = tiny_model().eval()

    def image_features(pixel_values, input_ids):
        return model.get_image_features(pixel_values=pixel_values).pooler_output

    def segmentation(pixel_values, input_ids):
        return model(input_ids=input_ids, pixel_values=pixel_values, output_segmentation=True).segmentation_logits

    function = image_features if path == "image_features" else segmentation
    explanation = torch._dynamo.explain(function)(batch["pixel_values"], batch["input_ids"])
    assert explanation.graph_break_count == 0, [reason.reason for reason in explanation.break_reasons]


@pytest.mark.parametrize("implementation", ["foreach", "fused"])
def test_adamw_implementations_take_the_same_steps(implementation, batch):
    reference = tiny_model().train()
    candidate = copy.deepcopy(reference)
    plain = torch.optim.AdamW(reference.parameters(), lr=1e-3, weight_decay=0.05, foreach=False)
    other = torch.optim.AdamW(candidate.parameters(), lr=1e-3, weight_decay=0.05, **{implementation: True})
    for _ in range(2):  # the second step also reads the moments of the first
        training_loss(reference, batch)[1].loss.backward()
        # the same gradients for both: parameters whose gradient is float noise (the text key bias, whose shift the
        # softmax ignores) would otherwise amplify the first step's rounding through Adam's normalisation
        for want, got in zip(reference.parameters(), candidate.parameters(), strict=True):
            got.grad = None if want.grad is None else want.grad.clone()
        plain.step()
        other.step()
        plain.zero_grad()
        other.zero_grad()
    for (name, want), got in zip(reference.named_parameters(), candidate.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_bf16_autocast_loss_is_close_to_float32(batch):
    # Tolerance: 2% relative on each loss term. bf16 keeps 8 mantissa bits (relative step 2**-8 = 0.4%); through both
    # towers and the contrastive softmaxes the loss moves by 0.1-0.8% for these weights (seeds 0-3), up to 2.4% with
    # the default init. Eval mode: in training mode the projection heads' BatchNorm normalises over a batch of two,
    # which turns bf16 rounding into sign flips (5-50% apart) -- a property of tiny batches, not of autocast.
    model = tiny_model().eval()
    _, expected = training_loss(model, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, actual = training_loss(model, batch)
    assert actual.loss.dtype == torch.float32
    torch.testing.assert_close(actual.loss, expected.loss, rtol=2e-2, atol=0.0)
    for part in ("itc", "multi_label"):
        # CPU autocast leaves log_softmax in bf16, so the multi-label term comes back in bf16 (CUDA autocast: float32)
        torch.testing.assert_close(actual.terms[part].float(), expected.terms[part], rtol=2e-2, atol=0.0)
    actual.loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


_BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_script(name: str):
    path = _BENCHMARKS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_benchmark_scripts_run(tmp_path, monkeypatch):
    """Smoke runs of benchmarks/bench_model.py and bench_data.py (tiny preset, few samples) that check their JSON."""
    monkeypatch.syspath_prepend(str(_BENCHMARKS))  # where the scripts find `_report`, as when run as scripts
    out = tmp_path / "model.json"
    argv = ["--quick", "--device", "cpu", "--cases", "train,seg", "--repeats", "2", "--warmup", "0", "--out", str(out)]
    assert _load_script("bench_model").main(argv) == 0
    report = json.loads(out.read_text())
    train = report["cases"][0]
    assert train["flops_per_call"] > 0 and train["best"].startswith("ours[")
    assert {"baseline", "ours[sdpa+adamw]"} <= set(train["contenders"])
    assert all(entry["per_s"]["median"] > 0 for entry in train["contenders"].values())

    out = tmp_path / "data.json"
    argv = ["--num_samples", "16", "--shards", "2", "--batch_size", "4", "--workers", "1", "--epochs", "1"]
    threads = torch.get_num_threads()
    try:
        assert _load_script("bench_data").main([*argv, "--out", str(out)]) == 0
    finally:  # bench_data runs with one torch thread, like a DataLoader worker
        torch.set_num_threads(threads)
    assert json.loads(out.read_text())["per_worker_samples_per_s"] > 0
