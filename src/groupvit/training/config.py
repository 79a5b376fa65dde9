"""The run configuration of a pretraining run: data, optimisation, loss settings, checkpoints, Hub push.

A run file is YAML or JSON with the fields of `TrainingConfig` (the `data:` block holds `DataArguments`, the `loss:`
block `LossArguments`: the objective lives here, not in the model config that is saved with every checkpoint);
`load_training_config` reads one and applies dotted overrides, `validate_config` checks every field before a step runs.
"""

import dataclasses
import glob
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from groupvit.configuration_groupvit import available_presets
from groupvit.data.nouns import get_noun_extractor, get_templates

# Choices of loss options, shared with the loss terms (`groupvit.training.losses`) that take them.
MultiLabelTarget = Literal["instance", "semantic"]
GroupPooling = Literal["mean", "max"]
DenseNounBackprop = Literal["head", "image", "image_text"]

REFERENCE_BATCH_SIZE = 4096


@dataclass
class DataArguments:
    """Where the image-caption pairs come from and how they are augmented.

    Args:
        source: `"synthetic"`, `"webdataset"` or `"hf"` (a `datasets` dataset). None (the default): `"hf"` when
            `dataset` is set, `"webdataset"` when `train_shards` is, else `"synthetic"`. A source that contradicts
            a set `dataset`/`train_shards` is an error, never a silent choice.
        train_shards: Webdataset shard pattern(s), brace-expandable (`"data/shard-{000000..000099}.tar"`).
        dataset: `datasets` source: a Hub id, a `save_to_disk` folder, an imagefolder directory, or parquet/arrow.
        split: Split of `dataset`.
        streaming: Stream `dataset` instead of loading it.
        image_column: Image column of `dataset`.
        text_column: Caption column of `dataset`.
        synthetic_preset: Preset of `groupvit.data.synthetic` for `source="synthetic"`.
        synthetic_num_samples: Size of the synthetic training split.
        synthetic_seed: Base seed of the synthetic dataset.
        synthetic_image_size: Side of the generated images.
        synthetic_recolor: None, or a recolouring of the synthetic training objects (`"jitter"`: random hue,
            saturation and value per object; any of `groupvit.data.synthetic.RECOLORS`): colour stops naming the
            category, so shape has to (not in the paper; the demo recipe's).
        synthetic_recolor_share: Share of the training samples drawn recoloured (needs `synthetic_recolor`).
        image_size: Training crop size fed to the model.
        multiscale_sizes: Further sizes the steps cycle through: step `s` trains at
            `[image_size, *multiscale_sizes][s % n]`, each batch downscaled from its `image_size` crops (antialiased
            bilinear); empty: every step at `image_size`. Each size must lie between 8 and `image_size`.
        crop_scale: Area range of the random resized crop (paper: 0.08-1.0).
        hflip: Horizontal flip probability.
        color_jitter: Colour jitter strength (0 disables it). The paper's config lists 0.4, but its timm version skips
            jitter when RandAugment is on, so the paper's recipe ran without it: the default is 0.
        rand_augment: timm RandAugment policy (paper: `"rand-m9-mstd0.5-inc1"`), or None
            (`groupvit.data.transforms.RandAugment`).
        random_erasing: Probability of erasing one random box with noise (paper: 0.25; 0 disables it).
        resampled: Draw webdataset shards with replacement (multi-node).
        shuffle_buffer_size: Sample shuffle buffer (paper: 10000).
        num_workers: DataLoader workers per process.
        num_prompt_nouns: K nouns per caption for the multi-label loss (paper: 3; 0 turns the loss off).
        noun_extractor: Name of a registered noun extractor.
        prompt_templates: Template set name for the noun prompts (`simple`, `imagenet_subset`, ...).
    """

    source: Literal["synthetic", "webdataset", "hf"] | None = None
    train_shards: str | list[str] | None = None
    dataset: str | None = None
    split: str = "train"
    streaming: bool = False
    image_column: str = "image"
    text_column: str = "text"
    synthetic_preset: str = "objects"
    synthetic_num_samples: int = 20000
    synthetic_seed: int = 0
    synthetic_image_size: int = 64
    synthetic_recolor: str | None = None
    synthetic_recolor_share: float = 1.0
    image_size: int = 224
    multiscale_sizes: list[int] = field(default_factory=list)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    color_jitter: float = 0.0
    rand_augment: str | None = "rand-m9-mstd0.5-inc1"
    random_erasing: float = 0.25
    resampled: bool = False
    shuffle_buffer_size: int = 10000
    num_workers: int = 2
    num_prompt_nouns: int = 3
    noun_extractor: str = "vocabulary"
    prompt_templates: str = "simple"

    def __post_init__(self) -> None:
        given = {
            name: value for name, value in (("dataset", self.dataset), ("train_shards", self.train_shards)) if value
        }
        wanted = {"dataset": "hf", "train_shards": "webdataset"}
        if self.source is None:
            if len(given) > 1:
                raise ValueError(
                    f"data.dataset={self.dataset!r} and data.train_shards={self.train_shards!r} are both set: "
                    "give one (or choose with data.source)"
                )
            self.source = wanted[next(iter(given))] if given else "synthetic"
            return
        for name, value in given.items():
            if wanted[name] != self.source:
                raise ValueError(
                    f"data.{name}={value!r} is set but data.source={self.source!r}: it would be ignored. Set "
                    f"data.source={wanted[name]!r} (or leave it unset), or remove data.{name}"
                )


