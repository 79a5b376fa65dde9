"""The pretraining objective: a loss module built from the run configuration, with named, weighted terms.

`GroupViTPretrainingLoss` holds the terms of the paper's objective (and the demo's anti-collapse term):

* ``itc`` -- the image-text contrastive loss, computed by the model's own `contrastive_loss` with the model's
  `logit_scale` (`groupvit.modeling_groupvit`, the one home of the cross-process gather and the clamped scale);
* ``multi_label`` -- the multi-label contrastive loss of ``models/multi_label_contrastive.py`` in NVlabs/GroupViT:
  each caption also yields ``K`` prompted nouns ("a photo of a dog."), encoded in the same text batch as the
  captions; its learnable temperature is a parameter of this module (optimised, saved in the Accelerate state);
* ``group_diversity`` -- not in the paper: see :func:`group_diversity_loss`.

A term is an ``nn.Module`` whose ``forward(inputs: LossInputs)`` returns a scalar; `add_term(name, module, weight)`
registers a new one (its parameters then train and checkpoint with the others). `LossInputs` carries what the terms
read from a training step: normalised image and caption embeddings, projected prompt embeddings, lazily the projected
group embeddings, the grouping maps and the batch.

Distributed gradients: image-text and multi-label terms gather the other modality from every process with
`all_gather_with_grad` (`torch.distributed.nn.functional.all_gather`), whose backward sums over processes: the
per-process gradient of a process' own embeddings is ``W`` times the 1-process gradient of the mean loss, which DDP's
averaging of parameter gradients turns back into the exact 1-process gradient. The loss module's own parameters are
not under DDP: the trainer averages their gradients over processes (`average_gradients`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, get_args

import torch
import torch.nn.functional as F
from torch import nn

from groupvit import modeling_groupvit as modeling
from groupvit.training.config import DenseNounBackprop, GroupPooling, MultiLabelTarget

if TYPE_CHECKING:
    from groupvit.modeling_groupvit import GroupViTModel, GroupViTModelOutput
    from groupvit.training.config import LossArguments

DEFAULT_MAX_LOGIT_SCALE = 100.0


def _scale(logit_scale: torch.Tensor | float, max_logit_scale: float | None, like: torch.Tensor) -> torch.Tensor:
    """`clamped_logit_scale` as a tensor on ``like``'s device/dtype (gradient kept)."""
    if not torch.is_tensor(logit_scale):
        logit_scale = torch.tensor(float(logit_scale))
    return modeling.clamped_logit_scale(logit_scale.to(device=like.device, dtype=like.dtype), max_logit_scale)


# --------------------------------------------------------------------------------------------------------------------
# Loss primitives
# --------------------------------------------------------------------------------------------------------------------
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
    max_logit_scale: float | None = DEFAULT_MAX_LOGIT_SCALE,
) -> torch.Tensor:
    """`modeling_groupvit.contrastive_loss` of un-normalised embeddings and a raw (log-space) temperature.

    Args:
        image_embeds: ``(B, C)`` image embeddings of this process (normalised inside).
        text_embeds: ``(B, C)`` caption embeddings of this process (row ``i`` belongs to image ``i``).
        logit_scale: Raw temperature; the scale is ``min(exp(logit_scale), max_logit_scale)``.
        max_logit_scale: Upper clamp of ``exp(logit_scale)``; ``None`` disables clamping.

    Returns:
        Scalar symmetric InfoNCE loss against the other modality gathered from every process.
    """
    image_embeds = F.normalize(image_embeds, dim=-1)
    text_embeds = F.normalize(text_embeds, dim=-1)
    return modeling.contrastive_loss(image_embeds, text_embeds, _scale(logit_scale, max_logit_scale, image_embeds))


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
        all_noun_ids = modeling.all_gather_with_grad(noun_ids) if world_size > 1 else noun_ids  # (W * B, K)
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

    Group pooling (non-default, ``LossArguments.multi_label_group_pooling="max"``): with ``image_embeds`` of shape
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
    rank, world_size = modeling.distributed_rank_and_world_size() if gather else (0, 1)
    if world_size > 1:
        all_image = modeling.all_gather_with_grad(image_embeds)  # (W * B, C) or (W * B, G, C)
        all_text = modeling.all_gather_with_grad(text_embeds)  # (W * B * K, C)
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


