"""Model card rendering: Hub metadata, eval results round trip, body sections, the packaged template."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from huggingface_hub import EvalResult, ModelCard
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from conftest import tiny_config
from groupvit.hub.model_card import (
    CITATION,
    DEFAULT_TAGS,
    PIPELINE_TAG,
    model_card_template_path,
    parse_segmentation_results,
    render_model_card,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = {
    "model": "me/groupvit-tiny",  # run metadata: skipped
    "pascal_voc": {"mean_iou": 0.523, "bg_thresh": 0.95, "per_category_iou": [0.8, 0.4]},
    "pascal_context": {"mean_iou": 0.224, "bg_thresh": 0.35},
    "coco_object": {"mIoU": 24.3},
}


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return render_model_card(
        tiny_config(),
        results=RESULTS,
        training_args={"learning_rate": 1.6e-3, "batch_size": 4096, "output_dir": "/tmp/run", "hub_token": "x"},
        repo_id="me/groupvit-tiny",
        base_model="nvidia/groupvit-gcc-yfcc",
        datasets=["pixparse/cc3m-wds"],
    )


def _metadata(text: str) -> dict:
    match = REGEX_YAML_BLOCK.search(text)
    assert match is not None, "no YAML block"
    return yaml.safe_load(match.group(2))


def test_metadata_keys_and_values(card):
    # ModelCard.validate() posts to the Hub (/api/validate-yaml), so the YAML is checked here instead.
    metadata = _metadata(str(card))
    assert metadata["license"] == "apache-2.0"
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == PIPELINE_TAG == "zero-shot-image-segmentation"
    assert metadata["tags"] == list(DEFAULT_TAGS)
    assert metadata["datasets"] == ["pixparse/cc3m-wds"]
    assert metadata["base_model"] == "nvidia/groupvit-gcc-yfcc"
    assert metadata["metrics"] == ["mean_iou"]
    assert set(metadata) == {
        "license",
        "library_name",
        "pipeline_tag",
        "tags",
        "datasets",
        "base_model",
        "metrics",
        "model-index",
    }
    (index,) = metadata["model-index"]
    assert index["name"] == "groupvit-tiny"
    for result in index["results"]:
        assert set(result) == {"task", "dataset", "metrics"}
        assert result["task"]["type"] == "image-segmentation"
        assert {"name", "type"} <= set(result["dataset"])
        (metric,) = result["metrics"]
        assert metric["type"] == "mean_iou" and isinstance(metric["value"], float)


def test_eval_results_round_trip(card):
    parsed = ModelCard(str(card))
    expected = [
        ("pascal_voc", "PASCAL VOC 2012", "val", 52.3),
        ("pascal_context", "PASCAL Context", "val", 22.4),
        ("coco_object", "COCO-Object", "val2017", 24.3),
    ]
    assert parsed.data.model_name == "groupvit-tiny"
    assert [
        (r.dataset_type, r.dataset_name, r.dataset_split, r.metric_value) for r in parsed.data.eval_results
    ] == expected
    assert all(isinstance(r, EvalResult) and r.task_type == "image-segmentation" for r in parsed.data.eval_results)
    assert parsed.data.eval_results == card.data.eval_results
    assert parsed.data.to_dict() == card.data.to_dict()


def test_body_sections(card):
    text = card.text
    for heading in (
        "# groupvit-tiny",
        "## Model details",
        "## How to use",
        "## Training data",
        "## Training procedure",
        "## Evaluation",
        "## Limitations and bias",
        "## Citation",
    ):
        assert re.search(rf"^{re.escape(heading)}$", text, re.MULTILINE), heading
    assert 'pipeline("zero-shot-image-segmentation", model="me/groupvit-tiny")' in text
    assert 'GroupViTModel.from_pretrained("me/groupvit-tiny")' in text
    assert "| PASCAL VOC 2012 | val | 52.3 | 0.95 |" in text
    assert "| COCO-Object | val2017 | 24.3 | - |" in text
    assert "| vision layers per stage | [2, 2, 2] (3 stages) |" in text
    assert "| learning_rate | 0.0016 |" in text and "output_dir" not in text and "hub_token" not in text
    assert CITATION in text
    assert (
        "Xu, Jiarui and De Mello, Shalini and Liu, Sifei and Byeon, Wonmin and Breuel, Thomas and Kautz, Jan" in text
    )
    assert "{{" not in text and "{%" not in text


def test_card_without_results_or_repo(tmp_path):
    card = render_model_card(tiny_config())
    metadata = _metadata(str(card))
    assert "model-index" not in metadata and "metrics" not in metadata and "model_name" not in metadata
    assert "No evaluation results were recorded" in card.text
    assert card.data.eval_results is None
    card.save(tmp_path / "README.md")
    assert ModelCard.load(tmp_path / "README.md").data.to_dict() == card.data.to_dict()


def test_results_from_file_and_other_layouts(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(
        json.dumps({"results": [{"dataset": "voc", "miou": 52.29}, {"dataset": "ade20k", "mean_iou": 0.1}]})
    )
    voc, ade = parse_segmentation_results(path)
    assert (voc.dataset_type, voc.mean_iou) == ("pascal_voc", 52.29)
    assert (ade.dataset_type, ade.dataset_name, ade.split, ade.mean_iou) == ("ade20k", "ade20k", None, 10.0)
    (single,) = parse_segmentation_results({"dataset": "context", "mean_iou": 0.2, "split": "test"})
    assert (single.dataset_name, single.split) == ("PASCAL Context", "test")
    card = render_model_card(tiny_config(), results=path, model_name="custom")
    assert ModelCard(str(card)).data.model_name == "custom"


@pytest.mark.parametrize("bad", [{"voc": {"mean_iou": 130}}, {"voc": {"mean_iou": "high"}}, {"voc": {}}, [1]])
def test_bad_results_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_segmentation_results(bad)


def test_template_is_a_package_resource_and_the_only_copy():
    template = Path(model_card_template_path())
    assert template.is_file() and template.parent.name == "resources"
    assert "{{ card_data }}" in template.read_text()
    pointer = (ROOT / "model_cards" / "README.md").read_text()
    assert "src/groupvit/resources/model_card_template.md" in pointer
    assert not list((ROOT / "model_cards").glob("*template*"))


def test_custom_template(tmp_path):
    template = tmp_path / "t.md"
    template.write_text("---\n{{ card_data }}\n---\n\n# {{ model_name }} has {{ num_parameters }} parameters\n")
    card = render_model_card(tiny_config(), template_path=template, repo_id="me/x")
    assert card.text.strip().startswith("# x has ") and card.data.license == "apache-2.0"
