"""Conversion of original NVlabs GroupViT checkpoints: key mapping, numerical equivalence, the conversion script.

The original layout is produced here from scratch, by a skeleton of the original modules (`models/group_vit.py`,
`models/transformer.py`, `models/multi_label_contrastive.py` in NVlabs/GroupViT) with the original attribute names
and the original's hard-coded sizes (MLP ratio 4, text heads = width // 64, projection hidden size 4096), built from
an original-style yaml dict, independently of `groupvit.hub.conversion`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from torch import nn

import groupvit
from conftest import tiny_config
from groupvit.hub.conversion import (
    ConversionError,
    OpaqueObject,
    UnsafeCheckpointError,
    config_from_original,
    convert_original_state_dict,
    load_original_checkpoint,
    plain_config,
)

ROOT = Path(__file__).resolve().parents[1]

# A tiny model in the original yaml's terms (`model:` section of configs/default.yml). Its text width is 128 so that
# the original's width // 64 gives 2 heads.
ORIGINAL_YAML_TINY = {
    "type": "MultiLabelContrastive",
    "img_encoder": {
        "type": "GroupViT",
        "embed_dim": 32,
        "num_heads": [2, 2, 2],
        "embed_factors": [1, 1, 1],
        "depths": [2, 2, 2],
        "num_group_tokens": [8, 4, 0],
        "num_output_groups": [8, 4],
        "img_size": 32,
        "patch_size": 4,
        "drop_rate": 0.0,
        "drop_path_rate": 0.0,
    },
    "text_encoder": {"type": "TextTransformer", "context_length": 77, "width": 128, "layers": 2, "vocab_size": 49408},
    "contrast_temperature": 0.07,
    "proj_num_layers": 2,
    "output_dim": 16,
    "multi_label": 3,
}
TEXT_WIDTH = 128


def original_tiny_config(**overrides) -> groupvit.GroupViTConfig:
    """Our tiny preset with the original's fixed ratios: what `ORIGINAL_YAML_TINY` describes."""
    return tiny_config(
        vision_config={"intermediate_size": 128},
        text_config={"hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 2},
        projection_intermediate_dim=4096,
        **overrides,
    )


# --------------------------------------------------------------------------------------------------------------------
# A skeleton of the original model: same module tree and parameter names, forward only where a test needs it
# --------------------------------------------------------------------------------------------------------------------


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_fuse: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        if qkv_fuse:
            self.qkv = nn.Linear(dim, dim * 3)
        else:
            self.q_proj = nn.Linear(dim, dim)
            self.k_proj = nn.Linear(dim, dim)
            self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # the original's fused self-attention path
        batch, length, channels = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, channels // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(batch, length, channels))


class AttnBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_fuse=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):  # post_norm=True: norm_q / norm_k are Identity
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_post = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_fuse=False)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * 4)


class AssignAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)


class GroupingBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_group_token: int, num_output_group: int) -> None:
        super().__init__()
        tokens_dim, channels_dim = int(0.5 * dim), int(4.0 * dim)
        self.norm_tokens = nn.LayerNorm(dim)
        self.mlp_inter = Mlp(num_group_token, tokens_dim, num_output_group)
        self.norm_post_tokens = nn.LayerNorm(dim)
        self.norm_x = nn.LayerNorm(dim)
        self.pre_assign_attn = CrossAttnBlock(dim, num_heads)
        self.assign = AssignAttention(dim)
        self.norm_new_x = nn.LayerNorm(dim)
        self.mlp_channels = Mlp(dim, channels_dim, dim)
        self.reduction = nn.Identity()