def group_diversity_loss(groupings: Sequence[torch.Tensor]) -> torch.Tensor:
    """Anti-collapse regulariser, not in the paper: the (normalised) negative mutual information of tokens and groups.

    At small scale the image-level contrastive losses are satisfied by a single group that averages the whole image
    (global average pooling), so nothing keeps the grouping from collapsing: the assignment logits stay near zero,
    training assigns tokens at random through the Gumbel noise, and at inference one group takes every token. This
    term asks each image to use its groups evenly (high entropy of the mean assignment) and each token to pick one
    group confidently (low entropy of its own assignment), as in IIC (Ji et al., 2019):
    `1 - H(mean_n p_n) / log G + mean_n H(p_n) / log G`, in [0, 2] (0: balanced and confident).

    Two variants lost on the demo (`docs/experiments.md`) and were removed: usage over the batch instead of per
    image, and `KL(uniform || usage)` instead of the entropy.

    Args:
        groupings: Per stage, the soft assignment ``(B, G, N)`` (each column sums to 1 over the ``G`` groups).

    Returns:
        Scalar loss, averaged over images and stages.
    """
    if not groupings:
        raise ValueError("group_diversity_loss needs at least one grouping stage")
    losses = []
    for soft in groupings:
        soft = soft.float()
        log_groups = math.log(soft.shape[1])
        # (B, G) share of each image's tokens per group
        shares = soft.mean(dim=-1)
        usage_term = 1.0 + (shares * shares.clamp_min(1e-12).log()).sum(dim=-1) / log_groups  # (B,)
        token_entropy = -(soft * soft.clamp_min(1e-12).log()).sum(dim=1).mean(dim=-1)  # (B,)
        losses.append(usage_term + token_entropy / log_groups)
    return torch.stack(losses).mean()


