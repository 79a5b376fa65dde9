"""Training losses for GroupViT: image-text contrastive (ITC) and multi-label contrastive losses.

This module follows ``models/multi_label_contrastive.py`` of the original NVlabs/GroupViT code base:

* **ITC loss** -- a symmetric InfoNCE loss between L2-normalised image and text embeddings. In distributed training,
  each rank compares its *local* rows against the embeddings of the other modality gathered from *all* ranks with a
  differentiable all-gather, i.e. logits have shape ``(B, W * B)`` and the target of local row ``i`` is
  ``B * rank + i``.
* **Multi-label contrastive loss** -- each caption additionally yields ``K`` prompted noun texts
  (e.g. ``"a photo of a dog."``). Image -> text logits have shape ``(B, W * B * K)`` with a soft target of ``1 / K``
  on the image's own ``K`` prompts; text -> image logits have shape ``(B * K, W * B)`` with a one-hot target on the
  prompt's own image. Both directions use :func:`soft_target_cross_entropy`.

Gradient convention (distributed)
---------------------------------
Let ``W`` be the world size, ``B`` the per-rank batch size, and ``L`` the loss of a single process that holds the
full concatenated batch of ``W * B`` samples (each loss term is a *mean* over its rows). Every rank ``r`` computes
``L_r`` -- the same loss restricted to its local rows, still a mean over those rows, against the gathered columns.
Because all ranks hold the same number of rows, ``mean_r(L_r) == L`` exactly.

:func:`all_gather_with_grad` backpropagates by **summing** (``all_reduce(SUM)``) the gradient w.r.t. the gathered
tensor over ranks and returning this rank's slice. Hence the gradient that arrives at rank ``r``'s local embeddings
is ``sum_r' dL_r'/dx_r = W * dL/dx_r``: **the per-rank embedding gradient is ``W`` times the 1-process gradient of
the mean loss**. This is exactly what is needed with ``DistributedDataParallel`` (which *averages* parameter
gradients over ranks): the gradient of any encoder parameter ``theta`` after DDP averaging is
``(1 / W) * sum_r (W * dL/dx_r) * dx_r/dtheta = dL/dtheta`` -- identical to single-process training on the full
batch. Replicated parameters that enter the loss directly (the logit scales) receive ``dL_r/dscale`` on each rank,
and DDP's average gives ``dL/dscale`` as well. (This is the same convention as the ``diffdist`` all-gather used by
the original code, and as ``torch.distributed.nn.functional.all_gather``.) If you do *not* average gradients across
ranks (e.g. manual gradient summation), divide the loss by ``W`` instead.

Note that a plain, non-differentiable :func:`torch.distributed.all_gather` would drop the ``r' != r`` terms of the
sum above, so the gradient would no longer match single-process training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AllGatherWithGrad",
    "GroupViTLoss",
    "GroupViTLossOutput",
    "all_gather_with_grad",
    "get_rank_and_world_size",
    "groupvit_loss",
    "image_text_contrastive_loss",
    "multi_label_contrastive_loss",
    "soft_target_cross_entropy",
]

MultiLabelTarget = Literal["instance", "semantic"]

DEFAULT_MAX_LOGIT_SCALE = 100.0


# --------------------------------------------------------------------------------------------------------------------
# Distributed helpers
# --------------------------------------------------------------------------------------------------------------------
def get_rank_and_world_size() -> tuple[int, int]:
    """Returns ``(rank, world_size)`` of the default process group, or ``(0, 1)`` when not distributed.

    Returns:
        Tuple ``(rank, world_size)``.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class AllGatherWithGrad(torch.autograd.Function):
    """Differentiable all-gather along dim 0 (requires the same shape on every rank).

    Forward: ``all_gather`` into a list and concatenate -> ``(W * B, ...)``.
    Backward: ``all_reduce(SUM)`` of the incoming gradient (so each rank receives the gradient of *every* rank's loss
    w.r.t. its own rows), then return this rank's slice. See the module docstring for the resulting convention.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world_size = dist.get_world_size()
        ctx.rank = dist.get_rank()
        ctx.batch_size = tensor.shape[0]
        tensor = tensor.contiguous()
        gathered = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(gathered, tensor)
        return torch.cat(gathered, dim=0)  # (world_size * batch, ...)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous().clone()  # never modify autograd's buffer in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.batch_size
        return grad[start : start + ctx.batch_size]  # (batch, ...)


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiably all-gathers ``tensor`` along dim 0 from every rank.

    Every rank must pass a tensor of the same shape. The result is ordered by rank, so rows
    ``[rank * B, (rank + 1) * B)`` are this rank's own input. Gradients follow the convention documented in the module
    docstring: the gradient w.r.t. the local input is the *sum over ranks* of the gradients w.r.t. its gathered copy
    (``W`` times the 1-process gradient of the mean loss; DDP's gradient averaging then restores the exact 1-process
    parameter gradient).

    Args:
        tensor: Local tensor of shape ``(B, ...)``.

    Returns:
        ``(W * B, ...)`` tensor, or ``tensor`` itself when ``torch.distributed`` is not initialised or ``W == 1``.
    """
    _, world_size = get_rank_and_world_size()
    if world_size == 1:
        return tensor
    return AllGatherWithGrad.apply(tensor)