@dataclass
class LossArguments:
    """The training objective (`groupvit.training.losses.GroupViTPretrainingLoss`).

    Args:
        itc_weight: Weight of the image-text contrastive loss (paper: 1; 0 turns it off, as the demo recipe's first
            stage, which trains on the dense_noun term alone).
        multi_label_weight: Weight of the paper's multi-label contrastive loss (0, or `data.num_prompt_nouns=0`,
            turns it off).
        multi_label_target: `"instance"` (paper: a prompt is positive only for its own image) or `"semantic"` (also
            for every image whose caption has the same noun).
        multi_label_group_pooling: `"mean"` (paper: prompts are matched against the image embedding) or `"max"`
            (against the best-matching projected segment token, which trains the embeddings segmentation reads).
        multi_label_logit_scale_init: Initial raw temperature of the multi-label loss (ln(1/0.07), as the model's).
        group_diversity_weight: Weight of the anti-collapse term (not in the paper; 0 disables it).
        dense_noun_weight: Weight of the caption-noun multiple-instance term on the patch tokens (not in the paper;
            0 disables it): a teacher head learns which caption noun each patch shows (`DenseNounTerm`).
        dense_noun_top_k: Patches pooled per noun and image by that term.
        dense_noun_logit_scale_init: Initial raw temperature of that term's patch-noun similarities.
        dense_noun_backprop: What that term trains besides its own head: `"head"` (nothing: a teacher that reads the
            detached patch tokens and prompts), `"image"` (also the vision tower, through the patch tokens) or
            `"image_text"` (also the text tower, through the noun prompts).
        group_distill_weight: Weight of the distillation of the teacher's patch posteriors into the final groups'
            label distributions (needs `dense_noun_weight > 0`).
        group_purity_weight: Weight of the term asking patches of one teacher class to share a final group (needs
            `dense_noun_weight > 0`).
    """

    itc_weight: float = 1.0
    multi_label_weight: float = 1.0
    multi_label_target: MultiLabelTarget = "instance"
    multi_label_group_pooling: GroupPooling = "mean"
    multi_label_logit_scale_init: float = 2.6592
    group_diversity_weight: float = 0.0
    dense_noun_weight: float = 0.0
    dense_noun_top_k: int = 3
    dense_noun_logit_scale_init: float = 2.6592
    dense_noun_backprop: DenseNounBackprop = "head"
    group_distill_weight: float = 0.0
    group_purity_weight: float = 0.0


