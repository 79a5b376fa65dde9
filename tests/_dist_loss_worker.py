"""Helper for ``tests/test_loss.py``: one rank of a multi-process (gloo, CPU) GroupViT loss computation.

Usage (one process per rank)::

    python tests/_dist_loss_worker.py RANK WORLD_SIZE INIT_FILE OUT_DIR

Each rank takes its slice of a fixed random problem (see :func:`make_problem`), computes the total GroupViT loss for
several scenarios, backprops and saves losses and gradients to ``OUT_DIR/rank{RANK}.pt``. The test module also imports
:func:`make_problem` / :func:`run_scenario` to compute the single-process reference.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

import groupvit.modeling_groupvit as modeling
import groupvit.training.losses as loss_mod

FULL_BATCH = 8  # W * B
NUM_PROMPTS = 3  # K
IN_DIM = 6
EMBED_DIM = 5
NUM_NOUNS = 4  # few distinct nouns -> many cross-image (and cross-rank) semantic matches

# name -> (multi_label_target, differentiable gather)
SCENARIOS: dict[str, tuple[str, bool]] = {
    "instance": ("instance", True),
    "semantic": ("semantic", True),
    "instance_nograd_gather": ("instance", False),
}


def make_problem(seed: int = 0) -> dict[str, torch.Tensor]:
    """Full-batch fixed random problem: inputs, a replicated linear 'encoder' and the two raw logit scales."""
    g = torch.Generator().manual_seed(seed)
    noun_ids = torch.randint(0, NUM_NOUNS, (FULL_BATCH, NUM_PROMPTS), generator=g)
    noun_ids[1, 2] = -1  # padding prompts
    noun_ids[6, 1:] = -1
    return {
        "x_image": torch.randn(FULL_BATCH, IN_DIM, generator=g),  # (N, D_in)
        "x_text": torch.randn(FULL_BATCH, IN_DIM, generator=g),  # (N, D_in)
        "x_prompt": torch.randn(FULL_BATCH, NUM_PROMPTS, IN_DIM, generator=g),  # (N, K, D_in)
        "proj": torch.randn(IN_DIM, EMBED_DIM, generator=g),  # (D_in, C), replicated parameter
        "logit_scale": torch.tensor(math.log(10.0)),
        "multi_label_logit_scale": torch.tensor(math.log(1 / 0.07)),
        "noun_ids": noun_ids,  # (N, K)
    }


LEAVES = ("x_image", "x_text", "x_prompt", "proj", "logit_scale", "multi_label_logit_scale")


def run_scenario(problem: dict[str, torch.Tensor], rows: slice, target: str) -> dict[str, torch.Tensor]:
    """Computes the total loss on ``rows`` of the problem, backprops and returns losses and leaf gradients."""
    leaves = {}
    for name in LEAVES:
        t = problem[name]
        t = t[rows] if name.startswith("x_") else t
        leaves[name] = t.detach().clone().requires_grad_(True)
    proj = leaves["proj"]
    image = leaves["x_image"] @ proj  # (B, C)
    # the model's contrastive loss (modeling_groupvit.contrastive_loss) and the training side's multi-label term
    itc_loss = loss_mod.image_text_contrastive_loss(image, leaves["x_text"] @ proj, leaves["logit_scale"])
    multi_label_loss = loss_mod.multi_label_contrastive_loss(
        image,
        leaves["x_prompt"] @ proj,  # (B, K, C)
        leaves["multi_label_logit_scale"],
        target=target,
        noun_ids=problem["noun_ids"][rows],
    )
    loss = itc_loss + 0.7 * multi_label_loss
    loss.backward()
    result = {f"grad_{name}": leaf.grad.detach().clone() for name, leaf in leaves.items()}
    result.update(loss=loss.detach(), itc_loss=itc_loss.detach(), multi_label_loss=multi_label_loss.detach())
    return result


def _plain_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """A NON-differentiable all-gather (gradients only flow into the local rows)."""
    gathered = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, tensor.contiguous())
    gathered[torch.distributed.get_rank()] = tensor  # keep the local autograd path, as a naive implementation would
    return torch.cat(gathered, dim=0)


def main(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        problem = make_problem()
        local = FULL_BATCH // world_size
        rows = slice(rank * local, (rank + 1) * local)
        results = {}
        # both losses gather through this one function (torch.distributed.nn.functional.all_gather)
        differentiable_gather = modeling.all_gather_with_grad
        for name, (target, differentiable) in SCENARIOS.items():
            modeling.all_gather_with_grad = differentiable_gather if differentiable else _plain_all_gather
            results[name] = run_scenario(problem, rows, target)
        modeling.all_gather_with_grad = differentiable_gather
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