def _all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Non-differentiable all-gather along dim 0 (for labels / ids). Identity when not distributed."""
    _, world_size = get_rank_and_world_size()
    if world_size == 1:
        return tensor
    tensor = tensor.contiguous()
    gathered = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(gathered, tensor)
    return torch.cat(gathered, dim=0)


# --------------------------------------------------------------------------------------------------------------------
# Loss primitives
# --------------------------------------------------------------------------------------------------------------------
def _scale(logit_scale: torch.Tensor | float, max_logit_scale: float | None, like: torch.Tensor) -> torch.Tensor:
    """``min(exp(logit_scale), max_logit_scale)`` as a tensor on ``like``'s device/dtype (gradient kept)."""
    if not torch.is_tensor(logit_scale):
        logit_scale = torch.tensor(float(logit_scale))
    scale = logit_scale.to(device=like.device, dtype=like.dtype).exp()
    if max_logit_scale is not None:
        scale = torch.clamp(scale, max=max_logit_scale)
    return scale


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with soft (probability) targets, as ``timm``'s ``SoftTargetCrossEntropy``.

    Args:
        logits: ``(N, M)`` unnormalised scores.
        target: ``(N, M)`` target distribution per row (rows normally sum to 1).

    Returns:
        Scalar ``mean_n sum_m -target[n, m] * log_softmax(logits)[n, m]``.
    """
    # at least float32: under CPU bf16 autocast log_softmax would otherwise stay in bf16
    dtype = torch.promote_types(logits.dtype, torch.float32)
    loss = torch.sum(-target.to(dtype) * F.log_softmax(logits.to(dtype), dim=-1), dim=-1)  # (N,)
    return loss.mean()


def image_text_contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    gather: bool = True,
    max_logit_scale: float | None = DEFAULT_MAX_LOGIT_SCALE,
) -> torch.Tensor:
    """Symmetric image-text InfoNCE loss with cross-rank negatives.

    Embeddings are L2-normalised inside (passing already normalised embeddings is fine). With ``gather=True`` and an
    initialised process group of size ``W``, the other modality is gathered from all ranks with
    :func:`all_gather_with_grad`; each rank computes the loss over its local rows (see module docstring for the
    gradient convention).

    Args:
        image_embeds: ``(B, C)`` image embeddings of this rank.
        text_embeds: ``(B, C)`` text embeddings of this rank (row ``i`` is the caption of image ``i``).
        logit_scale: Raw (log-space) temperature parameter; the scale is ``min(exp(logit_scale), max_logit_scale)``.
        gather: Gather negatives across ranks (ignored when not distributed).
        max_logit_scale: Upper clamp of ``exp(logit_scale)``; ``None`` disables clamping.

    Returns:
        Scalar ``0.5 * (CE(s * img @ txt_all^T) + CE(s * txt @ img_all^T))``.
    """
    image_embeds = F.normalize(image_embeds, dim=-1)  # (B, C)
    text_embeds = F.normalize(text_embeds, dim=-1)  # (B, C)
    rank, world_size = get_rank_and_world_size() if gather else (0, 1)
    if world_size > 1:
        all_image = all_gather_with_grad(image_embeds)  # (W * B, C)
        all_text = all_gather_with_grad(text_embeds)  # (W * B, C)
    else:
        all_image, all_text = image_embeds, text_embeds

    scale = _scale(logit_scale, max_logit_scale, image_embeds)
    logits_per_image = scale * image_embeds @ all_text.t()  # (B, W * B)
    logits_per_text = scale * text_embeds @ all_image.t()  # (B, W * B)

    batch_size = image_embeds.shape[0]
    labels = torch.arange(batch_size, device=image_embeds.device) + batch_size * rank  # (B,)
    return 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))


def _multi_label_targets(
    batch_size: int,
    num_prompts: int,
    rank: int,
    world_size: int,
    target: MultiLabelTarget,
    noun_ids: torch.Tensor | None,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Builds the soft targets of :func:`multi_label_contrastive_loss`.

    Returns:
        ``(target_per_image, target_per_text)`` of shapes ``(B, W * B * K)`` and ``(B * K, W * B)``; rows sum to 1.
    """
    # Global index of each local image and owner image of each gathered prompt column.
    local_images = torch.arange(batch_size, device=device) + batch_size * rank  # (B,)
    all_images = torch.arange(world_size * batch_size, device=device)  # (W * B,)
    # own[i, j] = True iff global image j is local image i.
    own = local_images[:, None] == all_images[None, :]  # (B, W * B)

    if target == "instance":
        positive = own[:, :, None].expand(-1, -1, num_prompts)  # (B, W * B, K)
        positive_text = own  # (B, W * B): prompt (i, k) -> image j
        positive_text = positive_text[:, None, :].expand(-1, num_prompts, -1)  # (B, K, W * B)
    elif target == "semantic":
        if noun_ids is None:
            raise ValueError('multi_label_target="semantic" requires `noun_ids` of shape (batch, num_prompts).')
        if noun_ids.shape != (batch_size, num_prompts):
            raise ValueError(f"`noun_ids` must have shape {(batch_size, num_prompts)}, got {tuple(noun_ids.shape)}.")
        noun_ids = noun_ids.to(device=device, dtype=torch.long)  # (B, K)
        all_noun_ids = _all_gather_no_grad(noun_ids) if world_size > 1 else noun_ids  # (W * B, K)
        valid_local = noun_ids >= 0  # (B, K)
        valid_all = all_noun_ids >= 0  # (W * B, K)
        # Image -> prompt: prompt (j, l) positive for image i if it is one of i's own prompts, or its (valid) noun
        # equals any (valid) noun of image i.
        match = all_noun_ids[None, :, :, None] == noun_ids[:, None, None, :]  # (B, W * B, K, K')
        match = match & valid_local[:, None, None, :]
        positive = own[:, :, None] | (match.any(dim=-1) & valid_all[None])  # (B, W * B, K)
        # Prompt -> image: local prompt (i, k) positive for global image j if j == i or its noun is among j's nouns.
        match_text = noun_ids[:, :, None, None] == all_noun_ids[None, None, :, :]  # (B, K, W * B, K')
        match_text = match_text & valid_all[None, None]
        positive_text = own[:, None, :] | (match_text.any(dim=-1) & valid_local[:, :, None])  # (B, K, W * B)
    else:
        raise ValueError(f'`target` must be "instance" or "semantic", got {target!r}.')

    target_per_image = positive.reshape(batch_size, -1).to(dtype)  # (B, W * B * K)
    target_per_image = target_per_image / target_per_image.sum(dim=-1, keepdim=True)
    target_per_text = positive_text.reshape(batch_size * num_prompts, -1).to(dtype)  # (B * K, W * B)
    target_per_text = target_per_text / target_per_text.sum(dim=-1, keepdim=True)
    return target_per_image, target_per_text


