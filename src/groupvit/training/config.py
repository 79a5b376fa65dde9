"""The run configuration of a pretraining run: data, optimisation, loss settings, checkpoints, Hub push.

A run file is YAML or JSON with the fields of `TrainingConfig` (the `data:` block holds `DataArguments`, the `loss:`
block `LossArguments`: the objective lives here, not in the model config that is saved with every checkpoint);
`load_training_config` reads one and applies dotted overrides, `validate_config` checks every field before a step runs.
"""

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from groupvit.configuration_groupvit import available_presets
from groupvit.data.nouns import get_noun_extractor, get_templates

REFERENCE_BATCH_SIZE = 4096


@dataclass
class DataArguments:
    """Where the image-caption pairs come from and how they are augmented.

    Args:
        source: `"synthetic"`, `"webdataset"` or `"hf"` (a `datasets` dataset).
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
        image_size: Training crop size fed to the model.
        crop_scale: Area range of the random resized crop (paper: 0.08-1.0).
        hflip: Horizontal flip probability.
        color_jitter: Colour jitter strength.
        resampled: Draw webdataset shards with replacement (multi-node).
        shuffle_buffer_size: Sample shuffle buffer (paper: 10000).
        num_workers: DataLoader workers per process.
        num_prompt_nouns: K nouns per caption for the multi-label loss (paper: 3; 0 turns the loss off).
        noun_extractor: Name of a registered noun extractor.
        prompt_templates: Template set name for the noun prompts (`simple`, `imagenet_subset`, ...).
    """

    source: Literal["synthetic", "webdataset", "hf"] = "synthetic"
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
    image_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    color_jitter: float = 0.4
    resampled: bool = False
    shuffle_buffer_size: int = 10000
    num_workers: int = 2
    num_prompt_nouns: int = 3
    noun_extractor: str = "vocabulary"
    prompt_templates: str = "simple"


@dataclass
class LossArguments:
    """The training objective (`groupvit.training.losses.GroupViTPretrainingLoss`); the ITC term always has weight 1.

    Args:
        multi_label_weight: Weight of the paper's multi-label contrastive loss (0, or `data.num_prompt_nouns=0`,
            turns it off).
        multi_label_target: `"instance"` (paper: a prompt is positive only for its own image) or `"semantic"` (also
            for every image whose caption has the same noun).
        multi_label_group_pooling: `"mean"` (paper: prompts are matched against the image embedding) or `"max"`
            (against the best-matching projected segment token, which trains the embeddings segmentation reads).
        multi_label_logit_scale_init: Initial raw temperature of the multi-label loss (ln(1/0.07), as the model's).
        group_diversity_weight: Weight of the anti-collapse term (not in the paper; 0 disables it).
    """

    multi_label_weight: float = 1.0
    multi_label_target: Literal["instance", "semantic"] = "instance"
    multi_label_group_pooling: Literal["mean", "max"] = "mean"
    multi_label_logit_scale_init: float = 2.6592
    group_diversity_weight: float = 0.0


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
        gradient_accumulation_steps: Micro-steps per optimizer step.
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
        mixed_precision: `"no"`, `"bf16"` or `"fp16"`.
        gradient_checkpointing: Recompute activations in the backward pass.
        torch_compile: Compile the model with `torch.compile`.
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
    """

    output_dir: str = "runs/groupvit"
    model_preset: str = "groupvit-s"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    data: DataArguments = field(default_factory=DataArguments)
    loss: LossArguments = field(default_factory=LossArguments)
    per_device_train_batch_size: int = 256
    gradient_accumulation_steps: int = 1
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
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    torch_compile: bool = False
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
        values = dict(values)
        data = values.pop("data", {}) or {}
        loss = values.pop("loss", {}) or {}
        _check_keys(cls, values, "")
        _check_keys(DataArguments, data, "data.")
        _check_keys(LossArguments, loss, "loss.")
        if "crop_scale" in data:
            data["crop_scale"] = tuple(data["crop_scale"])
        return cls(**values, data=DataArguments(**data), loss=LossArguments(**loss))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_keys(cls: type, values: dict[str, Any], prefix: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown training config key(s) {[prefix + k for k in unknown]}; known: {sorted(known)}")


def _check_literals(instance: Any, prefix: str) -> None:
    """Every `Literal`-typed field of a dataclass holds one of its values."""
    for name, hint in typing.get_type_hints(type(instance)).items():
        if typing.get_origin(hint) is Literal and getattr(instance, name) not in typing.get_args(hint):
            raise ValueError(f"{prefix}{name} must be one of {typing.get_args(hint)}, got {getattr(instance, name)!r}")


def load_training_config(path: str | None, overrides: dict[str, Any] | None = None) -> TrainingConfig:
    """Read a YAML or JSON run file and apply dotted overrides (`{"data.num_workers": 0}`)."""
    values: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        if path.endswith((".yaml", ".yml")):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of config keys, got {type(values).__name__}")
    for dotted, value in (overrides or {}).items():
        target = values
        *parents, leaf = dotted.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return TrainingConfig.from_dict(values)


def validate_config(config: TrainingConfig, num_processes: int = 1) -> None:
    """Fail at start, with the offending field, on settings that would fail later."""
    if config.model_preset not in available_presets():
        raise ValueError(f"Unknown model_preset {config.model_preset!r}; available: {available_presets()}")
    positive = ("per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "learning_rate")
    for name in positive:
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(config, name)}")
    for instance, prefix in ((config, ""), (config.data, "data."), (config.loss, "loss.")):
        _check_literals(instance, prefix)
    for name in ("multi_label_weight", "group_diversity_weight"):
        value = getattr(config.loss, name)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"loss.{name} must be finite and >= 0, got {value!r}")
    data = config.data
    if data.source == "webdataset":
        if not data.train_shards:
            raise ValueError("data.source='webdataset' needs data.train_shards")
        patterns = [data.train_shards] if isinstance(data.train_shards, str) else data.train_shards
        import webdataset as wds

        local = [
            u for p in patterns for u in wds.shardlists.expand_urls(p) if "://" not in u and not u.startswith("pipe:")
        ]
        missing = [u for u in local if not os.path.exists(u)]
        if missing:
            raise ValueError(f"data.train_shards: {len(missing)} shard(s) do not exist, e.g. {missing[0]!r}")
    elif data.source == "hf":
        if not data.dataset:
            raise ValueError("data.source='hf' needs data.dataset (a Hub id or a local path)")
        looks_local = data.dataset.startswith((".", "/")) or data.dataset.endswith((".parquet", ".arrow"))
        if looks_local and not os.path.exists(data.dataset):
            raise ValueError(f"data.dataset path does not exist: {data.dataset!r}")
    elif data.source != "synthetic":
        raise ValueError(f"data.source must be 'synthetic', 'webdataset' or 'hf', got {data.source!r}")
    if data.num_prompt_nouns < 0:
        raise ValueError(f"data.num_prompt_nouns must be >= 0, got {data.num_prompt_nouns}")
    get_noun_extractor(data.noun_extractor)
    get_templates(data.prompt_templates)
    if config.push_to_hub and not config.hub_model_id:
        raise ValueError("push_to_hub needs hub_model_id")
    if config.per_device_train_batch_size * num_processes < 2:
        raise ValueError("The contrastive loss needs a global batch of at least 2 image-caption pairs")


def global_batch_size(config: TrainingConfig, num_processes: int) -> int:
    return config.per_device_train_batch_size * config.gradient_accumulation_steps * num_processes
