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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from groupvit.configuration_groupvit import GroupViTConfig

__all__ = [
    "CITATION",
    "DEFAULT_TAGS",
    "PIPELINE_TAG",
    "SegmentationResult",
    "model_card_template_path",
    "parse_segmentation_results",
    "render_model_card",
]

PIPELINE_TAG = "zero-shot-image-segmentation"
"""Pipeline task of the card. Not (yet) one of the Hub's official pipeline tags: the Hub accepts it but shows no
widget; pass `pipeline_tag="image-segmentation"` to `render_model_card` for the nearest official one."""
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


def _training_rows(training_args: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for name, value in training_args.items():
        if any(part in name for part in _SKIPPED_TRAINING_ARGS) or value is None:
            continue
        if isinstance(value, bool | int | float | str) or (
            isinstance(value, list | tuple) and all(isinstance(v, int | float | str) for v in value)
        ):
            rows.append((name, str(value).replace("|", "\\|")))
    return rows


def render_model_card(
    config: GroupViTConfig,
    results: Mapping[str, Any] | Sequence[Any] | str | os.PathLike | None = None,
    training_args: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    *,
    datasets: Sequence[str] | None = None,
    training_data: str | None = None,
    model_name: str | None = None,
    license: str = "apache-2.0",
    pipeline_tag: str = PIPELINE_TAG,
    tags: Sequence[str] = (),
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the model card of a GroupViT checkpoint.

    Args:
        config: The checkpoint's configuration (its architecture fills the "Model details" table).
        results: Zero-shot segmentation results (`results.json` path or content, see
            [`parse_segmentation_results`]); they become `model-index` eval results and the results table.
        training_args: Hyperparameters of the run (e.g. `vars(args)` of the training script); scalar entries other
            than paths, tokens and logging options are listed.
        repo_id: Hub id used in the usage examples and, by default, as the model name.
        base_model: Hub id of the checkpoint this one was fine-tuned or converted from.
        datasets: Hub dataset ids used for training (`datasets` metadata).
        training_data: Free text for the "Training data" section (default: the paper's data).
        model_name: Name in the title and the `model-index` (default: the repo name, else "groupvit").
        license: License identifier.
        pipeline_tag: Pipeline task of the card.
        tags: Tags added to [`DEFAULT_TAGS`].
        template_path: Another Jinja template (default: [`model_card_template_path`]).

    Returns:
        The card; `str(card)` is the README.md text and `card.save(path)` writes it.
    """
    parsed = parse_segmentation_results(results) if results is not None else []
    name = model_name or (repo_id.rstrip("/").split("/")[-1] if repo_id else "groupvit")
    card_data = ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=[*DEFAULT_TAGS, *tags],
        datasets=list(datasets) if datasets else None,
        base_model=base_model,
        metrics=[_METRIC_TYPE] if parsed else None,
        # model_name only names the model-index; without results it would be a stray metadata key
        model_name=name if parsed else None,
        eval_results=[result.to_eval_result() for result in parsed] or None,
    )
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
        patch_size=config.vision_config.patch_size,
        datasets=list(datasets or []),
        training_data=training_data,
        training_args=_training_rows(training_args or {}),
        results=parsed,
        citation=CITATION,
    )