def multi_label_contrastive_loss(
    image_embeds: torch.Tensor,
    prompt_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    gather: bool = True,
    target: MultiLabelTarget = "instance",
    noun_ids: torch.Tensor | None = None,
    max_logit_scale: float | None = DEFAULT_MAX_LOGIT_SCALE,
) -> torch.Tensor:
    """Multi-label image-text contrastive loss of GroupViT (``K`` prompted noun texts per caption).

    Embeddings are L2-normalised inside. Image -> text logits are ``(B, W * B * K)`` (columns ordered
    ``(rank, image, prompt)``), text -> image logits are ``(B * K, W * B)``; the loss is
    ``0.5 * (SoftTargetCE_img + SoftTargetCE_txt)``.

    Targets:
        * ``"instance"`` (default, as in the paper / original code): image ``i`` has target ``1 / K`` on each of its
          own ``K`` prompts and 0 elsewhere -- the same noun in *another* image's prompts is a negative. Prompt
          ``(i, k)`` has a one-hot target on image ``i``. Padding prompts (the original pads captions with fewer
          than ``K`` nouns with copies of the raw caption) are treated like any other own prompt.
        * ``"semantic"`` (non-default alternative): requires ``noun_ids`` ``(B, K)``. Prompt ``(j, l)`` is positive
          for image ``i`` if it is one of ``i``'s own prompts or ``noun_ids[j, l]`` equals any of image ``i``'s noun
          ids; the text -> image direction is the transpose of that relation. Targets are multi-hot, normalised to
          sum 1 per row. A noun id of ``-1`` (padding prompt) is only positive for its own image. Useful when there
          are few distinct nouns, where the instance target creates many false negatives.

    Group pooling (non-default, ``GroupViTConfig.multi_label_group_pooling="max"``): with ``image_embeds`` of shape
    ``(B, G, C)`` (the projected segment tokens), the image-prompt similarity is the maximum over the image's groups,
    so every noun has to be matched by one group rather than by the mean of all of them.

    Args:
        image_embeds: ``(B, C)`` (or ``(B, 1, C)``) image embeddings of this rank, or ``(B, G, C)`` group embeddings.
        prompt_embeds: ``(B, K, C)`` prompted noun text embeddings of this rank.
        logit_scale: Raw (log-space) multi-label temperature; scale is ``min(exp(logit_scale), max_logit_scale)``.
        gather: Gather the other modality across ranks (ignored when not distributed).
        target: ``"instance"`` or ``"semantic"``.
        noun_ids: ``(B, K)`` integer noun ids (``-1`` for padding); only used with ``target="semantic"``.
        max_logit_scale: Upper clamp of ``exp(logit_scale)``; ``None`` disables clamping.

    Returns:
        Scalar loss.
    """
    if image_embeds.dim() == 3 and image_embeds.shape[1] == 1:
        image_embeds = image_embeds[:, 0]
    if image_embeds.dim() not in (2, 3):
        raise ValueError(f"`image_embeds` must be (B, C) or (B, G, C), got {tuple(image_embeds.shape)}.")
    if prompt_embeds.dim() != 3:
        raise ValueError(f"`prompt_embeds` must be (B, K, C), got {tuple(prompt_embeds.shape)}.")
    batch_size, num_prompts, _ = prompt_embeds.shape
    if image_embeds.shape[0] != batch_size:
        raise ValueError("`image_embeds` and `prompt_embeds` must have the same batch size.")

    image_embeds = F.normalize(image_embeds, dim=-1)  # (B, C) or (B, G, C)
    text_embeds = F.normalize(prompt_embeds, dim=-1).reshape(batch_size * num_prompts, -1)  # (B * K, C)
    rank, world_size = get_rank_and_world_size() if gather else (0, 1)
    if world_size > 1:
        all_image = all_gather_with_grad(image_embeds)  # (W * B, C) or (W * B, G, C)
        all_text = all_gather_with_grad(text_embeds)  # (W * B * K, C)
    else:
        all_image, all_text = image_embeds, text_embeds

    scale = _scale(logit_scale, max_logit_scale, image_embeds)
    if image_embeds.dim() == 2:
        logits_per_image = scale * image_embeds @ all_text.t()  # (B, W * B * K)
        logits_per_text = scale * text_embeds @ all_image.t()  # (B * K, W * B)
    else:
        # group embeddings: an image matches a prompt as well as its best-matching group does
        logits_per_image = scale * torch.einsum("bgc,nc->bgn", image_embeds, all_text).amax(dim=1)  # (B, W*B*K)
        logits_per_text = scale * torch.einsum("nc,mgc->nmg", text_embeds, all_image).amax(dim=-1)  # (B*K, W*B)

    target_per_image, target_per_text = _multi_label_targets(
        batch_size, num_prompts, rank, world_size, target, noun_ids, image_embeds.device, logits_per_image.dtype
    )
    loss_image = soft_target_cross_entropy(logits_per_image, target_per_image)
    loss_text = soft_target_cross_entropy(logits_per_text, target_per_text)
    return 0.5 * (loss_image + loss_text)


