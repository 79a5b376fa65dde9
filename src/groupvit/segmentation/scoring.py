"""The protocol's math, as pure functions on tensors: pixel -> group maps, group -> label scores, pixel logits.

The procedure is that of the original `GroupViTSegInference` (mmseg `EncoderDecoder`), for one window:

1. **Pixel -> group** (:func:`stage_group_maps`). The soft grouping maps of the stages, `(batch, G_k, N_k)`, are
   multiplied through (`A2 @ A1`: `(batch, 8, N_patches)` for GroupViT-S), reshaped to the patch grid, resized
   bilinearly (`align_corners=False`) to the window and arg-maxed over the groups (`assignment="hard"`; `"soft"` keeps
   the soft weights instead).
2. **Group -> label** (:func:`group_label_scores`). The final group tokens are projected and L2-normalised, the
   labels' text embeddings too, and with `s = min(exp(logit_scale), 100)`: `L = s * group @ text.T` `(G, C)`,
   `P_all = softmax_C(L)`; the `top_k` (5) labels of the image embedding's softmax keep their logits, the others are
   masked to `-inf`, giving `P_top`; the group score is `P_top * P_all`.
3. **Pixel logits** (:func:`pixel_label_logits`). Foreground logits are `onehot(pixel -> group) @ group_score`. With a
   background threshold `t`, `bg_thr = min(t, max group score)` and pixels whose best foreground score is below
   `bg_thr` get a background logit of 1 (all others 0). With `score_mode="cosine"` the group score is the raw cosine
   similarity and `t` is an absolute similarity threshold (useful for a single label, where the softmaxes are
   always 1).

:func:`count_used_groups` (groups that win at least one patch) is the grouping statistic that training logs and
evaluation reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from groupvit.modeling_groupvit import chain_groupings
from groupvit.segmentation.protocols import ASSIGNMENTS, SCORE_MODES, SegmentationOptions, validate_labels

__all__ = [
    "chained_stages",
    "count_used_groups",
    "encode_label_prompts",
    "group_label_scores",
    "pixel_label_logits",
    "stage_group_maps",
]


def chained_stages(groupings: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Per stage, the soft assignment of the patches to that stage's groups: `(batch, G_k, N_1)`.

    Args:
        groupings: Per grouping stage `(batch, G_k, N_k)`, where `N_1` is the number of patches and `N_k = G_{k-1}`.
    """
    groupings = tuple(groupings)
    return tuple(chain_groupings(groupings[: stage + 1]) for stage in range(len(groupings)))


def count_used_groups(stage_maps: Sequence[torch.Tensor]) -> list[float]:
    """Mean number of groups per image that win (arg-max) at least one patch, per stage.

    Args:
        stage_maps: Per stage, the chained soft maps `(batch, G_k, ...)` (patches flat or on the grid), as from
            :func:`chained_stages` or :func:`stage_group_maps`.

    Example:
        ```python
        >>> maps = torch.tensor([[[0.9, 0.8, 0.1], [0.1, 0.2, 0.9], [0.0, 0.0, 0.0]]])  # (image, group, patch)
        >>> count_used_groups([maps])
        [2.0]

        ```
    """
    used = []
    for maps in stage_maps:
        # (batch, G, ...) -> (batch, N): the winning group of every patch
        winners = maps.flatten(2).argmax(dim=1)
        counts = torch.zeros(maps.shape[:2], device=maps.device).scatter_(1, winners, 1.0)
        used.append(counts.sum(dim=1).mean().item())
    return used


def stage_group_maps(
    groupings: Sequence[torch.Tensor], grid_size: tuple[int, int], batch_size: int = 1
) -> tuple[torch.Tensor, ...]:
    """Chain the stages' soft groupings and lay them on the patch grid.

    Args:
        groupings: Per grouping stage `(batch, G_k, N_k)`, where `N_1` is the number of patches and `N_k = G_{k-1}`.
            Empty for a model without grouping stages (a plain ViT): then every patch is its own group.
        grid_size: The patch grid `(grid_h, grid_w)`, `grid_h * grid_w = N_1`.
        batch_size: Batch of the identity map returned when `groupings` is empty.

    Returns:
        Per stage, `(batch, G_k, grid_h, grid_w)` float32: how much each patch belongs to each group of that stage.
    """
    grid_h, grid_w = grid_size
    if not groupings:
        # (N, N) identity -> (batch, N, grid_h, grid_w): patch i belongs to "group" i
        identity = torch.eye(grid_h * grid_w).reshape(1, grid_h * grid_w, grid_h, grid_w)
        return (identity.expand(batch_size, -1, -1, -1),)
    maps = []
    for chained in chained_stages([grouping.float() for grouping in groupings]):
        batch, groups, num_patches = chained.shape
        if num_patches != grid_h * grid_w:
            raise ValueError(f"grouping covers {num_patches} patches, but the patch grid is {grid_h}x{grid_w}")
        # (batch, G_k, N) -> (batch, G_k, grid_h, grid_w)
        maps.append(chained.reshape(batch, groups, grid_h, grid_w))
    return tuple(maps)