@dataclass
class TrainingConfig:
    """A pretraining run. Defaults are the paper's GroupViT-S recipe (per-device batch 256, 16 GPUs).

    Args:
        output_dir: Where checkpoints, logs and the final model go.
        model_preset: A `groupvit.available_presets()` name.
        model_overrides: Config fields to override (`{"vision_config": {"depths": [...]}}`).
        init_from: Start from a pretrained directory or Hub id instead of random weights.
        data: `DataArguments`.
        loss: `LossArguments`.
        per_device_train_batch_size: Batch per process and micro-step.
        gradient_accumulation_steps: Micro-steps per optimizer step (None: the launcher's, else 1).
        max_steps: Optimizer steps of the whole run.
        learning_rate: Peak learning rate (for a global batch of 4096 when `scale_lr`).
        min_learning_rate: Final learning rate of the cosine (same scaling).
        scale_lr: Scale both rates by global_batch / 4096.
        warmup_steps: Linear warmup steps (None: 2/30 of `max_steps`, the paper's 2 of 30 epochs).
        weight_decay: AdamW weight decay.
        adam_beta1: AdamW beta1.
        adam_beta2: AdamW beta2.
        adam_epsilon: AdamW epsilon.
        max_grad_norm: Gradient clipping norm (paper: 5.0).
        mixed_precision: `"no"`, `"bf16"` or `"fp16"` (None: the launcher's, else `"no"`).
        gradient_checkpointing: Recompute activations in the backward pass.
        torch_compile: Compile the model with `torch.compile`.
        ddp_timeout: Seconds a collective (gradient all-reduce, loss gather, barrier) may wait for the other processes
            before the run fails with a timeout error instead of hanging (transformers' `ddp_timeout`).
        seed: Seed of the model init, data order and augmentation.
        logging_steps: Log every N optimizer steps.
        checkpointing_steps: Save an Accelerate state every N steps (0: never).
        checkpoints_total_limit: Keep at most this many checkpoints.
        resume_from_checkpoint: `"latest"`, a checkpoint directory, or None.
        eval_steps: Zero-shot validation every N steps (synthetic data only; 0: never).
        eval_num_samples: Validation images per evaluation.
        report_to: Tracker names for Accelerate (`"tensorboard"`, `"wandb"`, `"all"`, `"none"`).
        push_to_hub: Upload the final model with `huggingface_hub`.
        hub_model_id: Target repo id.
        hub_revision: Target branch.
        hub_private: Create the repo as private.

    Precedence of `mixed_precision` and `gradient_accumulation_steps`: an explicit command-line flag, then the run
    file, then the launcher (`accelerate launch --mixed_precision bf16 --gradient_accumulation_steps 4` sets
    `ACCELERATE_MIXED_PRECISION` / `ACCELERATE_GRADIENT_ACCUMULATION_STEPS`), then `"no"` / 1. The values a run
    actually used are logged and written to `train_summary.json`.
    """

    output_dir: str = "runs/groupvit"
    model_preset: str = "groupvit-s"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    data: DataArguments = field(default_factory=DataArguments)
    loss: LossArguments = field(default_factory=LossArguments)
    per_device_train_batch_size: int = 256
    gradient_accumulation_steps: int | None = None
    max_steps: int = 30 * 6998
    learning_rate: float = 1.6e-3
    min_learning_rate: float = 4e-5
    scale_lr: bool = True
    warmup_steps: int | None = None
    weight_decay: float = 0.05
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 5.0
    mixed_precision: Literal["no", "bf16", "fp16"] | None = None
    gradient_checkpointing: bool = False
    torch_compile: bool = False
    ddp_timeout: int = 1800
    seed: int = 0
    logging_steps: int = 10
    checkpointing_steps: int = 1000
    checkpoints_total_limit: int | None = 3
    resume_from_checkpoint: str | None = None
    eval_steps: int = 0
    eval_num_samples: int = 256
    report_to: str = "tensorboard"
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_revision: str | None = None
    hub_private: bool = False

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainingConfig":
        """Build from a nested dict (a YAML/JSON file), rejecting unknown keys by name."""
        if not isinstance(values, dict):
            raise TypeError(f"a run configuration is a mapping of config keys, got {type(values).__name__}")
        values = dict(values)
        data = values.pop("data", {}) or {}
        loss = values.pop("loss", {}) or {}
        for name, block in (("data", data), ("loss", loss)):
            if not isinstance(block, dict):
                raise TypeError(f"{name}={block!r} must be a mapping of {name}.* keys, got {type(block).__name__}")
        _check_keys(cls, values, "")
        _check_keys(DataArguments, data, "data.")
        _check_keys(LossArguments, loss, "loss.")
        if isinstance(data.get("crop_scale"), list):  # YAML/JSON lists; anything else is reported by validate_config
            data["crop_scale"] = tuple(data["crop_scale"])
        return cls(**values, data=DataArguments(**data), loss=LossArguments(**loss))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_keys(cls: type, values: dict[str, Any], prefix: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown training config key(s) {[prefix + k for k in unknown]}; known: {sorted(known)}")


def load_training_config(path: str | None, overrides: dict[str, Any] | None = None) -> TrainingConfig:
    """Read a YAML or JSON run file (and the run files it extends, see `read_run_file`) and apply dotted overrides
    (`{"data.num_workers": 0}`)."""
    values: dict[str, Any] = {}
    if path is not None:
        values = read_run_file(path, require_output_dir="output_dir" not in (overrides or {}))
    for dotted, value in (overrides or {}).items():
        target = values
        *parents, leaf = dotted.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return TrainingConfig.from_dict(values)


def read_run_file(
    path: str | Path, require_output_dir: bool = True, _extended_by: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """The values of a YAML or JSON run file, on top of those of the run file(s) its `base:` key names.

    `base:` is a path relative to the run file's folder, or a list of them; their values come first (in list order),
    the file's own replace them key by key, and mappings (`data`, `loss`, `model_overrides`) merge key by key, so a
    stage's file lists only what it changes. A file that extends another names its own `output_dir` (two stages
    writing into one folder would overwrite each other's model); a cycle of bases is refused.
    """
    path = Path(path).resolve()
    if path in _extended_by:
        chain = " -> ".join(str(p) for p in (*_extended_by, path))
        raise ValueError(f"run files extend each other in a cycle: {chain}")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of config keys, got {type(values).__name__}")
    if "base" not in values:
        return values
    base = values.pop("base")
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) for b in bases):
        raise TypeError(
            f"base={base!r} in {path} must be the path of a run file, or a list of them (relative to {path.parent})"
        )
    inherited: dict[str, Any] = {}
    for name in bases:
        base_path = path.parent / name
        if not base_path.is_file():
            raise ValueError(f"base={name!r} in {path}: no run file at {base_path}")
        inherited = _merge(inherited, read_run_file(base_path, False, (*_extended_by, path)), str(base_path))
    if require_output_dir and "output_dir" in inherited and "output_dir" not in values:
        raise ValueError(
            f"{path} extends {', '.join(bases)} but names no output_dir of its own; it would write into the base "
            f"run's folder {inherited['output_dir']!r}"
        )
    return _merge(inherited, values, str(path))