# --------------------------------------------------------------------------------------------------------------------
# Total loss
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class GroupViTLossOutput:
    """Output of :func:`groupvit_loss` / :class:`GroupViTLoss`.

    Attributes:
        loss: Total loss ``itc_loss + multi_label_weight * multi_label_loss``.
        itc_loss: Image-text contrastive loss.
        multi_label_loss: Unweighted multi-label contrastive loss (``None`` when no prompts were given).
    """

    loss: torch.Tensor
    itc_loss: torch.Tensor
    multi_label_loss: torch.Tensor | None = None

    def to_dict(self) -> dict[str, torch.Tensor]:
        """Returns the non-``None`` fields as a dict."""
        return {k: v for k, v in vars(self).items() if v is not None}


def group_diversity_loss(
    groupings: Sequence[torch.Tensor], marginal: str = "image", usage: str = "entropy"
) -> torch.Tensor:
    """Anti-collapse regulariser, not in the paper: the (normalised) negative mutual information of tokens and groups.

    At small scale the image-level contrastive losses are satisfied by a single group that averages the whole image
    (global average pooling), so nothing keeps the grouping from collapsing: the assignment logits stay near zero,
    training assigns tokens at random through the Gumbel noise, and at inference one group takes every token. This
    term asks each image to use its groups evenly (high entropy of the mean assignment) and each token to pick one
    group confidently (low entropy of its own assignment), as in IIC (Ji et al., 2019):
    `1 - H(mean_n p_n) / log G + mean_n H(p_n) / log G`, in [0, 2] (0: balanced and confident).

    With ``marginal="batch"`` the usage is the mean over the whole batch instead of per image (IIC's marginal over
    the data), so the groups must be used evenly overall but one image may use few of them.

    With ``usage="kl"`` the usage term is ``KL(uniform || usage) / log G = (-mean_g log usage_g - log G) / log G``
    instead of ``1 - H(usage) / log G``: both are 0 for even usage, but the entropy's gradient vanishes once the
    assignment has saturated onto one group, while ``-log usage_g`` keeps pulling unused groups back (unbounded).

    Args:
        groupings: Per stage, the soft assignment ``(B, G, N)`` (each column sums to 1 over the ``G`` groups).
        marginal: ``"image"`` or ``"batch"``.
        usage: ``"entropy"`` or ``"kl"``.

    Returns:
        Scalar loss, averaged over images and stages.
    """
    if not groupings:
        raise ValueError("group_diversity_loss needs at least one grouping stage")
    if marginal not in ("image", "batch"):
        raise ValueError(f'`marginal` must be "image" or "batch", got {marginal!r}')
    if usage not in ("entropy", "kl"):
        raise ValueError(f'`usage` must be "entropy" or "kl", got {usage!r}')
    losses = []
    for soft in groupings:
        soft = soft.float()
        log_groups = math.log(soft.shape[1])
        # (B, G) share of each image's tokens per group, or (1, G) over the batch
        shares = soft.mean(dim=-1) if marginal == "image" else soft.mean(dim=(0, -1))[None]
        log_shares = shares.clamp_min(1e-12).log()
        if usage == "entropy":
            usage_term = 1.0 + (shares * log_shares).sum(dim=-1) / log_groups  # (B,) or (1,)
        else:
            usage_term = (-log_shares.mean(dim=-1) - log_groups) / log_groups
        token_entropy = -(soft * soft.clamp_min(1e-12).log()).sum(dim=1).mean(dim=-1)  # (B,)
        losses.append(usage_term + token_entropy / log_groups)
    return torch.stack(losses).mean()


