"""Model cards for GroupViT checkpoints: Hub metadata, evaluation results and a Markdown body from one template.

The template is a package resource (`groupvit/resources/model_card_template.md`), so an installed package renders
cards without the source tree. Evaluation results come from a `results.json` written by the evaluation script (see
[`parse_segmentation_results`] for the accepted layouts) and go into the card's `model-index` metadata as
[`huggingface_hub.EvalResult`]s as well as into a Markdown table.

Example:
    ```python
    >>> from groupvit import GroupViTConfig
    >>> from groupvit.hub.model_card import render_model_card
    >>> card = render_model_card(
    ...     GroupViTConfig.from_preset("groupvit-tiny"),
    ...     results={"pascal_voc": {"mean_iou": 0.523}},
    ...     repo_id="me/groupvit-tiny",
    ... )
    >>> card.data.eval_results[0].metric_value
    52.3

    ```
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from groupvit.configuration_groupvit import GroupViTConfig

__all__ = [
    "CITATION",
    "TrainingRun",
    "describe_training_run",
    "DEFAULT_TAGS",
    "PIPELINE_TAG",
    "SegmentationResult",
    "model_card_template_path",
    "parse_segmentation_results",
    "render_model_card",
]

PIPELINE_TAG = "image-segmentation"
"""Pipeline tag of the card. The Hub's pipeline tags (huggingface.js `pipelines.ts`, which `huggingface_hub`'s
`ModelCardData.pipeline_tag` refers to; its inference providers' task lists hold the same names) have no zero-shot
segmentation task, so the card takes the nearest one and its "How to use" section shows the
`zero-shot-image-segmentation` pipeline this package registers."""
DEFAULT_TAGS = ("groupvit", "zero-shot-image-segmentation", "image-segmentation", "contrastive-learning")
CITATION = """@inproceedings{xu2022groupvit,
  author    = {Xu, Jiarui and De Mello, Shalini and Liu, Sifei and Byeon, Wonmin and Breuel, Thomas and Kautz, Jan and
               Wang, Xiaolong},
  title     = {GroupViT: Semantic Segmentation Emerges from Text Supervision},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2022}
}"""

_TEMPLATE = ("resources", "model_card_template.md")
_TASK_TYPE = "image-segmentation"
_TASK_NAME = "Zero-shot semantic segmentation"
_METRIC_TYPE = "mean_iou"
_METRIC_NAME = "mIoU (%)"
_MIOU_KEYS = ("mean_iou", "mIoU", "miou", "mean_iou_percent")
# Evaluation datasets of the paper: results.json key -> (dataset id, pretty name, split).
_KNOWN_DATASETS = {
    "pascal_voc": ("pascal_voc", "PASCAL VOC 2012", "val"),
    "voc": ("pascal_voc", "PASCAL VOC 2012", "val"),
    "voc12": ("pascal_voc", "PASCAL VOC 2012", "val"),
    "pascal_context": ("pascal_context", "PASCAL Context", "val"),
    "context": ("pascal_context", "PASCAL Context", "val"),
    "coco_object": ("coco_object", "COCO-Object", "val2017"),
    "coco": ("coco_object", "COCO-Object", "val2017"),
}
# training_args entries shown in the card (the rest, e.g. paths and logging options, are noise on a card).
_SKIPPED_TRAINING_ARGS = ("dir", "path", "token", "hub_", "logging_", "report_to", "push_to_hub", "resume")
# Settings whose None turns off something that is on by default: shown as "none", not left out like other Nones
_NONE_MEANS_OFF = ("data.rand_augment",)
# Data settings of `groupvit.training.config.DataArguments` that only apply to one `data.source`: the others are left
# out of the card (a webdataset run did not use `synthetic_preset`).
_SOURCE_SETTINGS = {
    "synthetic": (
        "synthetic_preset",
        "synthetic_num_samples",
        "synthetic_seed",
        "synthetic_image_size",
        "synthetic_recolor",
        "synthetic_recolor_share",
    ),
    "webdataset": ("train_shards", "resampled"),
    "hf": ("dataset", "split", "streaming", "image_column", "text_column"),
}
_ACCURACY_KEY = "eval/zero_shot_accuracy"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_DATASET_URL = re.compile(r"^(?:hf://datasets/|https://huggingface\.co/datasets/)([\w.-]+/[\w.-]+)")


def model_card_template_path() -> str:
    """Path of the Jinja template shipped in the package (`groupvit/resources/model_card_template.md`)."""
    return str(resources.files("groupvit").joinpath(*_TEMPLATE))


@dataclass(frozen=True)
class SegmentationResult:
    """One zero-shot segmentation score.

    Attributes:
        key: The key it had in `results.json`.
        dataset_type: Dataset identifier (e.g. `pascal_voc`).
        dataset_name: Readable dataset name (e.g. `PASCAL VOC 2012`).
        split: Evaluated split, if known.
        mean_iou: Mean IoU in percent.
        bg_thresh: Background threshold used, if recorded.
    """

    key: str
    dataset_type: str
    dataset_name: str
    split: str | None
    mean_iou: float
    bg_thresh: float | None = None

    def to_eval_result(self) -> EvalResult:
        """The result as model-index metadata."""
        return EvalResult(
            task_type=_TASK_TYPE,
            task_name=_TASK_NAME,
            dataset_type=self.dataset_type,
            dataset_name=self.dataset_name,
            dataset_split=self.split,
            metric_type=_METRIC_TYPE,
            metric_name=_METRIC_NAME,
            metric_value=round(self.mean_iou, 2),
        )


def _miou_percent(entry: Mapping[str, Any], where: str) -> float | None:
    for key in _MIOU_KEYS:
        if key in entry:
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value > 100:
                raise ValueError(f"results {where}.{key} must be a number in [0, 1] or [0, 100], got {value!r}")
            # The mean-IoU metric returns a fraction; a value above 1 can only be a percentage already.
            return float(value) * 100.0 if value <= 1.0 else float(value)
    return None


def _result(key: str, entry: Mapping[str, Any]) -> SegmentationResult | None:
    mean_iou = _miou_percent(entry, key)
    if mean_iou is None:
        return None
    dataset_type, dataset_name, split = _KNOWN_DATASETS.get(key.lower(), (key, key, None))
    bg_thresh = entry.get("bg_thresh", entry.get("background_threshold"))
    return SegmentationResult(
        key=key,
        dataset_type=str(entry.get("dataset_type", dataset_type)),
        dataset_name=str(entry.get("dataset_name", dataset_name)),
        split=entry.get("split", split),
        mean_iou=mean_iou,
        bg_thresh=float(bg_thresh) if bg_thresh is not None else None,
    )


def parse_segmentation_results(
    results: Mapping[str, Any] | Sequence[Any] | str | os.PathLike,
) -> list[SegmentationResult]:
    """Read zero-shot segmentation scores from `results.json` (a path) or its parsed content.

    Accepted layouts (mIoU under `mean_iou`, `mIoU` or `miou`, as a fraction in [0, 1], like the mean-IoU metric
    returns, or as a percentage above 1):

    - `{"pascal_voc": {"mean_iou": 0.523, "bg_thresh": 0.95}, "pascal_context": {...}}` (entries without an mIoU,
      such as run metadata, are skipped);
    - the same under a top-level `"results"` key;
    - a list of entries `[{"dataset": "pascal_voc", "mean_iou": 0.523}, ...]`;
    - one entry `{"dataset": "pascal_voc", "mean_iou": 0.523}`.

    Known keys (`pascal_voc`/`voc`, `pascal_context`/`context`, `coco_object`/`coco`) get the paper's dataset names
    and splits; an entry may set `dataset_type`, `dataset_name` and `split` itself.

    Args:
        results: The results or a path to the JSON file.

    Returns:
        The scores in file order.

    Raises:
        ValueError: If a score is not a number in range, or nothing holds an mIoU.
    """
    if isinstance(results, str | os.PathLike):
        with open(results, encoding="utf-8") as handle:
            results = json.load(handle)
    if isinstance(results, Mapping) and isinstance(results.get("results"), Mapping | list):
        results = results["results"]
    parsed: list[SegmentationResult] = []
    if isinstance(results, Mapping) and "dataset" in results:
        results = [results]
    if isinstance(results, Mapping):
        for key, entry in results.items():
            if isinstance(entry, Mapping) and (result := _result(str(key), entry)) is not None:
                parsed.append(result)
    elif isinstance(results, list):
        for index, entry in enumerate(results):
            if not isinstance(entry, Mapping) or "dataset" not in entry:
                raise ValueError(f"results[{index}] must be a mapping with a 'dataset' key, got {entry!r}")
            if (result := _result(str(entry["dataset"]), entry)) is not None:
                parsed.append(result)
    else:
        raise ValueError(f"results must be a mapping or a list, got {type(results).__name__}")
    if not parsed:
        raise ValueError(f"no mIoU ({' / '.join(_MIOU_KEYS)}) found in the results")
    return parsed


def _architecture_rows(config: GroupViTConfig) -> list[tuple[str, str]]:
    vision, text = config.vision_config, config.text_config
    stages = len(vision.depths)
    outputs = _grouping_outputs(config)
    return [
        ("image size / patch size", f"{vision.image_size} / {vision.patch_size}"),
        ("vision width / heads", f"{vision.hidden_size} / {vision.num_attention_heads}"),
        ("vision layers per stage", f"{list(vision.depths)} ({stages} stages)"),
        ("group tokens per stage", str(list(vision.num_group_tokens))),
        ("segments out of each grouping block", str(list(outputs))),
        (
            "assignment",
            "hard (straight-through" + (", Gumbel in training)" if vision.gumbel else ")")
            if vision.hard_assignment
            else "soft",
        ),
        ("text width / layers / heads", f"{text.hidden_size} / {text.num_hidden_layers} / {text.num_attention_heads}"),
        ("text context / vocabulary", f"{text.max_position_embeddings} / {text.vocab_size}"),
        (
            "projection heads",
            f"2-layer MLP with BatchNorm, {config.projection_intermediate_dim} → {config.projection_dim}",
        ),
    ]


def _grouping_outputs(config: GroupViTConfig) -> list[int]:
    vision = config.vision_config
    return [out for tokens, out in zip(vision.num_group_tokens, vision.num_output_groups, strict=True) if tokens > 0]


def _max_segments(config: GroupViTConfig) -> int:
    outputs = _grouping_outputs(config)
    if outputs:
        return outputs[-1]
    # no grouping block: every patch stays a token
    vision = config.vision_config
    height, width = (vision.image_size, vision.image_size) if isinstance(vision.image_size, int) else vision.image_size
    patch_h, patch_w = (
        (vision.patch_size, vision.patch_size) if isinstance(vision.patch_size, int) else vision.patch_size
    )
    return (height // patch_h) * (width // patch_w)


def _count_parameters(config: GroupViTConfig) -> str:
    from accelerate import init_empty_weights

    from groupvit.modeling_groupvit import GroupViTModel

    with init_empty_weights():
        model = GroupViTModel(config)
    count = sum(p.numel() for p in model.parameters())
    return f"{count / 1e6:.2f} M" if count >= 1e5 else f"{count:,}"


def _is_hub_id(value: Any) -> bool:
    """A `namespace/name` that is not an existing local path (a local folder is not Hub metadata)."""
    return isinstance(value, str) and bool(_HUB_ID.match(value)) and not os.path.exists(value)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _training_rows(training_args: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Scalar (and list-of-scalar) settings, nested sections as dotted names (`data.crop_scale`)."""
    data = training_args.get("data")
    source = data.get("source") if isinstance(data, Mapping) else None
    inapplicable = {
        f"data.{name}" for other, names in _SOURCE_SETTINGS.items() if other != source and source for name in names
    }
    rows = []
    for name, value in _flatten(training_args).items():
        if value is None and name in _NONE_MEANS_OFF:
            value = "none"
        if any(part in name for part in _SKIPPED_TRAINING_ARGS) or value in (None, []) or name in inapplicable:
            continue
        if isinstance(value, bool | int | float | str) or (
            isinstance(value, list | tuple) and all(isinstance(v, int | float | str) for v in value)
        ):
            text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            rows.append((name, text.replace("|", "\\|")))
    return rows


