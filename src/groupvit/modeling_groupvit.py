"""GroupViT: a grouping vision transformer and a CLIP-style text transformer trained with text supervision.

Read top-down: output dataclasses, the assignment functions, embeddings, attention and MLP blocks, transformer layers,
the grouping block, stages and encoders, the pretrained base class, and the public models.

Parameter names and shapes equal those of `transformers.GroupViTModel`, so checkpoints move between the two without
conversion. What differs from the built-in model:
- self- and cross-attention go through transformers' attention interface (`attn_implementation="sdpa"` by default);
- stochastic depth, Gumbel/hard assignment options and the original's initialisation are used in training;
- `exp(logit_scale)` is clamped at `config.logit_scale_max` (100, as in the original);
- `segmentation_logits` apply the logit scale once (the built-in applies it twice);
- `return_loss=True` gathers the embeddings across processes (with gradients), so a 2-process loss equals the
  1-process loss of the whole batch. As in CLIP, it is the image-text contrastive loss only: the paper's multi-label
  loss and the group-diversity term are training objectives (`groupvit.training.losses`).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_groupvit import GroupViTConfig, GroupViTTextConfig, GroupViTVisionConfig

# --------------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class GroupViTModelOutput(ModelOutput):
    """Output of [`GroupViTModel`].

    Args:
        loss: Image-text contrastive loss `()`, when `return_loss=True`.
        logits_per_image: `(image_batch, text_batch)` scaled cosine similarities.
        logits_per_text: `(text_batch, image_batch)`, the transpose.
        segmentation_logits: `(image_batch, text_batch, height, width)` per-pixel text similarities, when
            `output_segmentation=True`; the logit scale is applied once.
        text_embeds: `(text_batch, projection_dim)` L2-normalised text embeddings.
        image_embeds: `(image_batch, projection_dim)` L2-normalised image embeddings.
        text_model_output: Output of the text transformer.
        vision_model_output: Output of the vision transformer; its `attentions` are the soft grouping maps
            `(image_batch, num_output_groups, num_input_tokens)` of each grouping stage.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    segmentation_logits: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v.to_tuple() if k in ("text_model_output", "vision_model_output") else v for k, v in self.items())


# --------------------------------------------------------------------------------------------------------------------
# Assignment: which group each token goes to
# --------------------------------------------------------------------------------------------------------------------


def straight_through_one_hot(probs: torch.Tensor, dim: int) -> torch.Tensor:
    """One-hot of the argmax along `dim` in the forward pass, the gradient of `probs` in the backward pass."""
    index = probs.argmax(dim, keepdim=True)
    hard = torch.zeros_like(probs).scatter_(dim, index, 1.0)
    return hard - probs.detach() + probs


def assignment_probs(logits: torch.Tensor, dim: int, *, gumbel: bool, hard: bool, tau: float = 1.0) -> torch.Tensor:
    """Normalise assignment logits over `dim`, optionally with Gumbel noise and a straight-through hard one-hot.

    Computed in float32 whatever the input dtype, so bf16 autocast neither underflows the noise nor flips argmaxes.
    """
    logits = logits.float()
    if gumbel:
        # Gumbel(0, 1) = -log(Exponential(1)); sampling the exponential avoids log(0) from uniform draws.
        noise = -torch.empty_like(logits).exponential_().log()
        logits = (logits + noise) / tau
    probs = logits.softmax(dim)
    return straight_through_one_hot(probs, dim) if hard else probs


# --------------------------------------------------------------------------------------------------------------------
# Temperature, grouping chain and the contrastive loss (one home each; the training losses import them)
# --------------------------------------------------------------------------------------------------------------------


def clamped_logit_scale(logit_scale: torch.Tensor, max_value: float | None) -> torch.Tensor:
    """`min(exp(logit_scale), max_value)` with the gradient kept (`max_value=None`: no clamp)."""
    scale = logit_scale.exp()
    return scale if max_value is None else scale.clamp(max=max_value)