class GroupingLayer(nn.Module):
    def __init__(self, img: dict, index: int) -> None:
        super().__init__()
        dim, heads, tokens = img["embed_dim"], img["num_heads"][index], img["num_group_tokens"]
        self.blocks = nn.ModuleList([AttnBlock(dim, heads) for _ in range(img["depths"][index])])
        last = index == len(img["depths"]) - 1
        self.downsample = None if last else GroupingBlock(dim, heads, tokens[index], img["num_output_groups"][index])
        if tokens[index] > 0:
            self.group_token = nn.Parameter(torch.zeros(1, tokens[index], dim))
        self.group_projector = (
            nn.Sequential(nn.LayerNorm(dim), Mlp(tokens[index - 1], dim // 2, tokens[index]))
            if index > 0 and tokens[index] > 0
            else None
        )


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)


class GroupViT(nn.Module):
    def __init__(self, img: dict) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(img["patch_size"], img["embed_dim"])
        num_patches = (img["img_size"] // img["patch_size"]) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, img["embed_dim"]))
        self.layers = nn.ModuleList([GroupingLayer(img, i) for i in range(len(img["depths"]))])
        self.norm = nn.LayerNorm(img["embed_dim"])
        self.head = nn.Identity()


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, attn_mask: torch.Tensor) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        hidden = width * 4
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, hidden)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(hidden, width))]
            )
        )
        self.ln_2 = nn.LayerNorm(width)
        self.attn_mask = attn_mask  # a plain attribute in the original, not a buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (length, batch, width)
        x = x + self.attn(*(self.ln_1(x),) * 3, need_weights=False, attn_mask=self.attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, attn_mask: torch.Tensor) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])


class TextTransformer(nn.Module):
    def __init__(self, context_length: int, width: int, layers: int, vocab_size: int) -> None:
        super().__init__()
        mask = torch.empty(context_length, context_length).fill_(float("-inf")).triu_(1)
        self.transformer = Transformer(width, layers, width // 64, mask)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.ln_final = nn.LayerNorm(width)
        self.token_embedding = nn.Embedding(vocab_size, width)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(text) + self.positional_embedding
        x = self.transformer.resblocks(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)]


class ProjectMLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, inner_dim: int = 4096) -> None:
        super().__init__()
        self.linear_hidden = nn.Sequential(
            nn.Conv1d(in_dim, inner_dim, kernel_size=1), nn.BatchNorm1d(inner_dim), nn.ReLU(inplace=True)
        )
        self.linear_out = nn.Conv1d(inner_dim, out_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, channels)
        return self.linear_out(self.linear_hidden(x.unsqueeze(-1))).squeeze(-1)


class MultiLabelContrastive(nn.Module):
    def __init__(self, img_encoder: dict, text_encoder: dict, output_dim: int, multi_label: int, **_) -> None:
        super().__init__()
        self.img_encoder = GroupViT(img_encoder)
        text = {key: value for key, value in text_encoder.items() if key != "type"}
        self.text_encoder = TextTransformer(**text)
        self.img_projector = ProjectMLP(img_encoder["embed_dim"], output_dim)
        self.text_projector = ProjectMLP(text_encoder["width"], output_dim)
        self.logit_scale = nn.Parameter(torch.ones([]) * 2.6593)
        if multi_label > 0:
            self.multi_label_logit_scale = nn.Parameter(torch.ones([]) * 2.6593)


def make_original(seed: int = 0, **changes) -> MultiLabelContrastive:
    """The original model for `ORIGINAL_YAML_TINY` (with `changes`), every parameter and BN statistic randomised."""
    model = MultiLabelContrastive(**{**ORIGINAL_YAML_TINY, **changes})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * (0.1 if "embedding" in name else 0.2))
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
            elif name.endswith("num_batches_tracked"):
                buffer.fill_(1234)
    return model.eval()


@pytest.fixture(scope="module")
def config() -> groupvit.GroupViTConfig:
    return original_tiny_config()


@pytest.fixture(scope="module")
def original() -> MultiLabelContrastive:
    return make_original()


@pytest.fixture(scope="module")
def converted_model(config, original) -> groupvit.GroupViTModel:
    model = groupvit.GroupViTModel(config)
    model.load_state_dict(convert_original_state_dict(original.state_dict(), config), strict=True)
    return model.eval()


