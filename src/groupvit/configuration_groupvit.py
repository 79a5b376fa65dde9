"""GroupViT configurations: text tower, vision tower, joint model, and named presets.

Field names and defaults match the `config.json` of the GroupViT checkpoints on the Hub (`nvidia/groupvit-gcc-yfcc`,
`nvidia/groupvit-gcc-redcaps`), so those files load unchanged. The configurations describe the architecture only;
the training objective (multi-label loss, its temperature, the group-diversity term) is part of the run configuration
(`groupvit.training.config.LossArguments`). Fields that transformers' built-in GroupViT does not have (stochastic
depth, assignment options, `logit_scale_max`) are kept by the built-in config as plain attributes.

Validation follows transformers 5.x: `huggingface_hub`'s `@strict` checks each field's type (`Literal` fields
included) and runs the `validate_*` methods at construction; a bad value raises
`huggingface_hub.errors.StrictDataclassClassValidationError` / `StrictDataclassFieldValidationError` whose message
names the field (the original `ValueError` is its `__cause__`). A vision config whose `hidden_size` is not divisible
by `num_attention_heads` (e.g. `GroupViTVisionConfig(hidden_size=32)` with the default 6 heads) is rejected here,
at config time; the built-in accepts the config and fails when the model is built.
"""

from __future__ import annotations

import json
import logging
import math
from importlib import resources
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

logger = logging.getLogger(__name__)

# Loss settings that older versions of this package stored in `config.json`; they now belong to the run
# configuration and are dropped (with a log line) when such a config is loaded.
LEGACY_LOSS_FIELDS = (
    "multi_label_loss_weight",
    "multi_label_target",
    "multi_label_group_pooling",
    "group_diversity_loss_weight",
    "group_diversity_marginal",
    "group_diversity_usage",
)


