"""GroupViT: a grouping vision transformer and a CLIP-style text transformer trained with text supervision.

Read top-down: output dataclasses, the assignment functions, embeddings, attention and MLP blocks, transformer layers,
the grouping block, stages and encoders, the pretrained base class, and the public models.

Parameter names and shapes equal those of `transformers.GroupViTModel`, so checkpoints move between the two without
conversion. What differs from the built-in model:
- self- and cross-attention go through transformers' attention interface (`attn_implementation="sdpa"` by default);
- stochastic depth, Gumbel/hard assignment options and the original's initialisation are used in training;
- `exp(logit_scale)` is clamped at `config.logit_scale_max` (100, as in the original);
- `segmentation_logits` apply the logit scale once (the built-in applies it twice);
- `return_loss=True` computes the paper's losses (`groupvit.training.losses`), with a cross-process gather and the
multi-label
  contrastive loss when prompt texts are given.
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
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from groupvit.training.losses import group_diversity_loss, groupvit_loss

from .configuration_groupvit import GroupViTConfig, GroupViTTextConfig, GroupViTVisionConfig

# --------------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class GroupViTModelOutput(ModelOutput):
    """Output of [`GroupViTModel`].

    Args:
        loss: Total training loss `()`, when `return_loss=True`.
        logits_per_image: `(image_batch, text_batch)` scaled cosine similarities.
        logits_per_text: `(text_batch, image_batch)`, the transpose.
        segmentation_logits: `(image_batch, text_batch, height, width)` per-pixel text similarities, when
            `output_segmentation=True`; the logit scale is applied once.
        text_embeds: `(text_batch, projection_dim)` L2-normalised text embeddings.
        image_embeds: `(image_batch, projection_dim)` L2-normalised image embeddings.
        text_model_output: Output of the text transformer.
        vision_model_output: Output of the vision transformer; its `attentions` are the soft grouping maps
            `(image_batch, num_output_groups, num_input_tokens)` of each grouping stage.
        itc_loss: Image-text contrastive part of `loss`.
        multi_label_loss: Multi-label (noun prompt) contrastive part of `loss`, when prompts were given.
        group_diversity_loss: Anti-collapse term (unweighted), when `config.group_diversity_loss_weight > 0`.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    segmentation_logits: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None
    itc_loss: torch.FloatTensor | None = None
    multi_label_loss: torch.FloatTensor | None = None
    group_diversity_loss: torch.FloatTensor | None = None

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
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.self_attn(self.layer_norm1(hidden_states), attention_mask, **kwargs)
        hidden_states = hidden_states + self.drop_path(attn_output)
        hidden_states = hidden_states + self.drop_path(self.mlp(self.layer_norm2(hidden_states)))
        return hidden_states, attn_weights


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
                hidden_states = layer(hidden_states)[0]
            return hidden_states, None, None

        # (1, G, C) -> (batch, G, C)
        group_tokens = self.group_token.expand(hidden_states.shape[0], -1, -1)
        if self.group_projector is not None:
            group_tokens = group_tokens + self.group_projector(prev_group_tokens)
        num_image_tokens = hidden_states.shape[1]
        # (batch, N + G, C): image tokens first, group tokens last
        hidden_states = torch.cat([hidden_states, group_tokens], dim=1)
        for layer in self.layers:
            hidden_states = layer(hidden_states)[0]
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
    """Stack of causal transformer layers."""

    def __init__(self, config: GroupViTTextConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([GroupViTEncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, weights = layer(hidden_states, attention_mask, is_causal=True)
            if output_attentions:
                all_attentions += (weights,)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )


# --------------------------------------------------------------------------------------------------------------------
# Towers
# --------------------------------------------------------------------------------------------------------------------


class GroupViTTextTransformer(nn.Module):
    """CLIP text transformer: embeddings, causal layers, final LayerNorm, pooling at the end-of-text token."""

    def __init__(self, config: GroupViTTextConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = GroupViTTextEmbeddings(config)
        self.encoder = GroupViTTextEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutputWithPooling:
        if input_ids is None:
            raise ValueError("input_ids are required")
        if input_ids.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"input_ids must be an integer tensor, got dtype {input_ids.dtype}")
        input_ids = input_ids.view(-1, input_ids.shape[-1])
        hidden_states = self.embeddings(input_ids, position_ids)
        mask = create_causal_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask, cache=None
        )
        encoder_outputs = self.encoder(hidden_states, mask, output_attentions, output_hidden_states)
        last_hidden_state = self.final_layer_norm(encoder_outputs.last_hidden_state)

        if self.config.eos_token_id == 2:
            # legacy configs: CLIP's end-of-text token has the largest id, so pool at the argmax
            eot_positions = input_ids.to(torch.int).argmax(dim=-1)
        else:
            # first end-of-text token (padding may use the same id)
            eot_positions = (input_ids == self.config.eos_token_id).to(torch.int).argmax(dim=-1)
        # (batch, hidden)
        pooled = last_hidden_state[torch.arange(last_hidden_state.shape[0], device=input_ids.device), eot_positions]
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=pooled,
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )


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
        pixel_values: torch.Tensor,
        output_hidden_states: bool = False,
        interpolate_pos_encoding: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        if pixel_values is None:
            raise ValueError("pixel_values are required")
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
            if module.multi_label_logit_scale is not None:
                init.constant_(module.multi_label_logit_scale, self.config.logit_scale_init_value)


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

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        return self.text_model(
            input_ids,
            attention_mask,
            position_ids,
            output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states),
        )