# --------------------------------------------------------------------------------------------------------------------
# Key mapping
# --------------------------------------------------------------------------------------------------------------------


def test_original_layout_has_the_documented_names(original):
    keys = set(original.state_dict())
    for key in (
        "img_encoder.layers.0.blocks.1.attn.qkv.weight",
        "img_encoder.layers.1.group_projector.1.fc2.bias",
        "img_encoder.layers.0.downsample.pre_assign_attn.attn.proj.weight",
        "img_encoder.layers.1.downsample.assign.proj.weight",
        "text_encoder.transformer.resblocks.1.attn.in_proj_weight",
        "text_encoder.positional_embedding",
        "img_projector.linear_hidden.1.num_batches_tracked",
        "text_projector.linear_out.weight",
        "multi_label_logit_scale",
    ):
        assert key in keys, key
    assert original.state_dict()["img_projector.linear_out.weight"].ndim == 3


def test_converted_state_dict_loads_strictly_and_keeps_every_value(config, original, converted_model):
    sd = original.state_dict()
    ours = converted_model.state_dict()
    assert set(ours) == set(convert_original_state_dict(sd, config))
    # every original value went somewhere but the multi-label temperature (1 scalar, a training-loss parameter)
    assert sum(t.numel() for t in sd.values()) - 1 == sum(t.numel() for t in ours.values())
    img, stages = "img_encoder.layers", "vision_model.encoder.stages"
    res, layers = "text_encoder.transformer.resblocks", "text_model.encoder.layers"
    pre = "downsample.pre_assign_attn"
    renames = {
        "img_encoder.patch_embed.proj.weight": "vision_model.embeddings.patch_embeddings.projection.weight",
        "img_encoder.patch_embed.norm.bias": "vision_model.embeddings.layernorm.bias",
        "img_encoder.pos_embed": "vision_model.embeddings.position_embeddings",
        f"{img}.0.blocks.1.norm1.weight": f"{stages}.0.layers.1.layer_norm1.weight",
        f"{img}.0.blocks.0.norm2.bias": f"{stages}.0.layers.0.layer_norm2.bias",
        f"{img}.2.blocks.0.mlp.fc2.bias": f"{stages}.2.layers.0.mlp.fc2.bias",
        f"{img}.1.blocks.0.attn.proj.weight": f"{stages}.1.layers.0.self_attn.out_proj.weight",
        f"{img}.1.group_token": f"{stages}.1.group_token",
        f"{img}.1.group_projector.0.weight": f"{stages}.1.group_projector.0.weight",
        f"{img}.1.group_projector.1.fc1.weight": f"{stages}.1.group_projector.1.fc1.weight",
        f"{img}.0.downsample.norm_tokens.weight": f"{stages}.0.downsample.norm_tokens.weight",
        f"{img}.0.downsample.mlp_inter.fc1.weight": f"{stages}.0.downsample.mlp_inter.fc1.weight",
        f"{img}.0.downsample.norm_post_tokens.bias": f"{stages}.0.downsample.norm_post_tokens.bias",
        f"{img}.0.downsample.norm_x.weight": f"{stages}.0.downsample.norm_x.weight",
        f"{img}.0.{pre}.attn.q_proj.weight": f"{stages}.0.{pre}.attn.q_proj.weight",
        f"{img}.0.{pre}.attn.proj.bias": f"{stages}.0.{pre}.attn.out_proj.bias",
        f"{img}.0.{pre}.norm_post.weight": f"{stages}.0.{pre}.norm_post.weight",
        f"{img}.1.{pre}.norm2.bias": f"{stages}.1.{pre}.norm2.bias",
        f"{img}.1.{pre}.mlp.fc1.weight": f"{stages}.1.{pre}.mlp.fc1.weight",
        f"{img}.1.downsample.assign.proj.weight": f"{stages}.1.downsample.assign.proj.weight",
        f"{img}.1.downsample.assign.k_proj.bias": f"{stages}.1.downsample.assign.k_proj.bias",
        f"{img}.1.downsample.norm_new_x.weight": f"{stages}.1.downsample.norm_new_x.weight",
        f"{img}.1.downsample.mlp_channels.fc2.weight": f"{stages}.1.downsample.mlp_channels.fc2.weight",
        "img_encoder.norm.weight": "vision_model.layernorm.weight",
        "text_encoder.token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "text_encoder.positional_embedding": "text_model.embeddings.position_embedding.weight",
        f"{res}.0.ln_1.weight": f"{layers}.0.layer_norm1.weight",
        f"{res}.1.ln_2.bias": f"{layers}.1.layer_norm2.bias",
        f"{res}.0.mlp.c_fc.weight": f"{layers}.0.mlp.fc1.weight",
        f"{res}.0.mlp.c_proj.weight": f"{layers}.0.mlp.fc2.weight",
        f"{res}.0.attn.out_proj.bias": f"{layers}.0.self_attn.out_proj.bias",
        "text_encoder.ln_final.weight": "text_model.final_layer_norm.weight",
        "img_projector.linear_hidden.1.running_var": "visual_projection.1.running_var",
        "text_projector.linear_hidden.1.num_batches_tracked": "text_projection.1.num_batches_tracked",
        "text_projector.linear_hidden.0.bias": "text_projection.0.bias",
        "logit_scale": "logit_scale",
    }
    for old, new in renames.items():
        torch.testing.assert_close(ours[new], sd[old], rtol=0, atol=0, msg=f"{old} -> {new}")
    assert int(ours["visual_projection.1.num_batches_tracked"]) == 1234
    torch.testing.assert_close(ours["visual_projection.3.weight"], sd["img_projector.linear_out.weight"][..., 0])


