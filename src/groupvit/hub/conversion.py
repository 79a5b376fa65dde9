"""Conversion of the original NVlabs GroupViT checkpoints (`group_vit_gcc_*_30e-*.pth`) to this package's format.

The original model (`models/multi_label_contrastive.py` `MultiLabelContrastive` in NVlabs/GroupViT) stores its
weights under different names, with the vision attention's q/k/v fused into one `qkv` Linear, the text attention in
`nn.MultiheadAttention`'s packed `in_proj_*`, and the projection heads as `Conv1d(kernel_size=1)` layers. The functions
here rename, split and squeeze those tensors into the names of [`GroupViTModel`] (which are transformers' built-in
GroupViT names) and check the result against the model's own state-dict layout, so that nothing is silently dropped or
left at its random init.

The conversion functions are pure (tensors in, tensors out). [`load_original_checkpoint`] is the only function that
touches the disk; it never unpickles arbitrary Python objects.

Example:
    ```python
    >>> from groupvit import GroupViTModel
    >>> from groupvit.hub.conversion import (
    ...     config_from_original, convert_original_state_dict, load_original_checkpoint, plain_config
    ... )
    >>> path = "group_vit_gcc_redcap_30e-3dd09a76.pth"
    >>> checkpoint = load_original_checkpoint(path, opaque_objects=True)  # doctest: +SKIP
    >>> config = config_from_original(plain_config(checkpoint["config"]))  # doctest: +SKIP
    >>> model = GroupViTModel(config)  # doctest: +SKIP
    >>> model.load_state_dict(convert_original_state_dict(checkpoint, config), strict=True)  # doctest: +SKIP
    ```
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from groupvit.configuration_groupvit import GroupViTConfig

logger = logging.getLogger(__name__)

__all__ = [
    "ConversionError",
    "OpaqueObject",
    "UnsafeCheckpointError",
    "config_from_original",
    "convert_original_state_dict",
    "expected_state_dict_shapes",
    "load_original_checkpoint",
    "plain_config",
    "unwrap_original_state_dict",
]

# Keys of the original that hold the weights inside a training checkpoint, in the order they are tried.
_WEIGHT_KEYS = ("model", "state_dict")
# How many offending keys an error message lists before it says "... and N more".
_MAX_LISTED = 25


class ConversionError(ValueError):
    """The original state dict does not map one-to-one onto [`GroupViTModel`]'s parameters.

    Attributes:
        unmapped: Original keys that no rule maps.
        missing: Keys of our model that the converted state dict lacks.
        unexpected: Converted keys that our model does not have (e.g. for another configuration).
        mismatched: `(key, converted shape, expected shape)` for tensors whose shapes differ.
    """

    def __init__(
        self,
        unmapped: Iterable[str] = (),
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
        hint: str = "",
    ) -> None:
        self.unmapped = sorted(unmapped)
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
        parts = ["The original GroupViT state dict does not match the target configuration."]
        for title, items in (
            ("original keys that no rule maps", self.unmapped),
            ("keys missing from the converted state dict", self.missing),
            ("converted keys the model does not have", self.unexpected),
        ):
            if items:
                parts.append(f"{len(items)} {title}: {_listing(items)}")
        if self.mismatched:
            shapes = [f"{key}: got {tuple(got)}, expected {tuple(want)}" for key, got, want in self.mismatched]
            parts.append(f"{len(shapes)} shape mismatches: {_listing(shapes)}")
        if hint:
            parts.append(hint)
        super().__init__("\n".join(parts))


class UnsafeCheckpointError(ValueError):
    """The checkpoint holds Python objects that only a full (code-executing) unpickling could rebuild."""


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown if len(items) <= _MAX_LISTED else f"{shown}, ... and {len(items) - _MAX_LISTED} more"


# --------------------------------------------------------------------------------------------------------------------
# Key mapping
# --------------------------------------------------------------------------------------------------------------------

# A rule maps a full original key (regex, matched with `fullmatch`) to one target key template (a plain rename) or to
# three templates (a fused q/k/v tensor split in row thirds). `{n}` in a template is the n-th regex group.
_Q_K_V = ("q_proj", "k_proj", "v_proj")
_STAGE = r"img_encoder\.layers\.(\d+)"
_BLOCK = _STAGE + r"\.blocks\.(\d+)"
_TO_STAGE = "vision_model.encoder.stages.{0}"
_TO_LAYER = _TO_STAGE + ".layers.{1}"
_RESBLOCK = r"text_encoder\.transformer\.resblocks\.(\d+)"
_TO_TEXT_LAYER = "text_model.encoder.layers.{0}"
_BLOCK_RENAMES = {"norm1": "layer_norm1", "norm2": "layer_norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_RESBLOCK_RENAMES = {
    "attn.out_proj": "self_attn.out_proj",
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_PROJECTORS = {"img_projector": "visual_projection", "text_projector": "text_projection"}
_BN_TENSORS = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

_RENAMES: list[tuple[str, str]] = [
    # vision embeddings and final norm
    (r"img_encoder\.patch_embed\.proj\.(weight|bias)", "vision_model.embeddings.patch_embeddings.projection.{0}"),
    (r"img_encoder\.patch_embed\.norm\.(weight|bias)", "vision_model.embeddings.layernorm.{0}"),
    (r"img_encoder\.pos_embed", "vision_model.embeddings.position_embeddings"),
    (r"img_encoder\.norm\.(weight|bias)", "vision_model.layernorm.{0}"),
    # vision transformer blocks (the fused qkv is a split rule below)
    (_BLOCK + r"\.attn\.proj\.(weight|bias)", _TO_LAYER + ".self_attn.out_proj.{2}"),
    *[
        (_BLOCK + rf"\.{re.escape(old)}\.(weight|bias)", _TO_LAYER + f".{new}.{{2}}")
        for old, new in _BLOCK_RENAMES.items()
    ],
    # group tokens, group projector (LayerNorm + token-mixing MLP) and grouping block
    (_STAGE + r"\.group_token", _TO_STAGE + ".group_token"),
    (_STAGE + r"\.group_projector\.(0|1\.fc1|1\.fc2)\.(weight|bias)", _TO_STAGE + ".group_projector.{1}.{2}"),
    (
        _STAGE + r"\.downsample\.pre_assign_attn\.attn\.proj\.(weight|bias)",
        _TO_STAGE + ".downsample.pre_assign_attn.attn.out_proj.{1}",
    ),
    (
        _STAGE + r"\.downsample\.("
        r"norm_tokens|norm_post_tokens|norm_x|norm_new_x|mlp_inter\.fc[12]|mlp_channels\.fc[12]"
        r"|pre_assign_attn\.attn\.[qkv]_proj|pre_assign_attn\.(?:norm2|norm_post|mlp\.fc[12])"
        r"|assign\.(?:[qkv]_proj|proj)"
        r")\.(weight|bias)",
        _TO_STAGE + ".downsample.{1}.{2}",
    ),
    # text tower
    (r"text_encoder\.token_embedding\.weight", "text_model.embeddings.token_embedding.weight"),
    (r"text_encoder\.positional_embedding", "text_model.embeddings.position_embedding.weight"),
    *[
        (_RESBLOCK + rf"\.{re.escape(old)}\.(weight|bias)", _TO_TEXT_LAYER + f".{new}.{{1}}")
        for old, new in _RESBLOCK_RENAMES.items()
    ],
    (r"text_encoder\.ln_final\.(weight|bias)", "text_model.final_layer_norm.{0}"),
    # projection heads: Conv1d(k=1) -> Linear at index 0 and 3, BatchNorm1d at 1 (index 2 is the ReLU)
    *[(rf"{old}\.linear_hidden\.0\.(weight|bias)", f"{new}.0.{{0}}") for old, new in _PROJECTORS.items()],
    *[(rf"{old}\.linear_hidden\.1\.{_BN_TENSORS}", f"{new}.1.{{0}}") for old, new in _PROJECTORS.items()],
    *[(rf"{old}\.linear_out\.(weight|bias)", f"{new}.3.{{0}}") for old, new in _PROJECTORS.items()],
    # temperatures
    (r"logit_scale", "logit_scale"),
    (r"multi_label_logit_scale", "multi_label_logit_scale"),
]

_SPLITS: list[tuple[str, str]] = [
    # AttnBlock's fused Linear(C, 3C): rows are [q; k; v] (the forward reshapes to (B, N, 3, heads, head_dim)).
    (_BLOCK + r"\.attn\.qkv\.(weight|bias)", _TO_LAYER + ".self_attn.{proj}.{2}"),
    # nn.MultiheadAttention's packed in_proj: rows are [q; k; v] as well.
    (_RESBLOCK + r"\.attn\.in_proj_(weight|bias)", _TO_TEXT_LAYER + ".self_attn.{proj}.{1}"),
]

_COMPILED_RENAMES = [(re.compile(pattern), target) for pattern, target in _RENAMES]
_COMPILED_SPLITS = [(re.compile(pattern), target) for pattern, target in _SPLITS]


def _squeeze_conv1d(key: str, tensor: torch.Tensor) -> torch.Tensor:
    # Conv1d(kernel_size=1) weight (out, in, 1) -> Linear weight (out, in)
    if key.endswith(".weight") and ("visual_projection." in key or "text_projection." in key) and tensor.ndim == 3:
        if tensor.shape[-1] != 1:
            raise ConversionError(mismatched=[(key, tuple(tensor.shape), (*tensor.shape[:2], 1))])
        return tensor.squeeze(-1)
    return tensor


def _convert_key(key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]] | None:
    """Converted `(key, tensor)` pairs of one original entry, or None when no rule applies."""
    for pattern, target in _COMPILED_SPLITS:
        match = pattern.fullmatch(key)
        if match:
            if tensor.shape[0] % 3 != 0:
                raise ConversionError(mismatched=[(key, tuple(tensor.shape), (3 * (tensor.shape[0] // 3),))])
            # (3 * hidden, ...) -> three (hidden, ...) row blocks: q, k, v
            chunks = tensor.chunk(3, dim=0)
            return [
                (target.format(*match.groups(), proj=proj), chunk) for proj, chunk in zip(_Q_K_V, chunks, strict=True)
            ]
    for pattern, target in _COMPILED_RENAMES:
        match = pattern.fullmatch(key)
        if match:
            new_key = target.format(*match.groups())
            return [(new_key, _squeeze_conv1d(new_key, tensor))]
    return None


# --------------------------------------------------------------------------------------------------------------------
# State dict conversion
# --------------------------------------------------------------------------------------------------------------------


def unwrap_original_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Return the tensors of an original checkpoint, with any `module.` (DistributedDataParallel) prefix removed.

    Args:
        checkpoint: Either the state dict itself, or a training checkpoint with the weights under `"model"` (the
            NVlabs layout, next to `optimizer`, `lr_scheduler`, `config`, ...) or `"state_dict"`.

    Returns:
        The state dict, keyed by the original parameter names.
    """
    state_dict: Mapping[str, Any] = checkpoint
    for key in _WEIGHT_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            state_dict = checkpoint[key]
            break
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(
                unmapped=[key], hint=f"{key!r} is a {type(value).__name__}, not a tensor; is this a state dict?"
            )
        tensors[key.removeprefix("module.")] = value
    return tensors