def groupvit_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    prompt_embeds: torch.Tensor | None = None,
    multi_label_logit_scale: torch.Tensor | float | None = None,
    multi_label_weight: float = 1.0,
    multi_label_image_embeds: torch.Tensor | None = None,
    multi_label_target: MultiLabelTarget = "instance",
    noun_ids: torch.Tensor | None = None,
    gather: bool = True,
    max_logit_scale: float | None = DEFAULT_MAX_LOGIT_SCALE,
) -> GroupViTLossOutput:
    """Total GroupViT training loss ``L_ITC + w * L_multi``.

    Args:
        image_embeds: ``(B, C)`` image embeddings (normalised inside).
        text_embeds: ``(B, C)`` caption embeddings (normalised inside).
        logit_scale: Raw ITC log-scale.
        prompt_embeds: ``(B, K, C)`` prompted noun embeddings; ``None`` (or ``K == 0``) disables the multi-label term.
        multi_label_logit_scale: Raw multi-label log-scale; required when the multi-label term is on.
        multi_label_weight: Weight ``w`` of the multi-label term.
        multi_label_image_embeds: Optional separate ``(B, C)`` image (or ``(B, G, C)`` group) embeddings for the
            multi-label term (defaults to ``image_embeds``).
        multi_label_target: ``"instance"`` (paper) or ``"semantic"``; see :func:`multi_label_contrastive_loss`.
        noun_ids: ``(B, K)`` noun ids for ``"semantic"`` targets.
        gather: Gather across ranks when distributed.
        max_logit_scale: Clamp for both ``exp(logit_scale)`` values.

    Returns:
        :class:`GroupViTLossOutput`.
    """
    itc = image_text_contrastive_loss(
        image_embeds, text_embeds, logit_scale, gather=gather, max_logit_scale=max_logit_scale
    )
    if prompt_embeds is None or prompt_embeds.shape[1] == 0:
        return GroupViTLossOutput(loss=itc, itc_loss=itc, multi_label_loss=None)
    if multi_label_logit_scale is None:
        raise ValueError("`multi_label_logit_scale` is required when `prompt_embeds` is given.")
    multi = multi_label_contrastive_loss(
        image_embeds if multi_label_image_embeds is None else multi_label_image_embeds,
        prompt_embeds,
        multi_label_logit_scale,
        gather=gather,
        target=multi_label_target,
        noun_ids=noun_ids,
        max_logit_scale=max_logit_scale,
    )
    return GroupViTLossOutput(loss=itc + multi_label_weight * multi, itc_loss=itc, multi_label_loss=multi)