def test_fused_qkv_split_equals_fused_linear(original, converted_model):
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    fused = original.img_encoder.layers[1].blocks[0].attn.qkv
    ours = converted_model.vision_model.encoder.stages[1].layers[0].self_attn
    q, k, v = fused(x).chunk(3, dim=-1)
    torch.testing.assert_close(ours.q_proj(x), q)
    torch.testing.assert_close(ours.k_proj(x), k)
    torch.testing.assert_close(ours.v_proj(x), v)


def test_vision_block_matches_original_attn_block(original, converted_model):
    # (batch, image tokens + group tokens, hidden), through one block with the fused-qkv original forward
    x = torch.randn(2, 64 + 8, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = original.img_encoder.layers[0].blocks[1](x)
        got = converted_model.vision_model.encoder.stages[0].layers[1](x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_text_attention_matches_multihead_attention(config, original, converted_model):
    length = 12
    x = torch.randn(3, length, TEXT_WIDTH, generator=torch.Generator().manual_seed(2))
    mha = original.text_encoder.transformer.resblocks[1].attn
    causal = torch.full((length, length), float("-inf")).triu(1)
    with torch.no_grad():
        # nn.MultiheadAttention is (length, batch, width)
        expected = mha(*(x.transpose(0, 1),) * 3, attn_mask=causal, need_weights=False)[0].transpose(0, 1)
        ours = converted_model.text_model.encoder.layers[1].self_attn
        got = ours(x, attention_mask=causal[None, None])[0]  # additive mask (batch, heads, q, k)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_text_tower_and_projector_match_original(original, converted_model):
    # full-length sequences as the original requires: SOT, words, EOT (the largest id), zero padding
    input_ids = torch.zeros(2, 77, dtype=torch.long)
    input_ids[0, :5] = torch.tensor([49406, 320, 1125, 2368, 49407])
    input_ids[1, :7] = torch.tensor([49406, 320, 1125, 539, 320, 1929, 49407])
    with torch.no_grad():
        expected = original.text_projector(original.text_encoder(input_ids))
        got = converted_model.get_text_features(input_ids=input_ids).pooler_output
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_conv1d_projector_equals_linear_projection(original, converted_model):
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        # Conv1d and Linear accumulate 4096 products in different orders: float32 rounding only
        torch.testing.assert_close(
            converted_model.visual_projection(x), original.img_projector(x), rtol=1e-4, atol=1e-4
        )
        conv = original.text_projector.linear_out
        inner = torch.randn(4, conv.in_channels, generator=torch.Generator().manual_seed(4))
        got, expected = converted_model.text_projection[3](inner), conv(inner[..., None])[..., 0]
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_wrapped_checkpoint_with_module_prefix(config, original):
    sd = original.state_dict()
    wrapped = {"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 29, "optimizer": {}}
    a, b = convert_original_state_dict(wrapped, config), convert_original_state_dict(sd, config)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_converted_tensors_are_independent_and_contiguous(config, original):
    converted = convert_original_state_dict(original.state_dict(), config)
    q = converted["text_model.encoder.layers.0.self_attn.q_proj.weight"]
    k = converted["text_model.encoder.layers.0.self_attn.k_proj.weight"]
    assert q.is_contiguous() and q.untyped_storage().data_ptr() != k.untyped_storage().data_ptr()


def test_multi_label_scale_is_dropped_it_belongs_to_the_training_loss(config, original):
    assert "multi_label_logit_scale" in original.state_dict()
    converted = convert_original_state_dict(original.state_dict(), config)
    assert "multi_label_logit_scale" not in converted
    groupvit.GroupViTModel(config).load_state_dict(converted, strict=True)


def test_checkpoint_without_multi_label_scale_converts_to_the_same_keys(config, original):
    # a GCC+RedCaps-like checkpoint (trained without the multi-label loss) has no such temperature
    without = convert_original_state_dict(make_original(multi_label=0).state_dict(), config)
    assert without.keys() == convert_original_state_dict(original.state_dict(), config).keys()


def test_unmapped_missing_and_mismatched_keys_are_listed(config, original):
    sd = dict(original.state_dict())
    sd["img_encoder.extra_head.weight"] = torch.zeros(2)
    del sd["img_encoder.norm.weight"]
    with pytest.raises(ConversionError) as info:
        convert_original_state_dict(sd, config)
    assert info.value.unmapped == ["img_encoder.extra_head.weight"]
    assert info.value.missing == ["vision_model.layernorm.weight"]
    assert "img_encoder.extra_head.weight" in str(info.value) and "vision_model.layernorm.weight" in str(info.value)

    with pytest.raises(ConversionError) as info:
        convert_original_state_dict(original.state_dict(), original_tiny_config(projection_dim=8))
    assert ("visual_projection.3.weight", (16, 4096), (8, 4096)) in info.value.mismatched


# --------------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------------

# configs/default.yml (model part) with the GCC+YFCC child's data.text_aug.multi_label
ORIGINAL_YAML_S = {
    "data": {"img_aug": {"img_size": 224}, "text_aug": {"multi_label": 3}},
    "model": {
        "type": "MultiLabelContrastive",
        "img_encoder": {
            "type": "GroupViT",
            "embed_dim": 384,
            "num_heads": [6, 6, 6],
            "embed_factors": [1, 1, 1],
            "depths": [6, 3, 3],
            "num_group_tokens": [64, 8, 0],
            "num_output_groups": [64, 8],
            "drop_rate": 0.0,
            "drop_path_rate": 0.1,
        },
        "text_encoder": {
            "type": "TextTransformer",
            "context_length": 77,
            "width": 256,
            "layers": 12,
            "vocab_size": 49408,
        },
        "contrast_temperature": 0.07,
        "proj_num_layers": 2,
        "output_dim": 256,
        "multi_label": "${data.text_aug.multi_label}",
    },
}


def _architecture(config: groupvit.GroupViTConfig) -> dict:
    values = config.to_dict()
    for key in ("transformers_version", "logit_scale_init_value"):
        values.pop(key, None)
    return values


def test_config_from_original_yaml_is_groupvit_s():
    config = config_from_original(ORIGINAL_YAML_S)
    assert _architecture(config) == _architecture(groupvit.GroupViTConfig.from_preset("groupvit-s"))
    assert config.vision_config.num_output_groups == [64, 8, 8]
    assert config.logit_scale_init_value == pytest.approx(2.6593, abs=1e-4)


def test_config_from_original_keeps_loss_settings_out_of_the_model_config():
    redcaps = {**ORIGINAL_YAML_S, "data": {"text_aug": {"multi_label": 0}}}
    config = config_from_original(redcaps)
    assert _architecture(config) == _architecture(config_from_original(ORIGINAL_YAML_S))
    assert "multi_label_loss_weight" not in config.to_dict()


def test_config_from_original_tiny_matches_preset(config):
    assert _architecture(config_from_original(ORIGINAL_YAML_TINY)) == _architecture(config)
    assert config_from_original({"model": ORIGINAL_YAML_TINY}).vision_config.hard_assignment is True


@pytest.mark.parametrize(
    "change, message",
    [
        ({"embed_factors": [1, 2, 2]}, "embed_factors"),
        ({"num_heads": [2, 4, 4]}, "num_heads"),
        ({"patch_norm": False}, "patch_norm"),
        ({"mlp_ratio": 2.0}, "mlp_ratio"),
    ],
)
def test_config_from_original_rejects_what_it_cannot_express(change, message):
    original = {**ORIGINAL_YAML_TINY, "img_encoder": {**ORIGINAL_YAML_TINY["img_encoder"], **change}}
    with pytest.raises(ValueError, match=message):
        config_from_original(original)


# --------------------------------------------------------------------------------------------------------------------
# Loading and the script
# --------------------------------------------------------------------------------------------------------------------


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "convert_original_checkpoint", ROOT / "scripts" / "convert_original_checkpoint.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return _load_script()


class CustomObject:  # anything outside torch's weights_only allowlist
    def __init__(self, value: int) -> None:
        self.value = value


def test_script_end_to_end(tmp_path, script, config, original, converted_model):
    checkpoint = tmp_path / "group_vit_tiny.pth"
    torch.save({"model": original.state_dict(), "config": {"model": ORIGINAL_YAML_TINY}, "epoch": 29}, checkpoint)
    out = tmp_path / "converted"
    rc = script.main(["--checkpoint", str(checkpoint), "--output", str(out), "--repo_id", "me/groupvit-tiny"])
    assert rc == 0
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "processor_config.json", "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".pth")) for name in files)

    loaded = groupvit.GroupViTModel.from_pretrained(out).eval()
    for key, value in converted_model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert json.loads((out / "config.json").read_text())["vision_config"]["depths"] == [2, 2, 2]
    processor = groupvit.GroupViTProcessor.from_pretrained(out)
    assert processor.image_processor.crop_size["height"] == 32
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and "me/groupvit-tiny" in card.text

    # refuses to overwrite
    assert script.main(["--checkpoint", str(checkpoint), "--output", str(out)]) == 1


def test_script_config_sources(tmp_path, script, original, config):
    checkpoint = tmp_path / "weights_only.pth"
    torch.save(original.state_dict(), checkpoint)  # a bare state dict, no config inside
    original_yaml = tmp_path / "tiny.yml"
    original_yaml.write_text(json.dumps({"model": ORIGINAL_YAML_TINY}))  # JSON is valid YAML
    ours = tmp_path / "config.json"
    config.to_json_file(ours)
    for name, config_file in (("a", original_yaml), ("b", ours)):
        argv = ["--checkpoint", str(checkpoint), "--output", str(tmp_path / name), "--config", str(config_file)]
        assert script.main(argv) == 0
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    # without any config the script falls back to GroupViT-S, which these tiny weights do not fit
    assert script.main(["--checkpoint", str(checkpoint), "--output", str(tmp_path / "c")]) == 1
    assert not (tmp_path / "c").exists()


def test_read_config_file_follows_base(tmp_path, script):
    (tmp_path / "default.yml").write_text(
        "model:\n  output_dim: 256\n  img_encoder:\n    embed_dim: 384\n    depths: [6, 3, 3]\n"
    )
    (tmp_path / "child.yml").write_text("_base_: 'default.yml'\nmodel:\n  img_encoder:\n    depths: [2, 2, 2]\n")
    data = script.read_config_file(tmp_path / "child.yml")
    assert data["model"] == {"output_dim": 256, "img_encoder": {"embed_dim": 384, "depths": [2, 2, 2]}}


def test_pickled_objects_give_a_clear_error(tmp_path, script, original, caplog):
    checkpoint = tmp_path / "with_object.pth"
    torch.save({"model": original.state_dict(), "config": CustomObject(3)}, checkpoint)
    with pytest.raises(UnsafeCheckpointError, match="CustomObject") as info:
        load_original_checkpoint(checkpoint)
    assert "arbitrary code" in str(info.value) and "--opaque_objects" in str(info.value)

    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        assert script.main(["--checkpoint", str(checkpoint), "--output", str(out)]) == 1
    assert "only full unpickling could rebuild" in caplog.text
    assert not out.exists()


def _fake_omegaconf(monkeypatch) -> dict[str, type]:
    """Stand-ins with OmegaConf's module paths and pickled state layout (`_content`, `_val`, `_parent`)."""
    classes = {}
    for module_name, class_name in (("omegaconf.dictconfig", "DictConfig"), ("omegaconf.nodes", "AnyNode")):
        module = types.ModuleType(module_name)
        cls = type(class_name, (), {"__module__": module_name})
        setattr(module, class_name, cls)
        monkeypatch.setitem(sys.modules, module_name, module)
        classes[class_name] = cls
    monkeypatch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
    return classes


def _to_fake_omegaconf(value, classes, parent=None):
    if isinstance(value, dict):
        node = classes["DictConfig"]()
        node.__dict__.update(_parent=parent, _metadata=None)
        node._content = {k: _to_fake_omegaconf(v, classes, node) for k, v in value.items()}
        return node
    leaf = classes["AnyNode"]()
    leaf.__dict__.update(_val=value, _parent=parent)
    return leaf


def test_opaque_objects_load_an_omegaconf_style_config(tmp_path, script, config, monkeypatch):
    original = make_original(multi_label=0)  # a RedCaps-like checkpoint: no multi-label temperature
    stored = {
        "data": {"text_aug": {"multi_label": 0}},
        "model": {**ORIGINAL_YAML_TINY, "multi_label": "${data.text_aug.multi_label}"},
    }
    checkpoint = tmp_path / "omegaconf.pth"
    with monkeypatch.context() as patch:
        classes = _fake_omegaconf(patch)
        torch.save({"model": original.state_dict(), "config": _to_fake_omegaconf(stored, classes)}, checkpoint)
    # the stand-in classes are gone: loading cannot import them, it can only use placeholders
    assert getattr(sys.modules.get("omegaconf.dictconfig"), "DictConfig", None) is not classes["DictConfig"]

    with pytest.raises(UnsafeCheckpointError, match="omegaconf.dictconfig.DictConfig"):
        load_original_checkpoint(checkpoint)
    loaded = load_original_checkpoint(checkpoint, opaque_objects=True)
    assert isinstance(loaded["config"], OpaqueObject)
    assert plain_config(loaded["config"])["model"]["output_dim"] == 16

    out = tmp_path / "out"
    assert script.main(["--checkpoint", str(checkpoint), "--output", str(out), "--opaque_objects"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert "multi_label_loss_weight" not in saved