class GroupViTVisionModel(GroupViTPreTrainedModel):
    """The GroupViT vision tower alone (no projection head); `attentions` are the soft grouping maps.

    Example:
        ```python
        >>> import torch
        >>> from groupvit import GroupViTConfig, GroupViTVisionModel
        >>> model = GroupViTVisionModel(GroupViTConfig.from_preset("groupvit-tiny").vision_config).eval()
        >>> out = model(torch.randn(1, 3, 32, 32))
        >>> out.last_hidden_state.shape, [a.shape for a in out.attentions]
        (torch.Size([1, 4, 32]), [torch.Size([1, 8, 64]), torch.Size([1, 4, 8])])
        ```
    """

    config: GroupViTVisionConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)

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
    ) -> BaseModelOutputWithPooling:
        outputs = self.vision_model(pixel_values, bool(output_hidden_states), interpolate_pos_encoding)
        if not output_attentions:
            outputs.attentions = None
        return outputs


def _projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    # indices 0..3 are the checkpoint names: Linear, BatchNorm1d, ReLU, Linear
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


def chain_groupings(groupings: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Multiply the stages' soft assignments through: `(batch, G1, N) ... (batch, Gk, G_{k-1})` -> `(batch, Gk, N)`."""
    chained = groupings[0]
    for grouping in groupings[1:]:
        # (batch, Gk, G_{k-1}) @ (batch, G_{k-1}, N)
        chained = grouping @ chained
    return chained


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
    _keys_to_ignore_on_load_missing = ["multi_label_logit_scale"]

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
        self.multi_label_logit_scale = (
            nn.Parameter(torch.tensor(config.logit_scale_init_value)) if config.multi_label_loss_weight > 0 else None
        )
        # the towers read the attention implementation from their sub-configs, which `PreTrainedModel.__init__`
        # leaves unset when it picks the default (sdpa) for the top-level config
        for sub_config in (text_config, vision_config):
            if sub_config._attn_implementation is None:
                sub_config._attn_implementation_internal = config._attn_implementation
        self.post_init()

    def scaled(self, logit_scale: torch.Tensor) -> torch.Tensor:
        """`exp(logit_scale)` clamped at `config.logit_scale_max`."""
        return logit_scale.exp().clamp(max=self.config.logit_scale_max)

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPooling:
        """Text tower output whose `pooler_output` is the projected (not normalised) embedding `(batch, proj)`."""
        outputs = self.text_model(input_ids, attention_mask, position_ids)
        outputs.pooler_output = self.text_projection(outputs.pooler_output)
        return outputs

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool | None = None
    ) -> BaseModelOutputWithPooling:
        """Vision tower output whose `pooler_output` is the projected (not normalised) embedding `(batch, proj)`."""
        outputs = self.vision_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
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
        prompt_input_ids: torch.LongTensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        prompt_noun_ids: torch.LongTensor | None = None,
        interpolate_pos_encoding: bool | None = None,
    ) -> GroupViTModelOutput:
        r"""Embed images and texts and score every pair.

        Args:
            input_ids: `(text_batch, length)` CLIP token ids.
            pixel_values: `(image_batch, 3, H, W)` normalised images.
            attention_mask: `(text_batch, length)` padding mask (does not change the pooled embedding: the causal
                mask already hides the padding that follows the end-of-text token).
            position_ids: Optional text position ids.
            return_loss: Compute the paper's training loss (requires `text_batch == image_batch`; caption i belongs to
                image i).
            output_attentions: Return the text self-attention weights and the grouping maps.
            output_hidden_states: Return every layer's hidden states.
            output_segmentation: Return `segmentation_logits` `(image_batch, text_batch, H, W)`.
            prompt_input_ids: `(image_batch, K, length)` noun prompts for the multi-label loss (used with
                `return_loss`; they are encoded together with the captions, as in the original).
            prompt_attention_mask: `(image_batch, K, length)` padding mask of the prompts.
            prompt_noun_ids: `(image_batch, K)` noun ids of the prompts (-1 for padding), for
                `config.multi_label_target="semantic"`.
            interpolate_pos_encoding: Resize the position embedding to the input size (None: when it differs).

        Returns:
            [`GroupViTModelOutput`].
        """
        output_segmentation = (
            output_segmentation if output_segmentation is not None else self.config.output_segmentation
        )
        output_attentions = bool(output_attentions or output_segmentation)
        output_hidden_states = bool(output_hidden_states)
        if input_ids is None or pixel_values is None:
            raise ValueError("GroupViTModel.forward needs both input_ids and pixel_values")
        num_texts = input_ids.shape[0]

        text_ids, text_mask = input_ids, attention_mask
        if return_loss and prompt_input_ids is not None:
            text_ids, text_mask = self._append_prompts(
                input_ids, attention_mask, prompt_input_ids, prompt_attention_mask
            )

        vision_outputs = self.vision_model(pixel_values, output_hidden_states, interpolate_pos_encoding)
        text_outputs = self.text_model(text_ids, text_mask, position_ids, output_attentions, output_hidden_states)

        image_embeds = self.visual_projection(vision_outputs.pooler_output)
        all_text_embeds = self.text_projection(text_outputs.pooler_output)
        text_embeds = all_text_embeds[:num_texts]

        image_embeds_n = F.normalize(image_embeds, dim=-1)
        text_embeds_n = F.normalize(text_embeds, dim=-1)
        logit_scale = self.scaled(self.logit_scale)
        # (text_batch, image_batch)
        logits_per_text = text_embeds_n @ image_embeds_n.t() * logit_scale
        logits_per_image = logits_per_text.t()

        segmentation_logits = None
        if output_segmentation:
            segmentation_logits = self._segmentation_logits(
                vision_outputs, text_embeds_n, logit_scale, pixel_values.shape[-2:]
            )

        loss = itc_loss = multi_label_loss = diversity_loss = None
        if return_loss:
            prompt_embeds = None
            if prompt_input_ids is not None:
                # (image_batch * K, proj) -> (image_batch, K, proj)
                prompt_embeds = all_text_embeds[num_texts:].reshape(num_texts, prompt_input_ids.shape[1], -1)
            group_embeds = None
            if prompt_embeds is not None and self.config.multi_label_group_pooling == "max":
                # (image_batch, groups, proj)
                group_embeds = self.get_group_embeddings(vision_outputs.last_hidden_state)
            losses = groupvit_loss(
                image_embeds,
                text_embeds,
                self.logit_scale,
                prompt_embeds=prompt_embeds,
                multi_label_logit_scale=self.multi_label_logit_scale,
                multi_label_weight=self.config.multi_label_loss_weight,
                multi_label_image_embeds=group_embeds,
                multi_label_target=self.config.multi_label_target,
                noun_ids=prompt_noun_ids if self.config.multi_label_target == "semantic" else None,
                max_logit_scale=self.config.logit_scale_max,
            )
            loss, itc_loss, multi_label_loss = losses.loss, losses.itc_loss, losses.multi_label_loss
            if self.config.group_diversity_loss_weight > 0 and vision_outputs.attentions:
                diversity_loss = group_diversity_loss(
                    vision_outputs.attentions,
                    self.config.group_diversity_marginal,
                    self.config.group_diversity_usage,
                )
                loss = loss + self.config.group_diversity_loss_weight * diversity_loss

        if not output_attentions:
            vision_outputs.attentions = None
        if output_segmentation or not output_attentions:
            text_outputs.attentions = text_outputs.attentions if output_attentions else None
        if text_ids is not input_ids:
            text_outputs = BaseModelOutputWithPooling(
                last_hidden_state=text_outputs.last_hidden_state[:num_texts],
                pooler_output=text_outputs.pooler_output[:num_texts],
            )
        return GroupViTModelOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            segmentation_logits=segmentation_logits,
            text_embeds=text_embeds_n,
            image_embeds=image_embeds_n,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
            itc_loss=itc_loss,
            multi_label_loss=multi_label_loss,
            group_diversity_loss=diversity_loss,
        )

    def _append_prompts(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        prompt_input_ids: torch.Tensor,
        prompt_attention_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stack captions `(B, L)` and prompts `(B, K, L')` into one text batch `(B + B*K, max(L, L'))`."""
        if prompt_input_ids.ndim != 3 or prompt_input_ids.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"prompt_input_ids must have shape (batch={input_ids.shape[0]}, K, length), "
                f"got {tuple(prompt_input_ids.shape)}"
            )
        prompts = prompt_input_ids.reshape(-1, prompt_input_ids.shape[-1])
        prompt_mask = None if prompt_attention_mask is None else prompt_attention_mask.reshape(prompts.shape)
        length = max(input_ids.shape[1], prompts.shape[1])
        pad_id = self.config.text_config.eos_token_id
        pad_id = pad_id if isinstance(pad_id, int) else 0

        def pad(ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            mask = torch.ones_like(ids) if mask is None else mask
            extra = length - ids.shape[1]
            return F.pad(ids, (0, extra), value=pad_id), F.pad(mask, (0, extra), value=0)

        ids_a, mask_a = pad(input_ids, attention_mask)
        ids_b, mask_b = pad(prompts, prompt_mask)
        return torch.cat([ids_a, ids_b]), torch.cat([mask_a, mask_b])

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
    "GroupViTModelOutput",
    "GroupViTPreTrainedModel",
    "GroupViTTextModel",
    "GroupViTVisionModel",
    "chain_groupings",
    "resize_grouping",
]