@dataclass(frozen=True)
class TrainingRun:
    """What a card says about the run that produced the checkpoint.

    Attributes:
        source: `data.source` of the run (`synthetic`, `webdataset`, `hf`), or None when unknown.
        description: Markdown for the "Training data" section.
        datasets: Hub dataset ids the run read (the card's `datasets` metadata).
        base_model: Hub id the run started from (`init_from`), if it is one.
        init_from: `init_from` as given (a Hub id or a local folder), if any.
        evaluations: Evaluations logged during training, as `(EvalResult, sentence)` pairs.
    """

    source: str | None = None
    description: str | None = None
    datasets: tuple[str, ...] = ()
    base_model: str | None = None
    init_from: str | None = None
    evaluations: tuple[tuple[EvalResult, str], ...] = field(default_factory=tuple)


def _shard_patterns(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _data_description(data: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    source = data.get("source")
    if source == "synthetic":
        preset = data.get("synthetic_preset")
        text = (
            f"Synthetic image-caption pairs generated by `groupvit.data.synthetic` (preset `{preset}`, "
            f"{data.get('synthetic_num_samples')} training samples, seed {data.get('synthetic_seed')}, "
            f"{data.get('synthetic_image_size')} px images): procedurally drawn objects on drawn backgrounds with "
            "template captions, no real photographs. The generator also draws masks; training never reads them."
        )
        if data.get("synthetic_recolor"):
            share = data.get("synthetic_recolor_share", 1.0)
            text += (
                f" A share of {share:g} of the training images has its objects recoloured "
                f"(`{data['synthetic_recolor']}`), so that colour does not name the category."
            )
        return text, ()
    if source == "webdataset":
        patterns = _shard_patterns(data.get("train_shards"))
        datasets = tuple(dict.fromkeys(m.group(1) for p in patterns if (m := _HUB_DATASET_URL.match(p))))
        listing = ", ".join(f"`{p}`" for p in patterns) or "(not recorded)"
        return f"Image-caption pairs read from webdataset shards: {listing}.", datasets
    if source == "hf":
        dataset = data.get("dataset")
        split = data.get("split")
        text = (
            f"Image-caption pairs from the `datasets` source `{dataset}` (split `{split}`, image column "
            f"`{data.get('image_column')}`, caption column `{data.get('text_column')}`)."
        )
        return text, (dataset,) if _is_hub_id(dataset) else ()
    return f"Data source `{source}`.", ()


def _logged_evaluations(
    summary: Mapping[str, Any], training_args: Mapping[str, Any]
) -> tuple[tuple[EvalResult, str], ...]:
    """The zero-shot classification accuracy the trainer logs on the synthetic validation split, if any."""
    if _ACCURACY_KEY not in summary:
        return ()
    accuracy = float(summary[_ACCURACY_KEY])
    history = summary.get("history") or []
    steps = [entry["step"] for entry in history if isinstance(entry, Mapping) and _ACCURACY_KEY in entry]
    step = steps[-1] if steps else summary.get("step")
    data = training_args.get("data") or {}
    preset = data.get("synthetic_preset")
    count = training_args.get("eval_num_samples")
    name = f"groupvit synthetic {preset} (validation, {count} images)"
    result = EvalResult(
        task_type="zero-shot-image-classification",
        task_name="Zero-shot image classification",
        dataset_type=f"groupvit-synthetic-{preset}",
        dataset_name=name,
        dataset_split="validation",
        metric_type="accuracy",
        metric_name="accuracy (%)",
        metric_value=round(accuracy * 100.0, 2),
    )
    sentence = (
        f"Zero-shot classification accuracy logged during training at step {step}: {accuracy * 100.0:.1f}% on "
        f"{count} synthetic validation images (preset `{preset}`, seed {data.get('synthetic_seed')}): the share of "
        'images whose best-scoring prompt "a photo of a {class}." names a class present in the image.'
    )
    return ((result, sentence),)


def describe_training_run(
    training_args: Mapping[str, Any] | None, summary: Mapping[str, Any] | None = None
) -> TrainingRun:
    """What the card can say about a run, from its configuration (`TrainingConfig.to_dict()`) and summary.

    Args:
        training_args: The run configuration as written to `training_config.json` (a `data` section with `source`
            and its settings, `init_from`, `eval_num_samples`, ...). Other mappings (e.g. a script's `vars(args)`)
            yield an empty description.
        summary: The run summary (`train_summary.json`: `step`, `eval/zero_shot_accuracy`, `history`).

    Returns:
        The description; fields stay empty where the configuration does not say.
    """
    if not training_args:
        return TrainingRun()
    data = training_args.get("data")
    description, datasets = _data_description(data) if isinstance(data, Mapping) else (None, ())
    init_from = training_args.get("init_from") or None
    if init_from and description:
        origin = f"[`{init_from}`](https://huggingface.co/{init_from})" if _is_hub_id(init_from) else f"`{init_from}`"
        description += f" Training started from the weights of {origin}."
    return TrainingRun(
        source=data.get("source") if isinstance(data, Mapping) else None,
        description=description,
        datasets=datasets,
        base_model=init_from if _is_hub_id(init_from) else None,
        init_from=init_from,
        evaluations=_logged_evaluations(summary or {}, training_args),
    )


def render_model_card(
    config: GroupViTConfig,
    results: Mapping[str, Any] | Sequence[Any] | str | os.PathLike | None = None,
    training_args: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    *,
    summary: Mapping[str, Any] | None = None,
    datasets: Sequence[str] | None = None,
    training_data: str | None = None,
    model_name: str | None = None,
    license: str = "apache-2.0",
    pipeline_tag: str = PIPELINE_TAG,
    tags: Sequence[str] = (),
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the model card of a GroupViT checkpoint: what this checkpoint is and how it was made, nothing more.

    With a run configuration (`TrainingConfig.to_dict()`, as `groupvit pretrain` writes it), the card names the
    run's data (the synthetic preset and its size, the shard patterns, or the `datasets` source), sets `datasets`
    metadata for Hub datasets and `base_model` for a Hub `init_from`, lists every setting that applied (data
    settings of other sources are left out), and puts the accuracy logged during training (`summary`) into the
    `model-index` beside the segmentation `results`. What is not recorded is said to be unknown, never filled in
    from the paper.

    Args:
        config: The checkpoint's configuration (its architecture fills the "Model details" table).
        results: Zero-shot segmentation results (`results.json` path or content, see
            [`parse_segmentation_results`]); they become `model-index` eval results and the results table.
        training_args: The run configuration (see [`describe_training_run`]) or any mapping of hyperparameters;
            scalar entries other than paths, tokens and logging options are listed, nested sections as dotted names.
        repo_id: Hub id used in the usage examples and, by default, as the model name.
        base_model: Hub id of the checkpoint this one was fine-tuned or converted from (default: the run's
            `init_from` when it is a Hub id).
        summary: The run summary (`train_summary.json`); its logged evaluation goes into the card.
        datasets: Hub dataset ids used for training (`datasets` metadata), added to those found in the run.
        training_data: Markdown for the "Training data" section (default: derived from the run, else "not
            recorded").
        model_name: Name in the title and the `model-index` (default: the repo name, else "groupvit").
        license: License identifier.
        pipeline_tag: Hub pipeline tag of the card (default [`PIPELINE_TAG`]).
        tags: Tags added to [`DEFAULT_TAGS`].
        template_path: Another Jinja template (default: [`model_card_template_path`]).

    Returns:
        The card; `str(card)` is the README.md text and `card.save(path)` writes it.
    """
    parsed = parse_segmentation_results(results) if results is not None else []
    run = describe_training_run(training_args, summary)
    base_model = base_model or run.base_model
    all_datasets = list(dict.fromkeys([*run.datasets, *(datasets or [])]))
    eval_results = [result.to_eval_result() for result in parsed] + [result for result, _ in run.evaluations]
    name = model_name or (repo_id.rstrip("/").split("/")[-1] if repo_id else "groupvit")
    card_data = ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=[*DEFAULT_TAGS, *tags],
        datasets=all_datasets or None,
        base_model=base_model,
        metrics=list(dict.fromkeys(r.metric_type for r in eval_results)) or None,
        # model_name only names the model-index; without results it would be a stray metadata key
        model_name=name if eval_results else None,
        eval_results=eval_results or None,
    )
    vision = config.vision_config
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path or model_card_template_path()),
        model_name=name,
        repo_id=repo_id or "path/to/groupvit-checkpoint",
        base_model=base_model,
        license=license,
        architecture=_architecture_rows(config),
        num_parameters=_count_parameters(config),
        max_segments=_max_segments(config),
        patch_size=vision.patch_size,
        hard_assignment=vision.hard_assignment,
        gumbel=vision.gumbel,
        datasets=all_datasets,
        training_data=training_data or run.description,
        data_source=run.source,
        training_args=_training_rows(training_args or {}),
        steps_trained=(summary or {}).get("step"),
        results=parsed,
        logged_evaluations=[sentence for _, sentence in run.evaluations],
        citation=CITATION,
    )