def _merge(base: dict[str, Any], values: dict[str, Any], where: str) -> dict[str, Any]:
    merged = dict(base)
    for key, value in values.items():
        if isinstance(base.get(key), dict):
            if not isinstance(value, dict):
                raise ValueError(
                    f"{key}={value!r} in {where} must be a mapping: its base's {key} block is merged into it key "
                    "by key (leave the key out to keep the base's block)"
                )
            merged[key] = _merge(base[key], value, where)
        else:
            merged[key] = value
    return merged


# (lowest, highest) allowed value of the numeric fields; None: unbounded on that side. `_GREATER_THAN` fields must be
# strictly above their lowest value. Types come from the dataclass annotations (`_check_type`).
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "per_device_train_batch_size": (1, None),
    "gradient_accumulation_steps": (1, None),
    "max_steps": (1, None),
    "learning_rate": (0, None),
    "min_learning_rate": (0, None),
    "warmup_steps": (0, None),
    "weight_decay": (0, None),
    "adam_beta1": (0, 1),
    "adam_beta2": (0, 1),
    "adam_epsilon": (0, None),
    "max_grad_norm": (0, None),
    "seed": (0, None),
    "logging_steps": (1, None),
    "ddp_timeout": (1, None),
    "checkpointing_steps": (0, None),
    "checkpoints_total_limit": (1, None),
    "eval_steps": (0, None),
    "eval_num_samples": (1, None),
    "data.synthetic_num_samples": (1, None),
    "data.synthetic_seed": (0, None),
    "data.synthetic_image_size": (8, None),
    "data.image_size": (8, None),
    "data.hflip": (0, 1),
    "data.color_jitter": (0, None),
    "data.random_erasing": (0, 1),
    "data.shuffle_buffer_size": (0, None),
    "data.num_workers": (0, None),
    "data.num_prompt_nouns": (0, None),
    "loss.dense_noun_top_k": (1, None),
}
_GREATER_THAN = {"learning_rate", "adam_epsilon"}
_BELOW = {"adam_beta1", "adam_beta2"}  # strictly below the highest value


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _matches(value: Any, annotation: Any) -> bool:
    """Whether `value` fits `annotation` (the subset of types used by the run configuration)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if origin in (types.UnionType, typing.Union):
        return any(_matches(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin is tuple:
        return (
            isinstance(value, tuple | list)
            and len(value) == len(args)
            and all(_matches(v, a) for v, a in zip(value, args, strict=True))
        )
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def _check_fields(instance: Any, prefix: str = "") -> None:
    """Type and range of every field of a config dataclass, with the field, the value and what is allowed."""
    for spec in dataclasses.fields(instance):
        name, value = prefix + spec.name, getattr(instance, spec.name)
        if dataclasses.is_dataclass(spec.type):
            _check_fields(value, f"{name}.")
            continue
        if not _matches(value, spec.type):
            origin = typing.get_origin(spec.type)
            if origin is Literal or (
                origin in (types.UnionType, typing.Union)
                and any(typing.get_origin(a) is Literal for a in typing.get_args(spec.type))
            ):
                choices = [c for a in typing.get_args(spec.type) for c in (typing.get_args(a) or [a])]
                choices = [None if c is type(None) else c for c in choices] if origin is not Literal else choices
                raise ValueError(f"{name}={value!r} is not one of {choices}")
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(value, str) and spec.type is float else ""
            raise TypeError(
                f"{name}={value!r} has type {type(value).__name__}; expected {_type_name(spec.type)}{hint}"
            )
        if isinstance(value, float) and not math.isfinite(value):  # NaN would pass every range comparison
            raise ValueError(f"{name} must be finite, got {value!r}")
        if name in _RANGES and value is not None:
            low, high = _RANGES[name]
            strict_low, strict_high = name in _GREATER_THAN, name in _BELOW
            too_low = low is not None and (value <= low if strict_low else value < low)
            too_high = high is not None and (value >= high if strict_high else value > high)
            if too_low or too_high:
                left = "(" if strict_low else "["
                right = ")" if strict_high or high is None else "]"
                allowed = f"{left}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{right}"
                raise ValueError(f"{name}={value!r} is out of range; allowed: {allowed}")


def _check_model_overrides(overrides: dict[str, Any], model_preset: str) -> None:
    """Every key of `model_overrides` (and of its `vision_config`/`text_config`) must be a GroupViTConfig field."""
    from groupvit.configuration_groupvit import GroupViTConfig

    reference = GroupViTConfig.from_preset(model_preset)
    known = set(reference.to_dict())
    unknown = [f"model_overrides.{k}" for k in overrides if k not in known]
    for sub in ("vision_config", "text_config"):
        value = overrides.get(sub, {})
        if not isinstance(value, dict):
            raise TypeError(f"model_overrides.{sub}={value!r} must be a mapping of {sub} fields")
        sub_known = set(getattr(reference, sub).to_dict())
        unknown += [f"model_overrides.{sub}.{k}" for k in value if k not in sub_known]
    if unknown:
        raise ValueError(f"Unknown model config key(s) {sorted(unknown)}: not fields of GroupViTConfig")
    GroupViTConfig.from_preset(model_preset, **overrides)  # the config's own value checks


def _check_synthetic_recolor(data: DataArguments) -> None:
    from groupvit.data.synthetic import RECOLORS

    if data.synthetic_recolor is None:
        if data.synthetic_recolor_share != 1.0:
            raise ValueError(
                f"data.synthetic_recolor_share={data.synthetic_recolor_share!r} would be ignored: "
                "data.synthetic_recolor is None"
            )
        return
    if data.source != "synthetic":
        raise ValueError(
            f"data.synthetic_recolor={data.synthetic_recolor!r} would be ignored: data.source is {data.source!r}, "
            "not 'synthetic'"
        )
    if data.synthetic_recolor not in RECOLORS:
        raise ValueError(f"data.synthetic_recolor={data.synthetic_recolor!r} is unknown; allowed: {RECOLORS}")
    if not 0 < data.synthetic_recolor_share <= 1:
        raise ValueError(f"data.synthetic_recolor_share={data.synthetic_recolor_share!r} is invalid; allowed: (0, 1]")


def validate_config(config: TrainingConfig, num_processes: int = 1) -> None:
    """Fail at start, with the offending field, its value and the allowed range, on settings that would fail later.

    Raises:
        TypeError: A field has the wrong type (a float `max_steps`, a text learning rate).
        ValueError: A value is out of range, unknown, or inconsistent with another field.
    """
    if config.model_preset not in available_presets():
        raise ValueError(f"Unknown model_preset {config.model_preset!r}; available: {available_presets()}")
    _check_fields(config)
    if config.min_learning_rate > config.learning_rate:
        raise ValueError(
            f"min_learning_rate={config.min_learning_rate!r} is above learning_rate={config.learning_rate!r}; "
            f"allowed: [0, learning_rate]"
        )
    _check_model_overrides(config.model_overrides, config.model_preset)
    weights = ("itc", "multi_label", "group_diversity", "dense_noun", "group_distill", "group_purity")
    for name in (f"{term}_weight" for term in weights):
        value = getattr(config.loss, name)
        if value < 0:  # finiteness: `_check_fields`
            raise ValueError(f"loss.{name} must be finite and >= 0, got {value!r}")
    loss = config.loss
    if (
        loss.itc_weight == 0
        and loss.dense_noun_weight == 0
        and (loss.multi_label_weight == 0 or config.data.num_prompt_nouns == 0)
    ):
        raise ValueError(
            "loss.itc_weight=0 leaves no term that aligns images with text: set loss.itc_weight, "
            "loss.multi_label_weight (with data.num_prompt_nouns >= 1) or loss.dense_noun_weight above 0"
        )
    if loss.dense_noun_backprop != "head" and loss.dense_noun_weight == 0:
        raise ValueError(
            f"loss.dense_noun_backprop={loss.dense_noun_backprop!r} would be ignored: loss.dense_noun_weight is 0"
        )
    if config.loss.dense_noun_weight > 0 and config.data.num_prompt_nouns == 0:
        raise ValueError("loss.dense_noun_weight > 0 needs noun prompts: data.num_prompt_nouns must be >= 1, got 0")
    for name in ("group_distill_weight", "group_purity_weight"):
        if getattr(config.loss, name) > 0 and config.loss.dense_noun_weight == 0:
            raise ValueError(
                f"loss.{name}={getattr(config.loss, name)!r} needs loss.dense_noun_weight > 0: its teacher is the "
                "dense_noun term"
            )
    data = config.data
    _check_synthetic_recolor(data)
    low, high = data.crop_scale
    if not 0 < low <= high <= 1:
        raise ValueError(f"data.crop_scale={tuple(data.crop_scale)!r} is invalid; allowed: 0 < low <= high <= 1")
    bad_sizes = [size for size in data.multiscale_sizes if not 8 <= size <= data.image_size]
    if bad_sizes:
        raise ValueError(
            f"data.multiscale_sizes={data.multiscale_sizes!r}: {bad_sizes} outside [8, data.image_size="
            f"{data.image_size}]"
        )
    if data.rand_augment is not None:
        from groupvit.data.transforms import RandAugment

        try:
            RandAugment.from_policy(data.rand_augment)
        except ValueError as error:
            raise ValueError(f"data.rand_augment: {error}") from None
    if data.source == "webdataset":
        if not data.train_shards:
            raise ValueError("data.source='webdataset' needs data.train_shards")
        patterns = [data.train_shards] if isinstance(data.train_shards, str) else data.train_shards
        import webdataset as wds

        try:
            urls = [u for p in patterns for u in wds.shardlists.expand_urls(p)]
        except ValueError as error:  # braceexpand's message (e.g. "Unbalanced braces") does not name the field
            raise ValueError(f"data.train_shards={data.train_shards!r}: {error}") from None
        local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
        missing = [u for u in local if not os.path.exists(u)]
        if missing:
            raise ValueError(f"data.train_shards: {len(missing)} shard(s) do not exist, e.g. {missing[0]!r}")
    elif data.source == "hf":
        if not data.dataset:
            raise ValueError("data.source='hf' needs data.dataset (a Hub id or a local path)")
        looks_local = data.dataset.startswith((".", "/")) or data.dataset.endswith((".parquet", ".arrow"))
        if looks_local and not glob.glob(data.dataset):  # a path, or a pattern such as `data/*.parquet`
            raise ValueError(f"data.dataset path does not exist: {data.dataset!r}")
    for name, lookup in (("noun_extractor", get_noun_extractor), ("prompt_templates", get_templates)):
        try:
            lookup(getattr(data, name))
        except (KeyError, ValueError) as error:  # the registries' messages do not know the field's name
            raise ValueError(f"data.{name}: {error}") from None
    if config.push_to_hub and not config.hub_model_id:
        raise ValueError("push_to_hub needs hub_model_id")
    if config.per_device_train_batch_size * num_processes < 2:
        raise ValueError("The contrastive loss needs a global batch of at least 2 image-caption pairs")


def global_batch_size(
    config: TrainingConfig, num_processes: int, gradient_accumulation_steps: int | None = None
) -> int:
    """Pairs per optimizer step; `gradient_accumulation_steps` (what the run resolved) replaces the config's."""
    accumulation = gradient_accumulation_steps or config.gradient_accumulation_steps or 1
    return config.per_device_train_batch_size * accumulation * num_processes