def _check_positive(config: PreTrainedConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or math.isinf(value):
            raise ValueError(f"{type(config).__name__}.{name} must be a positive finite number, got {value!r}")


def _check_non_negative(config: PreTrainedConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            raise ValueError(f"{type(config).__name__}.{name} must be a finite number >= 0, got {value!r}")


def _check_common(config: PreTrainedConfig) -> None:
    """Checks shared by both towers: heads divide the width, eps > 0, dropouts are probabilities, known activation."""
    _check_heads(config)
    _check_positive(config, "layer_norm_eps")
    _check_non_negative(config, "initializer_range", "initializer_factor")
    for name in ("dropout", "attention_dropout"):
        value = getattr(config, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{type(config).__name__}.{name} must be in [0, 1], got {value!r}")
    if config.hidden_act not in ACT2FN:
        raise ValueError(f"{type(config).__name__}.hidden_act {config.hidden_act!r} is not one of {sorted(ACT2FN)}")


def _check_heads(config: PreTrainedConfig) -> None:
    if config.hidden_size % config.num_attention_heads != 0:
        raise ValueError(
            f"{type(config).__name__}.hidden_size ({config.hidden_size}) must be divisible by num_attention_heads "
            f"({config.num_attention_heads})"
        )


@strict
class GroupViTTextConfig(PreTrainedConfig):
    r"""Configuration of the CLIP-style text transformer of GroupViT.

    Args:
        vocab_size: Size of the CLIP BPE vocabulary.
        hidden_size: Width of the text transformer.
        intermediate_size: Hidden size of the MLP in each layer.
        num_hidden_layers: Number of transformer layers.
        num_attention_heads: Number of attention heads.
        max_position_embeddings: Context length (77 for CLIP).
        hidden_act: MLP activation (`"quick_gelu"` as in CLIP).
        layer_norm_eps: LayerNorm epsilon.
        dropout: Dropout probability (unused by the paper).
        attention_dropout: Dropout on attention probabilities.
        initializer_range: Std of the token embedding init.
        initializer_factor: Multiplier of every init std (kept for Hub compatibility).
        pad_token_id: Padding token id.
        bos_token_id: Start-of-text id (49406).
        eos_token_id: End-of-text id (49407); the text embedding is read at its first occurrence.

    Example:
        ```python
        >>> from groupvit import GroupViTTextConfig
        >>> GroupViTTextConfig(hidden_size=64, num_attention_heads=2).hidden_size
        64
        ```
    """

    model_type = "groupvit_text_model"
    base_config_key = "text_config"

    vocab_size: int = 49408
    hidden_size: int = 256
    intermediate_size: int = 1024
    num_hidden_layers: int = 12
    num_attention_heads: int = 4
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    dropout: float | int = 0.0
    attention_dropout: float | int = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    pad_token_id: int | None = 1
    bos_token_id: int | None = 49406
    eos_token_id: int | list[int] | None = 49407

    def validate_architecture(self) -> None:
        """Part of `@strict` validation: sizes are positive, heads divide the width, dropouts are probabilities."""
        _check_positive(
            self,
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "max_position_embeddings",
        )
        _check_common(self)


@strict
class GroupViTVisionConfig(PreTrainedConfig):
    r"""Configuration of the grouping vision transformer.

    Args:
        hidden_size: Width of every stage (384 for GroupViT-S).
        intermediate_size: Hidden size of the transformer MLPs.
        num_hidden_layers: Total number of transformer layers; must equal `sum(depths)`.
        depths: Transformer layers per stage.
        num_group_tokens: Learnable group tokens per stage (0: the stage has no grouping block).
        num_output_groups: Output segments of each stage's grouping block. The Hub config lists a value for the last,
            group-free stage too; it is unused.
        num_attention_heads: Attention heads of every self- and cross-attention.
        image_size: Training resolution; other sizes work through position-embedding interpolation.
        patch_size: Patch size of the convolutional patch embedding.
        num_channels: Input channels.
        hidden_act: Activation of every MLP.
        layer_norm_eps: LayerNorm epsilon.
        dropout: Dropout after the embeddings.
        attention_dropout: Dropout on attention probabilities.
        initializer_range: Std of the truncated-normal init of Linear layers, position embedding and group tokens.
        initializer_factor: Kept for Hub compatibility.
        assign_eps: Added to the per-group token count when averaging assigned tokens.
        assign_mlp_ratio: Ratios (token-mixing, channel) of the grouping block's two MLPs.
        drop_path_rate: Stochastic depth, linear from 0 to this value over all transformer layers (paper: 0.1).
        hard_assignment: Use the straight-through one-hot assignment (paper) instead of the soft one.
        gumbel: Add Gumbel noise to the assignment logits while training (paper).
        gumbel_tau: Gumbel-softmax temperature (paper: 1.0).

    Example:
        ```python
        >>> from groupvit import GroupViTVisionConfig
        >>> GroupViTVisionConfig(depths=[2, 2], num_group_tokens=[8, 0], num_output_groups=[8, 8]).num_hidden_layers
        4
        ```
    """

    model_type = "groupvit_vision_model"
    base_config_key = "vision_config"

    hidden_size: int = 384
    intermediate_size: int = 1536
    num_hidden_layers: int | None = None
    depths: list[int] | tuple[int, ...] = (6, 3, 3)
    num_group_tokens: list[int] | tuple[int, ...] = (64, 8, 0)
    num_output_groups: list[int] | tuple[int, ...] = (64, 8, 8)
    num_attention_heads: int = 6
    image_size: int | list[int] | tuple[int, int] = 224
    patch_size: int | list[int] | tuple[int, int] = 16
    num_channels: int = 3
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    dropout: float | int = 0.0
    attention_dropout: float | int = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    assign_eps: float = 1.0
    assign_mlp_ratio: list[float | int] | tuple[float | int, ...] = (0.5, 4)
    drop_path_rate: float = 0.1
    hard_assignment: bool = True
    gumbel: bool = True
    gumbel_tau: float = 1.0

    def __post_init__(self, **kwargs: Any) -> None:
        self.depths = list(self.depths)
        self.num_group_tokens = list(self.num_group_tokens)
        self.num_output_groups = list(self.num_output_groups)
        self.assign_mlp_ratio = list(self.assign_mlp_ratio)
        if self.num_hidden_layers is None:
            self.num_hidden_layers = sum(self.depths)
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        """Part of `@strict` validation: stage lists agree, sizes are positive, the Gumbel temperature is finite."""
        _check_positive(self, "hidden_size", "intermediate_size", "num_attention_heads", "num_channels", "gumbel_tau")
        _check_non_negative(self, "assign_eps")
        _check_common(self)
        if not (len(self.depths) == len(self.num_group_tokens) == len(self.num_output_groups)):
            raise ValueError(
                "GroupViTVisionConfig: depths, num_group_tokens and num_output_groups must have the same length, got "
                f"depths={self.depths}, num_group_tokens={self.num_group_tokens}, "
                f"num_output_groups={self.num_output_groups}"
            )
        if not self.depths or any(d <= 0 for d in self.depths):
            raise ValueError(
                f"GroupViTVisionConfig.depths must be a non-empty list of positive ints, got {self.depths}"
            )
        if self.num_hidden_layers != sum(self.depths):
            raise ValueError(
                f"GroupViTVisionConfig.num_hidden_layers ({self.num_hidden_layers}) must equal sum(depths) "
                f"({sum(self.depths)})"
            )
        if any(g < 0 for g in self.num_group_tokens) or any(o < 0 for o in self.num_output_groups):
            raise ValueError(
                f"GroupViTVisionConfig: group counts must be >= 0, got num_group_tokens={self.num_group_tokens}, "
                f"num_output_groups={self.num_output_groups}"
            )
        for i, (tokens, outputs) in enumerate(zip(self.num_group_tokens, self.num_output_groups, strict=True)):
            if tokens > 0 and outputs <= 0:
                raise ValueError(
                    f"GroupViTVisionConfig.num_output_groups[{i}] must be positive when stage {i} has group tokens, "
                    f"got {outputs}"
                )
        if len(self.assign_mlp_ratio) != 2 or any(r <= 0 for r in self.assign_mlp_ratio):
            raise ValueError(
                f"GroupViTVisionConfig.assign_mlp_ratio must be two positive ratios, got {self.assign_mlp_ratio}"
            )
        sizes = (self.image_size, self.patch_size)
        for name, value in zip(("image_size", "patch_size"), sizes, strict=True):
            values = value if isinstance(value, list | tuple) else [value]
            if any(v <= 0 for v in values):
                raise ValueError(f"GroupViTVisionConfig.{name} must be positive, got {value!r}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"GroupViTVisionConfig.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")


@strict
class GroupViTConfig(PreTrainedConfig):
    r"""Configuration of the joint GroupViT model (vision tower, text tower, projection heads, temperatures).

    Args:
        text_config: Dict or [`GroupViTTextConfig`].
        vision_config: Dict or [`GroupViTVisionConfig`].
        projection_dim: Output size of both projection heads.
        projection_intermediate_dim: Hidden size of the projection MLPs (with BatchNorm).
        logit_scale_init_value: Initial log inverse temperature, ln(1/0.07).
        initializer_range: Kept for Hub compatibility.
        initializer_factor: Kept for Hub compatibility.
        output_segmentation: Return segmentation logits by default.
        logit_scale_max: Upper clamp of `exp(logit_scale)` (the original uses 100; transformers' built-in does not
            clamp, which only differs once the scale has grown past 100 during training).

    Example:
        ```python
        >>> from groupvit import GroupViTConfig
        >>> config = GroupViTConfig.from_preset("groupvit-tiny")
        >>> config.vision_config.depths
        [2, 2, 2]
        ```
    """

    model_type = "groupvit"
    sub_configs_defaults = {"text_config": GroupViTTextConfig, "vision_config": GroupViTVisionConfig}

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    projection_dim: int = 256
    projection_intermediate_dim: int = 4096
    logit_scale_init_value: float = 2.6592
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    output_segmentation: bool = False
    logit_scale_max: float = 100.0

    def __post_init__(self, **kwargs: Any) -> None:
        # Older Hub configs (e.g. nvidia/groupvit-gcc-yfcc) also carry `text_config_dict`/`vision_config_dict`;
        # their values win, as in transformers' built-in config.
        for key in ("text_config", "vision_config"):
            legacy = kwargs.pop(f"{key}_dict", None)
            if legacy:
                current = getattr(self, key)
                current = current.to_dict() if isinstance(current, PreTrainedConfig) else dict(current or {})
                setattr(self, key, {**current, **legacy})
        if __name__.startswith("groupvit."):
            # A pushed repo declares its pipeline for users without the package (`trust_remote_code=True`); with the
            # package installed the task is registered already, and transformers' pipeline() would otherwise insist
            # on remote code. The repo's own copy of this module (not named `groupvit.*`) keeps the entry.
            kwargs.pop("custom_pipelines", None)
        legacy = sorted(key for key in LEGACY_LOSS_FIELDS if kwargs.pop(key, None) is not None)
        if legacy:
            logger.info("Ignoring loss settings %s: they belong to the run configuration, not the model", legacy)
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        """Part of `@strict` validation: projection sizes and the logit-scale clamp are positive and finite."""
        _check_positive(self, "projection_dim", "projection_intermediate_dim", "logit_scale_max")
        _check_non_negative(self, "initializer_range", "initializer_factor")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GroupViTConfig:
        """Build a configuration from a named preset (see `available_presets()`).

        Args:
            name: Preset name, e.g. `"groupvit-s"` (the paper's GroupViT-S) or `"groupvit-tiny"` (tests, demo).
            **overrides: Top-level fields to override; `text_config`/`vision_config` dicts are merged key by key.

        Returns:
            The configuration.
        """
        presets = available_presets()
        if name not in presets:
            raise ValueError(f"Unknown GroupViT preset {name!r}; available: {sorted(presets)}")
        values = json.loads((resources.files("groupvit") / "presets" / f"{name}.json").read_text())
        return cls(**_merged(values, overrides))

    def with_overrides(self, **overrides: Any) -> GroupViTConfig:
        """A copy with `overrides` applied as in `from_preset` (`text_config`/`vision_config` merged key by key).

        Example:
            >>> config = GroupViTConfig.from_preset("groupvit-tiny")
            >>> changed = config.with_overrides(logit_scale_max=50.0, vision_config={"gumbel": False})
            >>> changed.logit_scale_max, changed.vision_config.gumbel, changed.vision_config.depths
            (50.0, False, [2, 2, 2])
        """
        return type(self)(**_merged(self.to_dict(), overrides))


def _merged(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`values` updated with `overrides`; the sub-config dicts are merged key by key."""
    values, overrides = dict(values), dict(overrides)
    for key in ("text_config", "vision_config"):
        if key in overrides:
            values[key] = {**values.get(key, {}), **overrides.pop(key)}
    values.update(overrides)
    return values


def available_presets() -> list[str]:
    """Names of the bundled configuration presets."""
    folder = resources.files("groupvit") / "presets"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


__all__ = ["LEGACY_LOSS_FIELDS", "GroupViTConfig", "GroupViTTextConfig", "GroupViTVisionConfig", "available_presets"]