class GroupViTLoss(nn.Module):
    """GroupViT training loss owning the multi-label logit scale.

    The ITC ``logit_scale`` normally lives in the model (e.g. ``GroupViTModel.logit_scale``) and is passed to
    :meth:`forward`; the multi-label scale ``multi_label_logit_scale`` (init ``ln(1 / 0.07)``) is a parameter of this
    module, as in the original code. Make sure this module's parameters are included in the optimiser (and in DDP,
    e.g. by registering it as a submodule of the wrapped model).

    Args:
        multi_label_weight: Weight ``w`` of the multi-label term.
        multi_label_target: ``"instance"`` (paper) or ``"semantic"``.
        init_multi_label_logit_scale: Initial value of the raw multi-label log-scale.
        max_logit_scale: Clamp of ``exp(scale)``.
        gather: Gather negatives across ranks when distributed.
    """

    def __init__(
        self,
        multi_label_weight: float = 1.0,
        multi_label_target: MultiLabelTarget = "instance",
        init_multi_label_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float | None = DEFAULT_MAX_LOGIT_SCALE,
        gather: bool = True,
    ) -> None:
        super().__init__()
        if multi_label_target not in ("instance", "semantic"):
            raise ValueError(f'`multi_label_target` must be "instance" or "semantic", got {multi_label_target!r}.')
        self.multi_label_weight = multi_label_weight
        self.multi_label_target = multi_label_target
        self.max_logit_scale = max_logit_scale
        self.gather = gather
        self.multi_label_logit_scale = nn.Parameter(torch.tensor(float(init_multi_label_logit_scale)))

    def forward(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        logit_scale: torch.Tensor | float,
        prompt_embeds: torch.Tensor | None = None,
        noun_ids: torch.Tensor | None = None,
        multi_label_image_embeds: torch.Tensor | None = None,
    ) -> GroupViTLossOutput:
        """Computes the total loss; see :func:`groupvit_loss` for the arguments."""
        return groupvit_loss(
            image_embeds,
            text_embeds,
            logit_scale,
            prompt_embeds=prompt_embeds,
            multi_label_logit_scale=self.multi_label_logit_scale,
            multi_label_weight=self.multi_label_weight,
            multi_label_image_embeds=multi_label_image_embeds,
            multi_label_target=self.multi_label_target,
            noun_ids=noun_ids,
            gather=self.gather,
            max_logit_scale=self.max_logit_scale,
        )

    def extra_repr(self) -> str:
        return (
            f"multi_label_weight={self.multi_label_weight}, multi_label_target={self.multi_label_target!r}, "
            f"max_logit_scale={self.max_logit_scale}, gather={self.gather}"
        )