def group_label_scores(
    group_embeds: torch.Tensor,
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    top_k: int | None = 5,
    score_mode: str = "original",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score every group against every label.

    Args:
        group_embeds: `(batch, G, D)` L2-normalised group embeddings.
        image_embeds: `(batch, D)` L2-normalised image embeddings.
        text_embeds: `(C, D)` L2-normalised label embeddings.
        logit_scale: `s = min(exp(logit_scale), max)`, already exponentiated.
        top_k: Labels kept by the image-level restriction (None: all).
        score_mode: `"original"` (`P_top * P_all`) or `"cosine"` (the cosine similarities).

    Returns:
        `group_scores` `(batch, G, C)` and the image-level label probabilities `(batch, C)` (softmax of
        `s * image @ text.T`).
    """
    group_embeds, image_embeds, text_embeds = group_embeds.float(), image_embeds.float(), text_embeds.float()
    # (batch, G, D) @ (D, C) -> (batch, G, C)
    cosine = group_embeds @ text_embeds.t()
    # (batch, D) @ (D, C) -> (batch, C)
    image_probs = (image_embeds @ text_embeds.t() * logit_scale).softmax(-1)
    if score_mode == "cosine":
        return cosine, image_probs
    if score_mode != "original":
        raise ValueError(f"score_mode must be one of {SCORE_MODES}, got {score_mode!r}")
    group_logits = cosine * logit_scale
    p_all = group_logits.softmax(-1)
    num_labels = text_embeds.shape[0]
    k = num_labels if top_k is None else min(top_k, num_labels)
    # (batch, k) -> (batch, C) boolean mask of the image's top-k labels
    keep = torch.zeros_like(image_probs, dtype=torch.bool).scatter_(-1, image_probs.topk(k, dim=-1).indices, True)
    p_top = group_logits.masked_fill(~keep[:, None, :], float("-inf")).softmax(-1)
    return p_top * p_all, image_probs


def encode_label_prompts(
    embed: Callable[[list[str]], torch.Tensor],
    labels: Sequence[str],
    options: SegmentationOptions,
    templates: Sequence[str] | str | None = None,
    template_ensemble: str | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Embed every label in every template and ensemble the templates: `(C, D)` float32, L2-normalised.

    Shared by the PyTorch and the ONNX segmenters, which differ only in `embed`.

    Args:
        embed: Projected (not normalised) text embeddings `(N, D)` of a list of prompts.
        labels: The label names.
        options: Defaults for `templates` and `template_ensemble`.
        templates: Templates with `{}`; several are ensembled.
        template_ensemble: `"projection_mean"` (original: average the projections, then normalise) or
            `"normalized_mean"` (normalise each, average, normalise).
        batch_size: Prompts per `embed` call.
    """
    opts = options.replace(
        **{k: v for k, v in (("templates", templates), ("template_ensemble", template_ensemble)) if v is not None}
    )
    labels = validate_labels(labels)
    prompts = [template.format(label) for label in labels for template in opts.templates]
    embeds = torch.cat([embed(prompts[i : i + batch_size]).float() for i in range(0, len(prompts), batch_size)])
    # (C * T, D) -> (C, T, D)
    embeds = embeds.reshape(len(labels), len(opts.templates), -1)
    if opts.template_ensemble == "normalized_mean":
        embeds = F.normalize(embeds, dim=-1)
    return F.normalize(embeds.mean(1), dim=-1)


def pixel_label_logits(
    pixel_group_maps: torch.Tensor,
    group_scores: torch.Tensor,
    background_threshold: float | None = None,
    assignment: str = "hard",
    score_mode: str = "original",
) -> torch.Tensor:
    """Per-pixel label logits from pixel->group maps and group scores.

    Args:
        pixel_group_maps: `(batch, G, H, W)` group weights per pixel (arg-maxed when `assignment="hard"`).
        group_scores: `(batch, G, C)` from :func:`group_label_scores`.
        background_threshold: None, or the threshold in `[0, 1]`: relative (`min(t, max group score)`) for
            `score_mode="original"`, absolute for `"cosine"`.
        assignment: `"hard"` (one-hot of the arg-max group) or `"soft"`.
        score_mode: Which threshold rule applies.

    Returns:
        `(batch, C, H, W)`, or `(batch, C + 1, H, W)` with the background logit (0 or 1) last.
    """
    batch, groups, height, width = pixel_group_maps.shape
    num_labels = group_scores.shape[-1]
    group_scores = group_scores.float()
    if assignment == "hard":
        # the one-hot product picks each pixel's group row: (batch, H*W) -> (batch, H*W, C)
        index = pixel_group_maps.argmax(1).reshape(batch, height * width)
        foreground = group_scores.gather(1, index[..., None].expand(-1, -1, num_labels))
        # (batch, H*W, C) -> (batch, C, H, W)
        foreground = foreground.transpose(1, 2).reshape(batch, num_labels, height, width)
    elif assignment == "soft":
        foreground = torch.einsum("bghw,bgc->bchw", pixel_group_maps.float(), group_scores)
    else:
        raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")
    if background_threshold is None:
        return foreground
    if score_mode == "cosine":
        threshold = group_scores.new_full((batch,), background_threshold)
    else:
        # at least the best group stays foreground
        threshold = group_scores.flatten(1).amax(1).clamp(max=background_threshold)
    # (batch, H, W) -> (batch, 1, H, W)
    background = (foreground.amax(1) < threshold[:, None, None]).to(foreground.dtype)[:, None]
    return torch.cat([foreground, background], dim=1)