def expected_state_dict_shapes(config: GroupViTConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of every persistent tensor of a [`GroupViTModel`] built from `config` (no memory is allocated).

    Args:
        config: The target configuration.

    Returns:
        A mapping from state-dict key to shape.
    """
    from accelerate import init_empty_weights

    from groupvit.modeling_groupvit import GroupViTModel

    with init_empty_weights():
        model = GroupViTModel(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def convert_original_state_dict(
    original: Mapping[str, Any], config: GroupViTConfig, *, check: bool = True
) -> dict[str, torch.Tensor]:
    """Map an original NVlabs GroupViT state dict to [`GroupViTModel`]'s parameter names.

    Renames every tensor per the table in the module source, splits the vision blocks' fused `qkv` and the text
    blocks' `in_proj_*` in row thirds into `q_proj`/`k_proj`/`v_proj`, squeezes the projection heads' `Conv1d` weights
    from `(out, in, 1)` to `(out, in)`, and carries the BatchNorm running statistics. `multi_label_logit_scale` is
    dropped: the multi-label temperature belongs to the training loss (`groupvit.training.losses`), not the model.

    Args:
        original: The original state dict, or a training checkpoint holding it under `"model"`; keys may carry a
            `module.` prefix.
        config: The configuration of the target model.
        check: Compare the result with the target model's keys and shapes and raise on any difference.

    Returns:
        A new state dict (contiguous tensors that share no memory) that loads into `GroupViTModel(config)` with
        `strict=True`.

    Raises:
        ConversionError: If original keys are left unmapped or, with `check`, if target keys are missing, unexpected
            or of the wrong shape. The error lists the offending keys.
    """
    state_dict = unwrap_original_state_dict(original)
    converted: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, tensor in state_dict.items():
        pairs = _convert_key(key, tensor)
        if pairs is None:
            unmapped.append(key)
            continue
        for new_key, new_tensor in pairs:
            converted[new_key] = new_tensor.detach().clone().contiguous()

    if "multi_label_logit_scale" in converted:
        logger.info("Dropping multi_label_logit_scale: the multi-label temperature is part of the training loss.")
        del converted["multi_label_logit_scale"]

    if unmapped and not check:
        raise ConversionError(unmapped=unmapped)
    if check:
        expected = expected_state_dict_shapes(config)
        missing = set(expected) - set(converted)
        unexpected = set(converted) - set(expected)
        mismatched = [
            (key, tuple(converted[key].shape), shape)
            for key, shape in expected.items()
            if key in converted and tuple(converted[key].shape) != shape
        ]
        if unmapped or missing or unexpected or mismatched:
            raise ConversionError(unmapped, missing, unexpected, mismatched)
    return converted


# --------------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{([^}]+)\}")


def _resolve(value: Any, root: Mapping[str, Any]) -> Any:
    """Resolve an OmegaConf-style `${a.b.c}` reference (the whole value) against `root`."""
    if isinstance(value, str):
        match = _INTERPOLATION.fullmatch(value.strip())
        if match:
            node: Any = root
            for part in match.group(1).split("."):
                if not isinstance(node, Mapping) or part not in node:
                    raise ValueError(f"cannot resolve {value!r} in the original configuration")
                node = node[part]
            return _resolve(node, root)
    return value


def _uniform(name: str, values: Any) -> Any:
    values = list(values) if isinstance(values, list | tuple) else [values]
    if len(set(values)) != 1:
        raise ValueError(
            f"original {name}={values} differs between stages; this GroupViT implementation uses one value for all "
            "stages"
        )
    return values[0]


def config_from_original(model_cfg: Mapping[str, Any], **overrides: Any) -> GroupViTConfig:
    """Build a [`GroupViTConfig`] from the original repository's configuration.

    Reads the `model:` section of the original yaml (`configs/default.yml` and its `group_vit_gcc_*_30e.yml`
    children): `img_encoder` (`embed_dim`, `embed_factors`, `depths`, `num_heads`, `num_group_tokens`,
    `num_output_groups`, `patch_size`, `img_size`, `in_chans`, `mlp_ratio`, `drop_rate`, `attn_drop_rate`,
    `drop_path_rate`, `hard_assignment`, `qkv_bias`, `patch_norm`), `text_encoder` (`width`, `layers`,
    `context_length`, `vocab_size`), `output_dim`, `proj_num_layers` and `contrast_temperature`. Missing entries
    take the original code's defaults (GroupViT-S); `multi_label` and `multi_label_loss_weight` are training
    settings (the run configuration's `loss:` block), not part of the model configuration.

    The original hard-codes what its yaml cannot set, and so does this function: text heads = `width // 64`, MLP
    ratio 4 in the text blocks and the grouping blocks' cross-attention, projection heads 2 layers with 4096 hidden
    units.

    Args:
        model_cfg: The `model` section, or the whole configuration (with `model` and, for `${...}` references such
            as `multi_label: ${data.text_aug.multi_label}` and the image size, `data`).
        **overrides: Top-level [`GroupViTConfig`] fields to set on top.

    Returns:
        The configuration.

    Raises:
        ValueError: If the original configuration describes an architecture this implementation cannot express
            (per-stage widths or head counts, an MLP ratio other than 4, no patch norm, no qkv bias, a projection
            head depth other than 2), or a `${...}` reference does not resolve.
    """
    root: Mapping[str, Any] = model_cfg
    model = model_cfg.get("model", model_cfg)
    if not isinstance(model, Mapping):
        raise ValueError(f"original configuration 'model' must be a mapping, got {type(model).__name__}")

    def get(section: Mapping[str, Any], key: str, default: Any) -> Any:
        return _resolve(section.get(key, default), root)

    img = model.get("img_encoder") or {}
    text = model.get("text_encoder") or {}
    for section, expected_type in ((img, "GroupViT"), (text, "TextTransformer")):
        kind = section.get("type", expected_type)
        if kind != expected_type:
            raise ValueError(f"unsupported original encoder type {kind!r} (expected {expected_type!r})")

    if any(factor != 1 for factor in get(img, "embed_factors", [1, 1, 1])):
        raise ValueError("original img_encoder.embed_factors must all be 1 (one width for every stage)")
    for key in ("qkv_bias", "patch_norm"):
        if not get(img, key, True):
            raise ValueError(f"original img_encoder.{key}=False is not supported")
    if int(get(model, "proj_num_layers", 2)) != 2:
        raise ValueError("only 2-layer projection heads (proj_num_layers=2) are supported")
    if float(get(img, "mlp_ratio", 4.0)) != 4.0:
        # the original's grouping blocks use a fixed 4x MLP; ours share intermediate_size with the transformer layers
        raise ValueError("original img_encoder.mlp_ratio must be 4 (the grouping blocks' MLP ratio is fixed at 4)")

    depths = [int(d) for d in get(img, "depths", [6, 3, 3])]
    num_group_tokens = [int(g) for g in get(img, "num_group_tokens", [64, 8, 0])]
    num_output_groups = [int(g) for g in get(img, "num_output_groups", [64, 8])]
    # The original lists one value per grouping block (stages - 1); ours has one per stage, the last one unused.
    num_output_groups += [num_output_groups[-1]] * (len(depths) - len(num_output_groups))
    embed_dim = int(get(img, "embed_dim", 384))
    img_size = get(img, "img_size", None)
    if img_size is None:
        img_size = (root.get("data", {}).get("img_aug", {}) or {}).get("img_size", 224)
    hard = bool(get(img, "hard_assignment", True))
    vision_config = {
        "hidden_size": embed_dim,
        "intermediate_size": 4 * embed_dim,
        "num_attention_heads": int(_uniform("img_encoder.num_heads", get(img, "num_heads", [6, 6, 6]))),
        "depths": depths,
        "num_group_tokens": num_group_tokens,
        "num_output_groups": num_output_groups,
        "image_size": int(_resolve(img_size, root)),
        "patch_size": int(get(img, "patch_size", 16)),
        "num_channels": int(get(img, "in_chans", 3)),
        "dropout": float(get(img, "drop_rate", 0.0)),
        "attention_dropout": float(get(img, "attn_drop_rate", 0.0)),
        "drop_path_rate": float(get(img, "drop_path_rate", 0.1)),
        "hard_assignment": hard,
        "gumbel": hard,  # the original passes gumbel=hard_assignment to every GroupingBlock
    }

    width = int(get(text, "width", 256))
    text_config = {
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "num_hidden_layers": int(get(text, "layers", 12)),
        "num_attention_heads": width // 64,
        "max_position_embeddings": int(get(text, "context_length", 77)),
        "vocab_size": int(get(text, "vocab_size", 49408)),
    }

    temperature = float(get(model, "contrast_temperature", 0.07))
    values: dict[str, Any] = {
        "vision_config": vision_config,
        "text_config": text_config,
        "projection_dim": int(get(model, "output_dim", 256)),
        "projection_intermediate_dim": 4096,
        "logit_scale_init_value": math.log(1.0 / temperature),
    }
    values.update(overrides)
    return GroupViTConfig(**values)


# --------------------------------------------------------------------------------------------------------------------
# Loading without unpickling code
# --------------------------------------------------------------------------------------------------------------------


class OpaqueObject:
    """Inert stand-in for a Python object found in a checkpoint (e.g. the OmegaConf training config).

    It records the constructor arguments and the pickled state and runs no code of the original class.

    Attributes:
        qualname: The `module.name` the pickle referred to.
        args: Positional arguments the pickle passed to the class.
        state: The state the pickle passed to `__setstate__`.
    """

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self.qualname}>"


def _opaque_class(qualname: str) -> type[OpaqueObject]:
    return type(qualname.rsplit(".", 1)[-1], (OpaqueObject,), {"qualname": qualname})


def _unsafe_globals(path: str | os.PathLike) -> list[str]:
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy (non-zip) files cannot be disassembled statically
        return []


def load_original_checkpoint(path: str | os.PathLike, *, opaque_objects: bool = False) -> dict[str, Any]:
    """Load an original `.pth` checkpoint with `torch.load(..., weights_only=True)`; never fully unpickle it.

    Full unpickling can execute arbitrary code from the file, so it is never used. The NVlabs training checkpoints
    also store their OmegaConf config object, which `weights_only` loading refuses; with `opaque_objects=True`
    every such class is replaced by an inert [`OpaqueObject`] (listed statically from the file before loading), so
    the tensors load and the config can still be read with [`plain_config`].

    Args:
        path: The `.pth` file.
        opaque_objects: Load objects of non-allowlisted classes as [`OpaqueObject`]s instead of failing.

    Returns:
        The loaded object (a dict; the weights are under `"model"` for training checkpoints).

    Raises:
        UnsafeCheckpointError: If the file needs classes outside PyTorch's `weights_only` allowlist and
            `opaque_objects` is False, or refers to a module that PyTorch blocks outright.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = _unsafe_globals(path)
        if not opaque_objects or not unsafe:
            names = f" ({', '.join(unsafe)})" if unsafe else ""
            raise UnsafeCheckpointError(
                f"{os.fspath(path)} contains Python objects{names} that only full unpickling could rebuild, and full "
                "unpickling can run arbitrary code, so it is not done. Either re-save the weights alone in an "
                "environment you trust (torch.save({'model': torch.load(path, weights_only=False)['model']}, ...)), "
                "or load the file with opaque_objects=True (--opaque_objects in the script) to read the tensors and "
                f"replace those objects with inert placeholders. PyTorch said: {str(error).splitlines()[0]}"
            ) from error
        stand_ins = [(_opaque_class(name), name) for name in unsafe]
        logger.warning("Loading %s with inert placeholders for: %s", os.fspath(path), ", ".join(unsafe))
        try:
            with torch.serialization.safe_globals(stand_ins):
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as second_error:
            raise UnsafeCheckpointError(
                f"{os.fspath(path)} cannot be loaded with weights_only=True even with placeholders: {second_error}"
            ) from second_error
    if not isinstance(checkpoint, Mapping):
        raise UnsafeCheckpointError(f"{os.fspath(path)} holds a {type(checkpoint).__name__}, not a dict")
    return dict(checkpoint)


def plain_config(value: Any) -> Any:
    """Turn a loaded config (plain dicts/lists, or an OmegaConf object loaded as [`OpaqueObject`]s) into plain data.

    OmegaConf containers pickle their children under `_content` and leaf nodes their value under `_val`; those are
    followed. Anything else opaque is returned unchanged.

    Args:
        value: The `"config"` entry of a loaded checkpoint.

    Returns:
        Nested dicts, lists and scalars where the structure could be recovered.
    """
    return _plain(value, depth=0)


def _plain(value: Any, depth: int) -> Any:
    if depth > 64:
        raise ValueError("configuration is nested too deeply")
    if isinstance(value, OpaqueObject):
        state = value.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], Mapping):
            state = state[0]  # (dict state, slot state)
        if isinstance(state, Mapping):
            for field in ("_content", "_val"):
                if field in state:
                    return _plain(state[field], depth + 1)
        return value
    if isinstance(value, Mapping):
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value]
    return value