def chain_groupings(groupings: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Multiply the stages' soft assignments through: `(batch, G1, N) ... (batch, Gk, G_{k-1})` -> `(batch, Gk, N)`."""
    chained = groupings[0]
    for grouping in groupings[1:]:
        # (batch, Gk, G_{k-1}) @ (batch, G_{k-1}, N)
        chained = grouping @ chained
    return chained


def distributed_rank_and_world_size() -> tuple[int, int]:
    """`(rank, world_size)` of the default process group, `(0, 1)` when not distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` `(B, ...)` from every process along dim 0 -> `(W * B, ...)`, ordered by rank.

    `torch.distributed.nn.functional.all_gather` sums the gradient of the gathered copies over processes in the
    backward pass (as the original's `diffdist` gather): the gradient reaching a process' own rows is `W` times the
    1-process gradient of the mean loss, which DDP's gradient averaging turns back into the 1-process gradient.
    Identity when not distributed.
    """
    if distributed_rank_and_world_size()[1] == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def contrastive_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of L2-normalised `(B, C)` embeddings, caption i belonging to image i.

    Each process scores its own rows against the other modality gathered from every process, so the mean over
    processes of this loss equals the loss of one process holding the whole batch.

    Args:
        image_embeds: `(B, C)` normalised image embeddings of this process.
        text_embeds: `(B, C)` normalised caption embeddings of this process.
        logit_scale: The scale already exponentiated and clamped (`clamped_logit_scale`).

    Returns:
        `0.5 * (CE(s * img @ txt_all^T) + CE(s * txt @ img_all^T))`.
    """
    rank, _ = distributed_rank_and_world_size()
    logit_scale = logit_scale.to(image_embeds.dtype)
    # (B, W * B) each
    logits_per_image = logit_scale * image_embeds @ all_gather_with_grad(text_embeds).t()
    logits_per_text = logit_scale * text_embeds @ all_gather_with_grad(image_embeds).t()
    labels = torch.arange(image_embeds.shape[0], device=image_embeds.device) + image_embeds.shape[0] * rank
    return 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with probability `drop_prob` in training."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep = 1.0 - self.drop_prob
        # (batch, 1, 1): one draw per sample
        mask = hidden_states.new_empty((hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)).bernoulli_(keep)
        return hidden_states * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


# --------------------------------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------------------------------


def _check_batch(tensor: torch.Tensor, name: str) -> None:
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(tensor.shape)}): pass at least one example")


def _pair(value: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class GroupViTPatchEmbeddings(nn.Module):
    """Non-overlapping patches by a strided convolution: `(batch, channels, H, W)` -> `(batch, H/p * W/p, hidden)`."""

    def __init__(self, config: GroupViTVisionConfig) -> None:
        super().__init__()
        self.image_size = _pair(config.image_size)
        self.patch_size = _pair(config.patch_size)
        self.grid_size = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=self.patch_size, stride=self.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # (batch, hidden, H/p, W/p) -> (batch, H/p * W/p, hidden)
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class GroupViTVisionEmbeddings(nn.Module):
    """Patch embedding, LayerNorm, then a learned position embedding (bicubically resized for other input sizes)."""

    def __init__(self, config: GroupViTVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embeddings = GroupViTPatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.patch_embeddings.num_patches, config.hidden_size))
        self.dropout = nn.Dropout(config.dropout)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def interpolate_pos_encoding(self, grid_height: int, grid_width: int) -> torch.Tensor:
        """Position embedding for a `grid_height x grid_width` patch grid, `(1, grid_height * grid_width, hidden)`."""
        train_height, train_width = self.patch_embeddings.grid_size
        if (grid_height, grid_width) == (train_height, train_width) and not torch.jit.is_tracing():
            return self.position_embeddings
        hidden = self.position_embeddings.shape[-1]
        # (1, N, hidden) -> (1, hidden, grid_h, grid_w)
        grid = self.position_embeddings.reshape(1, train_height, train_width, hidden).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(grid_height, grid_width), mode="bicubic", align_corners=False)
        # (1, hidden, h, w) -> (1, h * w, hidden)
        return grid.permute(0, 2, 3, 1).reshape(1, grid_height * grid_width, hidden)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None = None) -> torch.Tensor:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.config.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}"
            )
        height, width = pixel_values.shape[-2:]
        patch_height, patch_width = self.patch_embeddings.patch_size
        if height < patch_height or width < patch_width:
            raise ValueError(f"Input image size {height}x{width} is smaller than the patch size {patch_height}")
        if interpolate_pos_encoding is False and (height, width) != self.patch_embeddings.image_size:
            raise ValueError(
                f"Input image size ({height}*{width}) doesn't match model {self.patch_embeddings.image_size}; pass "
                "interpolate_pos_encoding=True (or leave it None) to resize the position embedding"
            )
        embeddings = self.layernorm(
            self.patch_embeddings(pixel_values.to(self.patch_embeddings.projection.weight.dtype))
        )
        embeddings = embeddings + self.interpolate_pos_encoding(height // patch_height, width // patch_width)
        return self.dropout(embeddings)


class GroupViTTextEmbeddings(nn.Module):
    """Token embedding plus a learned absolute position embedding."""

    def __init__(self, config: GroupViTTextConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.register_buffer(
            "position_ids", torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False
        )

    def forward(self, input_ids: torch.LongTensor, position_ids: torch.LongTensor | None = None) -> torch.Tensor:
        seq_length = input_ids.shape[-1]
        max_length = self.position_embedding.num_embeddings
        if seq_length > max_length:
            raise ValueError(f"input_ids has {seq_length} tokens but the text model holds at most {max_length}")
        if position_ids is None:
            position_ids = self.position_ids[:, :seq_length]
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)


# --------------------------------------------------------------------------------------------------------------------
# Attention and MLPs
# --------------------------------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference softmax attention; `query/key/value` are `(batch, heads, length, head_dim)`."""
    # (batch, heads, q_len, kv_len)
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = weights.softmax(dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    # (batch, heads, q_len, head_dim) -> (batch, q_len, heads, head_dim)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


class GroupViTAttention(nn.Module):
    """Multi-head attention; self-attention, or cross-attention when `encoder_hidden_states` is given."""

    def __init__(self, config: GroupViTVisionConfig | GroupViTTextConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = False
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        key_value_states = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, q_len, _ = hidden_states.shape
        kv_len = key_value_states.shape[1]
        # (batch, length, hidden) -> (batch, heads, length, head_dim)
        query = self.q_proj(hidden_states).view(batch, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key = self.k_proj(key_value_states).view(batch, kv_len, self.num_heads, self.head_dim).transpose(1, 2)
        value = self.v_proj(key_value_states).view(batch, kv_len, self.num_heads, self.head_dim).transpose(1, 2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scale,
            dropout=self.dropout if self.training else 0.0,
            **kwargs,
        )
        # (batch, q_len, heads, head_dim) -> (batch, q_len, hidden)
        output = self.out_proj(output.reshape(batch, q_len, self.embed_dim))
        return output, weights


class GroupViTMLP(nn.Module):
    """Two-layer MLP `hidden -> intermediate -> output` over the channel axis."""

    def __init__(
        self,
        config: GroupViTVisionConfig | GroupViTTextConfig,
        hidden_size: int | None = None,
        intermediate_size: int | None = None,
        output_size: int | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        hidden_size = hidden_size if hidden_size is not None else config.hidden_size
        intermediate_size = intermediate_size if intermediate_size is not None else config.intermediate_size
        output_size = output_size if output_size is not None else hidden_size
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, output_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class GroupViTMixerMLP(GroupViTMLP):
    """The same MLP applied over the token axis: `(batch, tokens_in, hidden)` -> `(batch, tokens_out, hidden)`."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden_states.transpose(1, 2)).transpose(1, 2)


# --------------------------------------------------------------------------------------------------------------------
# Transformer layers and the grouping block
# --------------------------------------------------------------------------------------------------------------------


class GroupViTEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer layer: `x + Attn(LN(x))`, then `x + MLP(LN(x))`, each branch with stochastic depth."""

    def __init__(self, config: GroupViTVisionConfig | GroupViTTextConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        self.embed_dim = config.hidden_size
        self.self_attn = GroupViTAttention(config)
        self.layer_norm1 = nn.LayerNorm(self.embed_dim, eps=config.layer_norm_eps)
        self.mlp = GroupViTMLP(config)
        self.layer_norm2 = nn.LayerNorm(self.embed_dim, eps=config.layer_norm_eps)
        self.drop_path = DropPath(drop_path)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        # the attention weights are recorded from `self_attn` by the output-capturing hooks (`_can_record_outputs`)
        attn_output, _ = self.self_attn(self.layer_norm1(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + self.drop_path(attn_output)
        return hidden_states + self.drop_path(self.mlp(self.layer_norm2(hidden_states)))


class GroupViTCrossAttentionLayer(nn.Module):
    """Group tokens attend to image tokens: `p + MHA(p, x)`, `+ MLP(LN(.))`, then a closing LayerNorm."""

    def __init__(self, config: GroupViTVisionConfig) -> None:
        super().__init__()
        self.attn = GroupViTAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = GroupViTMLP(config)
        self.norm_post = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        query = query + self.attn(query, encoder_hidden_states=key)[0]
        query = query + self.mlp(self.norm2(query))
        return self.norm_post(query)


class GroupViTAssignAttention(nn.Module):
    """Single-head assignment of image tokens to groups.

    Unlike softmax attention, the logits are normalised over the *group* axis: each image token chooses one group
    (Gumbel-softmax with a straight-through one-hot while training, plain argmax at inference), and each group then
    averages the tokens it received.
    """

    def __init__(self, config: GroupViTVisionConfig) -> None:
        super().__init__()
        self.scale = config.hidden_size**-0.5
        self.assign_eps = config.assign_eps
        self.hard = config.hard_assignment
        self.gumbel = config.gumbel
        self.gumbel_tau = config.gumbel_tau
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Assign `key` tokens `(batch, N, C)` to `query` groups `(batch, G, C)`.

        Returns:
            The pooled group features `(batch, G, C)` and the soft assignment `(batch, G, N)` (softmax over groups,
            no noise), which segmentation and visualisation use.
        """
        # (batch, G, N)
        logits = (self.q_proj(query) @ self.k_proj(key).transpose(-2, -1)) * self.scale
        assign = assignment_probs(
            logits, dim=-2, gumbel=self.gumbel and self.training, hard=self.hard, tau=self.gumbel_tau
        )
        soft = logits.float().softmax(dim=-2)
        # average of the tokens each group received: (batch, G, N) / (batch, G, 1)
        assign = assign / (assign.sum(dim=-1, keepdim=True) + self.assign_eps)
        value = self.v_proj(key)
        # (batch, G, N) @ (batch, N, C) -> (batch, G, C)
        output = self.proj(assign.to(value.dtype) @ value)
        return output, soft


class GroupViTTokenAssign(GradientCheckpointingLayer):
    """Grouping block: turns `N` image tokens into `num_output_group` segment tokens using the stage's group tokens."""

    def __init__(self, config: GroupViTVisionConfig, num_group_token: int, num_output_group: int) -> None:
        super().__init__()
        self.num_output_group = num_output_group
        tokens_dim, channels_dim = (int(ratio * config.hidden_size) for ratio in config.assign_mlp_ratio)
        self.norm_tokens = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp_inter = GroupViTMixerMLP(config, num_group_token, tokens_dim, num_output_group)
        self.norm_post_tokens = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.norm_x = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pre_assign_attn = GroupViTCrossAttentionLayer(config)
        self.assign = GroupViTAssignAttention(config)
        self.norm_new_x = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp_channels = GroupViTMLP(config, config.hidden_size, channels_dim, config.hidden_size)

    def forward(self, image_tokens: torch.Tensor, group_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        group_tokens = self.norm_tokens(group_tokens)
        image_tokens = self.norm_x(image_tokens)
        # (batch, num_group_token, C) -> (batch, num_output_group, C)
        projected = self.norm_post_tokens(self.mlp_inter(group_tokens))
        projected = self.pre_assign_attn(projected, image_tokens)
        segments, soft_assignment = self.assign(projected, image_tokens)
        segments = segments + projected
        segments = segments + self.mlp_channels(self.norm_new_x(segments))
        return segments, soft_assignment


class GroupViTStage(nn.Module):
    """Transformer layers over `[tokens; group tokens]`, then (if the stage has group tokens) a grouping block."""

    def __init__(
        self,
        config: GroupViTVisionConfig,
        depth: int,
        num_prev_group_token: int,
        num_group_token: int,
        num_output_group: int,
        drop_path_rates: list[float],
    ) -> None:
        super().__init__()
        self.num_group_token = num_group_token
        self.group_token = (
            nn.Parameter(torch.zeros(1, num_group_token, config.hidden_size)) if num_group_token > 0 else None
        )
        self.layers = nn.ModuleList([GroupViTEncoderLayer(config, drop_path=rate) for rate in drop_path_rates])
        self.downsample = (
            GroupViTTokenAssign(config, num_group_token, num_output_group) if num_group_token > 0 else None
        )
        if num_prev_group_token > 0 and num_group_token > 0:
            # previous stage's group tokens (before its grouping) mixed over tokens: 64 -> hidden/2 -> 8
            self.group_projector = nn.Sequential(
                nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps),
                GroupViTMixerMLP(config, num_prev_group_token, config.hidden_size // 2, num_group_token),
            )
        else:
            self.group_projector = None

    def forward(
        self, hidden_states: torch.Tensor, prev_group_tokens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns the stage output, its group tokens after the layers (for the next stage) and the soft grouping."""
        if self.group_token is None:
            for layer in self.layers:
                hidden_states = layer(hidden_states)
            return hidden_states, None, None

        # (1, G, C) -> (batch, G, C)
        group_tokens = self.group_token.expand(hidden_states.shape[0], -1, -1)
        if self.group_projector is not None:
            group_tokens = group_tokens + self.group_projector(prev_group_tokens)
        num_image_tokens = hidden_states.shape[1]
        # (batch, N + G, C): image tokens first, group tokens last
        hidden_states = torch.cat([hidden_states, group_tokens], dim=1)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        image_tokens, group_tokens = hidden_states[:, :num_image_tokens], hidden_states[:, num_image_tokens:]
        segments, grouping = self.downsample(image_tokens, group_tokens)
        return segments, group_tokens, grouping


class GroupViTVisionEncoder(nn.Module):
    """The grouping stages, e.g. 196 patches -> 64 segments -> 8 segments for GroupViT-S."""

    def __init__(self, config: GroupViTVisionConfig) -> None:
        super().__init__()
        total = sum(config.depths)
        # linear from 0 to drop_path_rate over all layers (plain floats: no tensor, so meta-device init works)
        rates = [config.drop_path_rate * i / max(1, total - 1) for i in range(total)]
        stages, start = [], 0
        for i, depth in enumerate(config.depths):
            stages.append(
                GroupViTStage(
                    config,
                    depth=depth,
                    num_prev_group_token=config.num_group_tokens[i - 1] if i > 0 else 0,
                    num_group_token=config.num_group_tokens[i],
                    num_output_group=config.num_output_groups[i],
                    drop_path_rates=rates[start : start + depth],
                )
            )
            start += depth
        self.stages = nn.ModuleList(stages)

    def forward(self, hidden_states: torch.Tensor, output_hidden_states: bool = False) -> BaseModelOutput:
        all_hidden_states = () if output_hidden_states else None
        groupings = ()
        group_tokens = None
        for stage in self.stages:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, group_tokens, grouping = stage(hidden_states, group_tokens)
            if grouping is not None:
                groupings += (grouping,)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=groupings)


class GroupViTTextEncoder(nn.Module):
    """Stack of causal transformer layers (hidden states and attentions are recorded by the capturing hooks)."""

    def __init__(self, config: GroupViTTextConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([GroupViTEncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> BaseModelOutput:
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, **kwargs)
        return BaseModelOutput(last_hidden_state=hidden_states)


# --------------------------------------------------------------------------------------------------------------------
# Pretrained base
# --------------------------------------------------------------------------------------------------------------------


class GroupViTPreTrainedModel(PreTrainedModel):
    """Weight initialisation of the original GroupViT, and loading/saving through transformers."""

    config: GroupViTConfig
    base_model_prefix = "groupvit"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["GroupViTEncoderLayer", "GroupViTTokenAssign"]
    # the text tower records its outputs with hooks (transformers 5.x); the vision tower returns its grouping maps
    # itself, as they are not the output of any one module call
    _can_record_outputs = {"hidden_states": GroupViTEncoderLayer, "attentions": GroupViTAttention}

    def _init_weights(self, module: nn.Module) -> None:
        """Original GroupViT init: Linears trunc-normal(.02), then CLIP's scheme for the text tower.

        Modules are visited children first, so a text attention/MLP overrides the generic Linear init of its children.
        """
        super()._init_weights(module)
        config = getattr(module, "config", None)
        is_text = isinstance(config, GroupViTTextConfig)
        if isinstance(module, GroupViTTextEmbeddings):
            init.normal_(module.token_embedding.weight, std=0.02)
            init.normal_(module.position_embedding.weight, std=0.01)
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
        elif isinstance(module, GroupViTAttention) and is_text:
            width, layers = config.hidden_size, config.num_hidden_layers
            for proj in (module.q_proj, module.k_proj, module.v_proj):
                init.normal_(proj.weight, std=width**-0.5)
                init.zeros_(proj.bias)
            init.normal_(module.out_proj.weight, std=width**-0.5 * (2 * layers) ** -0.5)
            init.zeros_(module.out_proj.bias)
        elif isinstance(module, GroupViTMLP) and is_text:
            width, layers = config.hidden_size, config.num_hidden_layers
            init.normal_(module.fc1.weight, std=(2 * width) ** -0.5)
            init.normal_(module.fc2.weight, std=width**-0.5 * (2 * layers) ** -0.5)
            init.zeros_(module.fc1.bias)
            init.zeros_(module.fc2.bias)
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, GroupViTVisionEmbeddings):
            init.trunc_normal_(module.position_embeddings, std=0.02)
        elif isinstance(module, GroupViTStage) and module.group_token is not None:
            if module.group_projector is None:
                init.trunc_normal_(module.group_token, std=0.02)
            else:
                # the projected previous group tokens carry the signal; the learned offset starts at zero
                init.zeros_(module.group_token)
        elif isinstance(module, GroupViTModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)


# --------------------------------------------------------------------------------------------------------------------
# Towers
# --------------------------------------------------------------------------------------------------------------------


class GroupViTTextTransformer(GroupViTPreTrainedModel):
    """CLIP text transformer: embeddings, causal layers, final LayerNorm, pooling at the end-of-text token.

    A `PreTrainedModel`, as in transformers, so that `capture_outputs` records its hidden states and attentions.
    """

    config: GroupViTTextConfig

    def __init__(self, config: GroupViTTextConfig) -> None:
        super().__init__(config)
        self.embeddings = GroupViTTextEmbeddings(config)
        self.encoder = GroupViTTextEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # no `post_init()` here: the owning model's initialises every tower in one pass, so a seed gives the
        # same weights as when this tower was a plain module

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        if input_ids is None:
            raise ValueError("input_ids are required")
        if input_ids.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"input_ids must be an integer tensor, got dtype {input_ids.dtype}")
        input_ids = input_ids.view(-1, input_ids.shape[-1])
        _check_batch(input_ids, "input_ids")
        # a data-dependent check: eager only (a compiled or exported graph would break on it)
        tracing = torch.compiler.is_compiling() or torch.jit.is_tracing()
        if not tracing and input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            raise ValueError(
                f"input_ids must be in [0, vocab_size={self.config.vocab_size}), got values in "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]"
            )
        hidden_states = self.embeddings(input_ids, position_ids)
        mask = create_causal_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask, cache=None
        )
        kwargs.pop("is_causal", None)
        encoder_outputs = self.encoder(hidden_states, mask, is_causal=True, **kwargs)
        last_hidden_state = self.final_layer_norm(encoder_outputs.last_hidden_state)

        if self.config.eos_token_id == 2:
            # legacy configs: CLIP's end-of-text token has the largest id, so pool at the argmax
            eot_positions = input_ids.to(torch.int).argmax(dim=-1)
        else:
            # first end-of-text token (padding may use the same id)
            eot_positions = (input_ids == self.config.eos_token_id).to(torch.int).argmax(dim=-1)
        # (batch, hidden)
        pooled = last_hidden_state[torch.arange(last_hidden_state.shape[0], device=input_ids.device), eot_positions]
        return BaseModelOutputWithPooling(last_hidden_state=last_hidden_state, pooler_output=pooled)


class GroupViTVisionTransformer(nn.Module):
    """Embeddings, grouping stages, final LayerNorm, mean over the final segment tokens."""

    def __init__(self, config: GroupViTVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = GroupViTVisionEmbeddings(config)
        self.encoder = GroupViTVisionEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        interpolate_pos_encoding: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        """`attentions` are always the soft grouping maps of each grouping stage (they cost nothing extra): the
        segmenter and ONNX export read them. The public models apply `output_attentions` (`_vision_outputs`)."""
        if pixel_values is None:
            raise ValueError("pixel_values are required")
        _check_batch(pixel_values, "pixel_values")
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding)
        encoder_outputs = self.encoder(hidden_states, output_hidden_states)
        # (batch, num_segments, hidden)
        last_hidden_state = self.layernorm(encoder_outputs.last_hidden_state)
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=last_hidden_state.mean(dim=1),
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )


def _vision_outputs(
    tower: GroupViTVisionTransformer,
    pixel_values: torch.Tensor | None,
    output_attentions: bool | None,
    output_hidden_states: bool | None,
    interpolate_pos_encoding: bool | None,
) -> BaseModelOutputWithPooling:
    """The vision tower as the public models return it: `None` flags read the tower's config (as transformers
    does), and the grouping maps are kept only when `output_attentions`."""
    outputs = tower(
        pixel_values, _flag(output_hidden_states, tower.config.output_hidden_states), interpolate_pos_encoding
    )
    if not _flag(output_attentions, tower.config.output_attentions):
        outputs.attentions = None
    return outputs


_KNOWN_KWARGS = frozenset(TransformersKwargs.__annotations__) | {"return_dict"}


def _check_kwargs(kwargs: dict[str, Any], where: str) -> None:
    """Accept transformers' shared keyword arguments, as the built-in does, and name anything else."""
    unknown = sorted(set(kwargs) - _KNOWN_KWARGS)
    if unknown:
        raise TypeError(f"{where} got unexpected keyword argument(s) {unknown}")


def _flag(value: bool | None, default: bool | None) -> bool:
    """A call argument wins over the config value, as in transformers."""
    return bool(default if value is None else value)


# --------------------------------------------------------------------------------------------------------------------
# Public models
# --------------------------------------------------------------------------------------------------------------------


class GroupViTTextModel(GroupViTPreTrainedModel):
    """The GroupViT text tower alone (no projection head).

    Example:
        ```python
        >>> import torch
        >>> from groupvit import GroupViTConfig, GroupViTTextModel
        >>> model = GroupViTTextModel(GroupViTConfig.from_preset("groupvit-tiny").text_config).eval()
        >>> model(torch.tensor([[49406, 320, 1125, 49407]])).pooler_output.shape
        torch.Size([1, 32])
        ```
    """

    config: GroupViTTextConfig
    input_modalities = ("text",)

    def __init__(self, config: GroupViTTextConfig) -> None:
        super().__init__(config)
        self.text_model = GroupViTTextTransformer(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.embeddings.token_embedding = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Text tower output; `output_attentions`/`output_hidden_states`/`return_dict` default to the config."""
        _check_kwargs(kwargs, "GroupViTTextModel.forward")
        return self.text_model(input_ids, attention_mask, position_ids, **kwargs)


class GroupViTVisionModel(GroupViTPreTrainedModel):
    """The GroupViT vision tower alone (no projection head); `attentions` are the soft grouping maps.

    Example:
        ```python
        >>> import torch
        >>> from groupvit import GroupViTConfig, GroupViTVisionModel
        >>> model = GroupViTVisionModel(GroupViTConfig.from_preset("groupvit-tiny").vision_config).eval()
        >>> out = model(torch.randn(1, 3, 32, 32), output_attentions=True)
        >>> out.last_hidden_state.shape, [a.shape for a in out.attentions]
        (torch.Size([1, 4, 32]), [torch.Size([1, 8, 64]), torch.Size([1, 4, 8])])
        ```
    """

    config: GroupViTVisionConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _can_record_outputs = {}

    def __init__(self, config: GroupViTVisionConfig) -> None:
        super().__init__(config)
        self.vision_model = GroupViTVisionTransformer(config)
        self.post_init()

    def get_input_embeddings(self) -> GroupViTPatchEmbeddings:
        return self.vision_model.embeddings.patch_embeddings

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Vision tower output; `None` flags (and `return_dict`) read the config."""
        _check_kwargs(kwargs, "GroupViTVisionModel.forward")
        return _vision_outputs(
            self.vision_model, pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding
        )


def _projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    # indices 0..3 are the checkpoint names: Linear, BatchNorm1d, ReLU, Linear
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


class GroupViTModel(GroupViTPreTrainedModel):
    """GroupViT: the grouping image encoder, the text encoder and their projection heads.

    Example:
        ```python
        >>> import torch
        >>> from groupvit import GroupViTConfig, GroupViTModel
        >>> model = GroupViTModel(GroupViTConfig.from_preset("groupvit-tiny")).eval()
        >>> ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407]])
        >>> out = model(input_ids=ids, pixel_values=torch.randn(2, 3, 32, 32), output_segmentation=True)
        >>> out.logits_per_image.shape, out.segmentation_logits.shape
        (torch.Size([2, 1]), torch.Size([2, 1, 32, 32]))
        ```
    """

    config: GroupViTConfig
    # checkpoints of earlier versions carry the multi-label temperature, now a parameter of the training loss
    _keys_to_ignore_on_load_unexpected = [r"^multi_label_logit_scale$"]

    def __init__(self, config: GroupViTConfig) -> None:
        super().__init__(config)
        text_config, vision_config = config.text_config, config.vision_config
        self.projection_dim = config.projection_dim
        self.text_model = GroupViTTextTransformer(text_config)
        self.vision_model = GroupViTVisionTransformer(vision_config)
        self.visual_projection = _projection_head(
            vision_config.hidden_size, config.projection_intermediate_dim, config.projection_dim
        )
        self.text_projection = _projection_head(
            text_config.hidden_size, config.projection_intermediate_dim, config.projection_dim
        )
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        # the towers read the attention implementation from their sub-configs, which `PreTrainedModel.__init__`
        # leaves unset when it picks the default (sdpa) for the top-level config
        for sub_config in (text_config, vision_config):
            if sub_config._attn_implementation is None:
                sub_config._attn_implementation_internal = config._attn_implementation
        self.post_init()

    def scaled(self, logit_scale: torch.Tensor) -> torch.Tensor:
        """`exp(logit_scale)` clamped at `config.logit_scale_max`."""
        return clamped_logit_scale(logit_scale, self.config.logit_scale_max)

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Text tower output whose `pooler_output` is the projected (not normalised) embedding `(batch, proj)`."""
        _check_kwargs(kwargs, "get_text_features")
        outputs = self.text_model(input_ids, attention_mask, position_ids, return_dict=True, **kwargs)
        outputs.pooler_output = self.text_projection(outputs.pooler_output)
        return outputs

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """Vision tower output whose `pooler_output` is the projected (not normalised) embedding `(batch, proj)`."""
        _check_kwargs(kwargs, "get_image_features")
        outputs = _vision_outputs(
            self.vision_model, pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding
        )
        outputs.pooler_output = self.visual_projection(outputs.pooler_output)
        return outputs

    def get_group_embeddings(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """Project the final segment tokens `(batch, groups, hidden)` to `(batch, groups, proj)` (not normalised)."""
        batch, groups, hidden = last_hidden_state.shape
        return self.visual_projection(last_hidden_state.reshape(batch * groups, hidden)).reshape(batch, groups, -1)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_segmentation: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> GroupViTModelOutput:
        r"""Embed images and texts and score every pair.

        Args:
            input_ids: `(text_batch, length)` CLIP token ids.
            pixel_values: `(image_batch, 3, H, W)` normalised images.
            attention_mask: `(text_batch, length)` padding mask (does not change the pooled embedding: the causal
                mask already hides the padding that follows the end-of-text token).
            position_ids: Optional text position ids.
            return_loss: Compute the image-text contrastive loss (requires `text_batch == image_batch`; caption i
                belongs to image i), gathered over processes when distributed.
            output_attentions: Return the text self-attention weights and the grouping maps (default: config).
            output_hidden_states: Return every layer's hidden states (default: config).
            output_segmentation: Return `segmentation_logits` `(image_batch, text_batch, H, W)` (default: config).
            interpolate_pos_encoding: Resize the position embedding to the input size (None: when it differs).

        Returns:
            [`GroupViTModelOutput`].
        """
        _check_kwargs(kwargs, "GroupViTModel.forward")
        if input_ids is None or pixel_values is None:
            raise ValueError("GroupViTModel.forward needs both input_ids and pixel_values")
        output_segmentation = _flag(output_segmentation, self.config.output_segmentation)
        text_attentions = _flag(output_attentions, self.config.output_attentions)
        # segmentation reads the grouping maps, which are then returned too (as the built-in does); the text
        # attentions are recorded only when asked for (recording installs hooks, a graph break under torch.compile)
        output_attentions = text_attentions or output_segmentation
        output_hidden_states = _flag(output_hidden_states, self.config.output_hidden_states)
        if output_segmentation and not any(self.config.vision_config.num_group_tokens):
            raise ValueError(
                "output_segmentation=True needs a grouping stage, but vision_config.num_group_tokens is "
                f"{self.config.vision_config.num_group_tokens}"
            )
        if return_loss and input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"return_loss=True pairs caption i with image i, but got {input_ids.shape[0]} texts and "
                f"{pixel_values.shape[0]} images"
            )

        vision_outputs = _vision_outputs(
            self.vision_model, pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding
        )
        text_outputs = self.text_model(
            input_ids,
            attention_mask,
            position_ids,
            output_attentions=text_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        image_embeds = F.normalize(self.visual_projection(vision_outputs.pooler_output), dim=-1)
        text_embeds = F.normalize(self.text_projection(text_outputs.pooler_output), dim=-1)
        logit_scale = self.scaled(self.logit_scale)
        # (text_batch, image_batch)
        logits_per_text = text_embeds @ image_embeds.t() * logit_scale
        logits_per_image = logits_per_text.t()

        segmentation_logits = None
        if output_segmentation:
            segmentation_logits = self._segmentation_logits(
                vision_outputs, text_embeds, logit_scale, pixel_values.shape[-2:]
            )
        loss = contrastive_loss(image_embeds, text_embeds, logit_scale) if return_loss else None
        return GroupViTModelOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            segmentation_logits=segmentation_logits,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )

    def _segmentation_logits(
        self,
        vision_outputs: BaseModelOutputWithPooling,
        text_embeds: torch.Tensor,
        logit_scale: torch.Tensor,
        image_size: tuple[int, int],
    ) -> torch.Tensor:
        """Soft pixel-to-group maps times scaled group-text similarities: `(image_batch, text_batch, H, W)`."""
        group_embeds = F.normalize(self.get_group_embeddings(vision_outputs.last_hidden_state), dim=-1)
        # (image_batch, groups, text_batch) -> (image_batch, text_batch, groups)
        group_logits = (group_embeds @ text_embeds.t() * logit_scale).transpose(1, 2)
        # (image_batch, groups, H, W)
        grouping = resize_grouping(chain_groupings(vision_outputs.attentions), image_size)
        batch, groups, height, width = grouping.shape
        # (image_batch, text_batch, groups) @ (image_batch, groups, H*W)
        logits = group_logits @ grouping.reshape(batch, groups, height * width).to(group_logits.dtype)
        return logits.reshape(batch, -1, height, width)


def resize_grouping(grouping: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Reshape `(batch, groups, h*w)` patch-level maps to the patch grid and resize bilinearly to `image_size`.

    The patch grid keeps the image's aspect ratio: `h = round(H / s)`, `w = N / h` with `s = sqrt(H*W / N)`.
    """
    batch, groups, num_tokens = grouping.shape
    height, width = int(image_size[0]), int(image_size[1])
    scale = math.sqrt(height * width / num_tokens)
    if height > width:
        grid_w = max(1, round(width / scale))
        grid_h = num_tokens // grid_w
    else:
        grid_h = max(1, round(height / scale))
        grid_w = num_tokens // grid_h
    grid = grouping.reshape(batch, groups, grid_h, grid_w)
    return F.interpolate(grid.float(), size=(height, width), mode="bilinear", align_corners=False)


__all__ = [
    "GroupViTModel",
    "all_gather_with_grad",
    "clamped_logit_scale",
    "contrastive_loss",
    "GroupViTModelOutput",
    "GroupViTPreTrainedModel",
    "GroupViTTextModel",
    "GroupViTVisionModel",
    "chain_groupings",
    "resize_grouping",
]