def batch_noun_classes(
    prompt_embeds: torch.Tensor, prompt_noun_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct nouns of a batch's prompts and one embedding each.

    Args:
        prompt_embeds: ``(B, K, C)`` prompt embeddings.
        prompt_noun_ids: ``(B, K)`` noun id of each prompt (``-1``: a padding copy of the caption, skipped).

    Returns:
        ``ids`` ``(U,)`` sorted distinct noun ids and ``embeds`` ``(U, C)``: the L2-normalised mean of the
        normalised embeddings of that noun's prompts.
    """
    embeds = F.normalize(prompt_embeds.float(), dim=-1).reshape(-1, prompt_embeds.shape[-1])
    ids = prompt_noun_ids.reshape(-1).to(embeds.device)
    valid = ids >= 0
    unique, inverse = torch.unique(ids[valid], return_inverse=True)
    sums = embeds.new_zeros(len(unique), embeds.shape[-1]).index_add_(0, inverse, embeds[valid])
    return unique, F.normalize(sums, dim=-1)


def dense_noun_mil_loss(
    patch_embeds: torch.Tensor,
    class_embeds: torch.Tensor,
    targets: torch.Tensor,
    scale: torch.Tensor | float,
    top_k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption-noun multiple-instance loss on image tokens: each patch picks one class, each image's nouns must win.

    Every patch has a softmax over the classes (the batch's nouns and a last "no object" class); a class's image
    score is the mean of its ``top_k`` patch probabilities; binary cross-entropy against ``targets``.

    Args:
        patch_embeds: ``(B, N, C)`` L2-normalised patch embeddings.
        class_embeds: ``(U + 1, C)`` L2-normalised class embeddings, "no object" last.
        targets: ``(B, U + 1)`` 1 where the caption names the class (the "no object" column is normally all 1).
        scale: Logit scale of the patch-class cosine similarities.
        top_k: Patches pooled per class and image.

    Returns:
        The scalar loss and the patch probabilities ``(B, N, U + 1)``.
    """
    logits = scale * patch_embeds.float() @ class_embeds.float().t()  # (B, N, U + 1)
    probs = logits.softmax(dim=-1)
    k = min(top_k, probs.shape[1])
    scores = probs.topk(k, dim=1).values.mean(dim=1)  # (B, U + 1)
    loss = F.binary_cross_entropy(scores.clamp(1e-6, 1 - 1e-6), targets.to(scores.dtype))
    return loss, probs


def _group_mixtures(assignment: torch.Tensor, patch_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each group's class distribution, the assignment-weighted mean of its (fixed) patch posteriors, and its mass.

    Returns:
        ``(B, G, U + 1)`` distributions (rows sum to 1 where the mass is not 0) and the ``(B, G)`` patch mass.
    """
    mixture = assignment.float() @ patch_probs.detach().float()  # (B, G, U + 1)
    mass = mixture.sum(dim=-1)
    return mixture / mass.clamp_min(1e-6)[..., None], mass


def group_distillation_loss(
    group_embeds: torch.Tensor,
    noun_embeds: torch.Tensor,
    assignment: torch.Tensor,
    patch_probs: torch.Tensor,
    scale: torch.Tensor | float,
) -> torch.Tensor:
    """Distil patch class posteriors into the groups' label distributions (what segmentation reads).

    The teacher of group ``g`` is the assignment-weighted mean of its patches' posteriors over the nouns and "no
    object"; the "no object" share is spread evenly over the nouns (a background group should score every label
    alike, which is what the segmenter's background threshold detects). The student is the softmax over the nouns of
    ``scale * cos(group, noun)``. The loss is ``KL(teacher || student)`` per group, weighted by the group's patch mass.

    Args:
        group_embeds: ``(B, G, C)`` L2-normalised group embeddings.
        noun_embeds: ``(U, C)`` L2-normalised noun embeddings.
        assignment: ``(B, G, N)`` soft assignment of the patches to the groups (columns sum to 1).
        patch_probs: ``(B, N, U + 1)`` patch posteriors ("no object" last); used as a fixed target.
        scale: Logit scale of the group-noun similarities.
    """
    teacher, mass = _group_mixtures(assignment, patch_probs)  # (B, G, U + 1), (B, G)
    num_nouns = noun_embeds.shape[0]
    teacher = teacher[..., :-1] + teacher[..., -1:] / num_nouns  # (B, G, U)
    student = F.log_softmax(scale * group_embeds.float() @ noun_embeds.float().t(), dim=-1)  # (B, G, U)
    kl = (teacher * (teacher.clamp_min(1e-12).log() - student)).sum(dim=-1)  # (B, G)
    return (kl * mass).sum() / mass.sum().clamp_min(1e-6)


def group_purity_loss(assignment: torch.Tensor, patch_probs: torch.Tensor) -> torch.Tensor:
    """Mass-weighted entropy of each group's class distribution (assignment-weighted patch posteriors), in [0, 1].

    The posteriors are fixed; the gradient reaches the assignment only: patches of one class should share a group.

    Args:
        assignment: ``(B, G, N)`` soft assignment of the patches to the groups.
        patch_probs: ``(B, N, U + 1)`` patch class posteriors.
    """
    mixture, mass = _group_mixtures(assignment, patch_probs)  # (B, G, U + 1), (B, G)
    entropy = -(mixture * mixture.clamp_min(1e-12).log()).sum(dim=-1) / math.log(patch_probs.shape[-1])
    return (entropy * mass).sum() / mass.sum().clamp_min(1e-6)


# --------------------------------------------------------------------------------------------------------------------
# The loss module
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class LossInputs:
    """What the loss terms read from one training step.

    Attributes:
        model: The (unwrapped) model, for its temperature and `get_group_embeddings`.
        outputs: The model output on the stacked text batch (captions first, then the prompts).
        batch: The collated batch (`prompt_noun_ids` etc.).
        num_captions: Number of captions ``B`` at the head of the text batch.
        patch_tokens_: The first stage's image tokens of this step, when a term needs them (`patch_tokens`).
        patch_posteriors: ``(B, N, U + 1)`` the dense_noun term's patch posteriors (detached), once it has run.
        noun_embeds: ``(U, C)`` the batch's noun embeddings the posteriors refer to.
    """

    model: GroupViTModel
    outputs: GroupViTModelOutput
    batch: Mapping[str, Any]
    num_captions: int
    patch_tokens_: torch.Tensor | None = None
    # set by the dense_noun term for the terms registered after it
    patch_posteriors: torch.Tensor | None = None
    noun_embeds: torch.Tensor | None = None

    @property
    def patch_tokens(self) -> torch.Tensor:
        """``(B, N, D)`` image tokens after the first stage's layers (captured by `GroupViTPretrainingLoss.bind`)."""
        if self.patch_tokens_ is None:
            raise ValueError("this loss term needs the patch tokens: call GroupViTPretrainingLoss.bind(model) first")
        return self.patch_tokens_

    @property
    def image_embeds(self) -> torch.Tensor:
        """``(B, C)`` normalised image embeddings."""
        return self.outputs.image_embeds

    @property
    def text_embeds(self) -> torch.Tensor:
        """``(B, C)`` normalised caption embeddings."""
        return self.outputs.text_embeds[: self.num_captions]

    @property
    def prompt_embeds(self) -> torch.Tensor | None:
        """``(B, K, C)`` normalised prompt embeddings, or None when the batch has no prompts."""
        prompts = self.batch.get("prompt_input_ids")
        if prompts is None or prompts.shape[1] == 0:
            return None
        # (B * K, C) -> (B, K, C)
        return self.outputs.text_embeds[self.num_captions :].reshape(self.num_captions, prompts.shape[1], -1)

    @cached_property
    def group_embeds(self) -> torch.Tensor:
        """``(B, G, C)`` projected final segment tokens (not normalised), computed once per step."""
        return self.model.get_group_embeddings(self.outputs.vision_model_output.last_hidden_state)

    @cached_property
    def chained_grouping(self) -> torch.Tensor:
        """``(B, G, N)`` soft assignment of the patches to the final groups (the stages chained), once per step."""
        return modeling.chain_groupings(tuple(self.groupings))

    @property
    def groupings(self) -> tuple[torch.Tensor, ...]:
        """Per grouping stage the soft assignment ``(B, G, N)``."""
        groupings = self.outputs.vision_model_output.attentions
        if not groupings:
            raise ValueError("this loss term needs the grouping maps: run the model with output_attentions=True")
        return groupings


class ImageTextContrastiveTerm(nn.Module):
    """The model's image-text contrastive loss with the model's temperature."""

    needs_groupings = False

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        scale = inputs.model.scaled(inputs.model.logit_scale).to(inputs.image_embeds.dtype)
        return modeling.contrastive_loss(inputs.image_embeds, inputs.text_embeds, scale)


class MultiLabelContrastiveTerm(nn.Module):
    """The paper's multi-label loss with its own learnable temperature (see `multi_label_contrastive_loss`).

    Args:
        target: `"instance"` (paper) or `"semantic"` (uses the batch's `prompt_noun_ids`).
        group_pooling: `"mean"` (paper: prompts against the image embedding) or `"max"` (against the best group).
        init_logit_scale: Initial raw temperature (the original's ln(1/0.07), rounded as in the Hub configs).
    """

    needs_groupings = False
    needs_prompts = True

    def __init__(self, target: MultiLabelTarget, group_pooling: GroupPooling, init_logit_scale: float):
        super().__init__()
        self.target = target
        self.group_pooling = group_pooling
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        prompt_embeds = inputs.prompt_embeds
        if prompt_embeds is None:
            raise ValueError("the multi_label loss term needs prompt_input_ids in the batch (data.num_prompt_nouns)")
        image_embeds = inputs.group_embeds if self.group_pooling == "max" else inputs.image_embeds
        return multi_label_contrastive_loss(
            image_embeds,
            prompt_embeds,
            self.logit_scale,
            target=self.target,
            noun_ids=inputs.batch.get("prompt_noun_ids") if self.target == "semantic" else None,
            max_logit_scale=inputs.model.config.logit_scale_max,
        )

    def extra_repr(self) -> str:
        return f"target={self.target!r}, group_pooling={self.group_pooling!r}"


class DenseNounTerm(nn.Module):
    """`dense_noun_mil_loss` on the patch tokens of the first stage, with this term's own projection head.

    Not in the paper. The paper's losses only align pooled image embeddings, so no region is ever asked to carry its
    noun. This term asks every patch token (after the first stage's layers, before grouping: what the groups are made
    of) to pick one of the batch's caption nouns or "no object", and every image's caption nouns to win some patches.
    By default (``backprop="head"``) the tokens are detached: the head is a teacher that reads the model without
    steering it; `GroupDistillationTerm` and `GroupPurityTerm` pass what it learns on to the groups that segmentation
    reads. The noun embeddings are the batch's prompt embeddings, detached (the contrastive terms train the text
    tower). ``"image"`` lets the gradient reach the vision tower through the patch tokens, ``"image_text"`` the text
    tower too through the prompts (a run on this term alone: the demo recipe's first stage). The head, the learned
    "no object" embedding and the temperature belong to the loss module: they train and checkpoint with it and are
    never part of the saved model.

    Args:
        hidden_size: Width of the vision tokens.
        projection_dim: Width of the joint embedding space.
        top_k: Patches pooled per noun and image.
        init_logit_scale: Initial raw temperature of the patch-noun similarities.
        backprop: ``"head"``, ``"image"`` or ``"image_text"``: what the term trains besides its head (see above).
    """

    needs_groupings = False
    needs_prompts = True
    needs_patch_tokens = True

    def __init__(
        self,
        hidden_size: int,
        projection_dim: int,
        top_k: int,
        init_logit_scale: float,
        backprop: DenseNounBackprop = "head",
    ) -> None:
        super().__init__()
        if backprop not in get_args(DenseNounBackprop):
            raise ValueError(f"backprop must be one of {get_args(DenseNounBackprop)}, got {backprop!r}")
        self.top_k = top_k
        self.backprop = backprop
        self.patch_head = nn.Sequential(
            nn.LayerNorm(hidden_size),
            nn.Linear(hidden_size, hidden_size),
            nn.GELU(),
            nn.Linear(hidden_size, projection_dim),
        )
        self.no_object = nn.Parameter(torch.randn(projection_dim) * projection_dim**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        if inputs.prompt_embeds is None or "caption_noun_ids" not in inputs.batch:
            raise ValueError(
                "the dense_noun loss term needs noun prompts and caption_noun_ids in the batch (data.num_prompt_nouns)"
            )
        prompts, tokens = inputs.prompt_embeds, inputs.patch_tokens
        if self.backprop != "image_text":
            prompts = prompts.detach()
        if self.backprop == "head":
            tokens = tokens.detach()
        noun_ids, noun_embeds = batch_noun_classes(prompts, inputs.batch["prompt_noun_ids"])
        patches = F.normalize(self.patch_head(tokens), dim=-1)  # (B, N, C)
        classes = torch.cat([noun_embeds.to(patches.dtype), F.normalize(self.no_object, dim=-1)[None]])
        caption_nouns = inputs.batch["caption_noun_ids"].to(noun_ids.device)  # (B, M), -1 padded
        named = (caption_nouns[:, :, None] == noun_ids[None, None, :]).any(dim=1)  # (B, U)
        targets = torch.cat([named, torch.ones_like(named[:, :1])], dim=1)  # every image has some "no object"
        scale = _scale(self.logit_scale, DEFAULT_MAX_LOGIT_SCALE, patches)
        loss, probs = dense_noun_mil_loss(patches, classes, targets, scale, self.top_k)
        inputs.patch_posteriors = probs.detach()
        inputs.noun_embeds = noun_embeds
        return loss

    def extra_repr(self) -> str:
        return f"top_k={self.top_k}, backprop={self.backprop!r}"


def _posteriors(inputs: LossInputs, name: str) -> torch.Tensor:
    if inputs.patch_posteriors is None:
        raise ValueError(f"the {name} loss term reads the dense_noun term's patch posteriors: enable dense_noun too")
    return inputs.patch_posteriors


class GroupDistillationTerm(nn.Module):
    """`group_distillation_loss`: the final groups learn the dense_noun teacher's class distribution of their patches.

    The student's temperature is the model's (detached), the one segmentation scores groups with.
    """

    needs_groupings = True

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        posteriors = _posteriors(inputs, "group_distill")
        scale = inputs.model.scaled(inputs.model.logit_scale).detach()
        group_embeds = F.normalize(inputs.group_embeds, dim=-1)
        return group_distillation_loss(group_embeds, inputs.noun_embeds, inputs.chained_grouping, posteriors, scale)


class GroupPurityTerm(nn.Module):
    """`group_purity_loss`: patches the dense_noun teacher gives one class should share a final group."""

    needs_groupings = True

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        posteriors = _posteriors(inputs, "group_purity")
        return group_purity_loss(inputs.chained_grouping, posteriors)


class GroupDiversityTerm(nn.Module):
    """`group_diversity_loss` of the step's grouping maps."""

    needs_groupings = True

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return group_diversity_loss(inputs.groupings)


@dataclass
class PretrainingLossOutput:
    """Output of `GroupViTPretrainingLoss`.

    Attributes:
        loss: The weighted sum of the terms `()`.
        terms: Each term's unweighted value, by name (`"itc"`, `"multi_label"`, ...).
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


class GroupViTPretrainingLoss(nn.Module):
    """The pretraining objective: a weighted sum of named terms.

    Example:
        ```python
        >>> loss_fn = GroupViTPretrainingLoss()
        >>> loss_fn.add_term("itc", ImageTextContrastiveTerm(), 1.0)
        >>> loss_fn.add_term("group_diversity", GroupDiversityTerm(), 0.5)
        >>> sorted(loss_fn.weights.items())
        [('group_diversity', 0.5), ('itc', 1.0)]
        ```

    Args:
        pad_token_id: Padding id used when captions and prompts of different lengths are stacked.
    """

    def __init__(self, pad_token_id: int = 0) -> None:
        super().__init__()
        self.pad_token_id = pad_token_id
        self.terms = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        self._hook: Any = None
        self._patch_tokens: torch.Tensor | None = None

    @classmethod
    def from_arguments(
        cls,
        arguments: LossArguments,
        num_prompt_nouns: int,
        pad_token_id: int = 0,
        hidden_size: int = 0,
        projection_dim: int = 0,
    ) -> GroupViTPretrainingLoss:
        """The run configuration's objective: the terms of `arguments` whose weight is above 0.

        Args:
            arguments: The run's `loss:` block.
            num_prompt_nouns: Prompts per caption (`data.num_prompt_nouns`); 0 turns the multi-label term off.
            pad_token_id: See the class.
        """
        loss = cls(pad_token_id)
        if arguments.itc_weight > 0:
            loss.add_term("itc", ImageTextContrastiveTerm(), arguments.itc_weight)
        if arguments.multi_label_weight > 0 and num_prompt_nouns > 0:
            term = MultiLabelContrastiveTerm(
                arguments.multi_label_target,
                arguments.multi_label_group_pooling,
                arguments.multi_label_logit_scale_init,
            )
            loss.add_term("multi_label", term, arguments.multi_label_weight)
        if arguments.group_diversity_weight > 0:
            loss.add_term("group_diversity", GroupDiversityTerm(), arguments.group_diversity_weight)
        if arguments.dense_noun_weight > 0:
            if hidden_size < 1 or projection_dim < 1:
                raise ValueError("the dense_noun term needs the model's hidden_size and projection_dim")
            term = DenseNounTerm(
                hidden_size,
                projection_dim,
                arguments.dense_noun_top_k,
                arguments.dense_noun_logit_scale_init,
                arguments.dense_noun_backprop,
            )
            loss.add_term("dense_noun", term, arguments.dense_noun_weight)
        for name, weight, term_class in (
            ("group_distill", arguments.group_distill_weight, GroupDistillationTerm),
            ("group_purity", arguments.group_purity_weight, GroupPurityTerm),
        ):
            if weight > 0:
                if "dense_noun" not in loss.terms:
                    raise ValueError(f"loss.{name}_weight={weight} needs loss.dense_noun_weight > 0 (its teacher)")
                loss.add_term(name, term_class(), weight)
        return loss

    def bind(self, model: GroupViTModel) -> None:
        """Capture the first stage's image tokens of every forward of `model` for the terms that read them.

        A forward hook on the last layer of the first stage keeps its image tokens (the group tokens that follow
        them dropped). Call once, before training; the hook adds no work when no term needs the tokens.
        """
        if not any(getattr(term, "needs_patch_tokens", False) for term in self.terms.values()):
            return
        if self._hook is not None:
            self._hook.remove()
        stage = model.vision_model.encoder.stages[0]
        num_groups = stage.num_group_token

        def capture(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            self._patch_tokens = output[:, : output.shape[1] - num_groups]

        self._hook = stage.layers[-1].register_forward_hook(capture)

    def add_term(self, name: str, term: nn.Module, weight: float) -> None:
        """Register a term: `term(inputs: LossInputs)` returns a scalar, added to the loss times `weight`."""
        if name in self.terms:
            raise ValueError(f"a loss term named {name!r} is already registered")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"the weight of loss term {name!r} must be finite and >= 0, got {weight!r}")
        self.terms[name] = term
        self.weights[name] = float(weight)

    @property
    def needs_groupings(self) -> bool:
        return any(getattr(term, "needs_groupings", False) for term in self.terms.values())

    def model_inputs(self, batch: Mapping[str, Any], output_attentions: bool = False) -> dict[str, Any]:
        """The model's keyword arguments for a training batch: captions and noun prompts in one text batch.

        As in the original, the prompts `(B, K, L')` are encoded together with the captions `(B, L)`, so the text
        head's BatchNorm sees them in the same batch: `(B + B*K, max(L, L'))`, padded with `pad_token_id`.
        """
        inputs = {"pixel_values": batch["pixel_values"], "input_ids": batch["input_ids"]}
        inputs["attention_mask"] = batch.get("attention_mask")
        wants_prompts = any(getattr(term, "needs_prompts", False) for term in self.terms.values())
        prompts = batch.get("prompt_input_ids") if wants_prompts else None
        if prompts is not None and prompts.shape[1] > 0:
            inputs["input_ids"], inputs["attention_mask"] = stack_prompts(
                batch["input_ids"],
                batch.get("attention_mask"),
                prompts,
                batch.get("prompt_attention_mask"),
                self.pad_token_id,
            )
        inputs["output_attentions"] = output_attentions or self.needs_groupings
        return inputs

    def forward(
        self, model: GroupViTModel, outputs: GroupViTModelOutput, batch: Mapping[str, Any]
    ) -> PretrainingLossOutput:
        """Every registered term on one step's model output (the model called with `model_inputs(batch)`)."""
        inputs = LossInputs(model, outputs, batch, batch["input_ids"].shape[0], patch_tokens_=self._patch_tokens)
        self._patch_tokens = None
        terms = {name: term(inputs) for name, term in self.terms.items()}
        loss = sum(self.weights[name] * value for name, value in terms.items())
        return PretrainingLossOutput(loss=loss, terms=terms)

    def extra_repr(self) -> str:
        return f"weights={self.weights}"


def stack_prompts(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    prompt_input_ids: torch.Tensor,
    prompt_attention_mask: torch.Tensor | None,
    pad_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack captions `(B, L)` and prompts `(B, K, L')` into one text batch `(B + B*K, max(L, L'))`."""
    if prompt_input_ids.ndim != 3 or prompt_input_ids.shape[0] != input_ids.shape[0]:
        raise ValueError(
            f"prompt_input_ids must have shape (batch={input_ids.shape[0]}, K, length), "
            f"got {tuple(prompt_input_ids.shape)}"
        )
    # (B, K, L') -> (B * K, L')
    prompts = prompt_input_ids.reshape(-1, prompt_input_ids.shape[-1])
    prompt_mask = None if prompt_attention_mask is None else prompt_attention_mask.reshape(prompts.shape)
    length = max(input_ids.shape[1], prompts.shape[1])

    def pad(ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.ones_like(ids) if mask is None else mask
        extra = length - ids.shape[1]
        return F.pad(ids, (0, extra), value=pad_token_id), F.pad(mask, (0, extra), value=0)

    ids_a, mask_a = pad(input_ids, attention_mask)
    ids_b, mask_b = pad(prompts, prompt_mask)
    return torch.cat([ids_a, ids_b]), torch.cat([mask_a, mask_b])


__all__ = [
    "DenseNounTerm",
    "GroupDistillationTerm",
    "GroupDiversityTerm",
    "GroupPurityTerm",
    "GroupViTPretrainingLoss",
    "ImageTextContrastiveTerm",
    "LossInputs",
    "MultiLabelContrastiveTerm",
    "PretrainingLossOutput",
    "batch_noun_classes",
    "dense_noun_mil_loss",
    "group_distillation_loss",
    "group_diversity_loss",
    "group_purity_loss",
    "image_text_contrastive_loss",
    "multi_label_contrastive_loss",
    "soft_target_cross_entropy",
    "stack_prompts",
]
