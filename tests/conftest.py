"""Shared fixtures: a tiny GroupViT with every parameter randomised, and transformers' built-in twin."""

import os
from pathlib import Path

import pytest
import torch
import transformers

import groupvit

if "PYTEST_XDIST_WORKER" in os.environ:
    # one intra-op thread per xdist worker: with -n 2 on 2 cores, more threads only oversubscribe
    torch.set_num_threads(1)

TINY = "groupvit-tiny"


def tiny_config(**overrides) -> groupvit.GroupViTConfig:
    return groupvit.GroupViTConfig.from_preset(TINY, **overrides)


def builtin_config(config: groupvit.GroupViTConfig) -> transformers.GroupViTConfig:
    """The same architecture as transformers' own config class."""
    values = {k: v for k, v in config.to_dict().items() if k != "model_type"}
    return transformers.GroupViTConfig(**values)


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Overwrite every parameter (zero-initialised ones included) so that parity tests see non-trivial weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "logit_scale" in name:
                param.fill_(2.6592)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
    return model


@pytest.fixture(scope="session")
def builtin_checkpoint(tmp_path_factory) -> str:
    """A directory saved by transformers' built-in GroupViTModel with random weights (tiny config)."""
    model = randomize_(transformers.GroupViTModel(builtin_config(tiny_config())))
    path = tmp_path_factory.mktemp("builtin")
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A directory saved by our GroupViTModel (random weights, tiny config) with its processor."""
    model = randomize_(groupvit.GroupViTModel(tiny_config()), seed=1)
    path = tmp_path_factory.mktemp("ours")
    model.save_pretrained(path)
    groupvit.GroupViTProcessor.from_bundled(image_size=32).save_pretrained(path)
    return str(path)


@pytest.fixture()
def text_inputs() -> dict[str, torch.Tensor]:
    # "a photo of a cat" / "a photo of a dog ." padded with <|endoftext|> (49407)
    input_ids = torch.tensor(
        [[49406, 320, 1125, 539, 320, 2368, 49407, 49407], [49406, 320, 1125, 539, 320, 1929, 269, 49407]]
    )
    attention_mask = (torch.arange(8) < torch.tensor([[7], [8]])).long()
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.fixture()
def pixel_values() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


TINY_RUN = str(Path(__file__).resolve().parents[1] / "configs" / "tiny-synthetic.yaml")


def tiny_run_args(output_dir, *extra: str) -> list[str]:
    """`groupvit pretrain` arguments of a quiet tiny synthetic run into `output_dir` (no trackers, no evaluation)."""
    return ["--config", TINY_RUN, "--output_dir", str(output_dir), "--report_to", "none", "--eval_steps", "0", *extra]
