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
    assert metadata["pipeline_tag"] == PIPELINE_TAG == "image-segmentation"
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
    assert '"zero-shot-image-segmentation", model="me/groupvit-tiny", pipeline_class=' in text
    assert 'pipeline("zero-shot-image-segmentation", model="me/groupvit-tiny", trust_remote_code=True)' in text
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
    assert "No evaluation was recorded for this checkpoint." in card.text
    assert card.text.count("Not recorded for this checkpoint.") == 2  # training data and procedure
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


# ---------------------------------------------------------------------------------------------------------------------
# Cards of training runs: what the run did, nothing from the paper's setup
# ---------------------------------------------------------------------------------------------------------------------

# Statements about the paper's training setup or results; a card may only contain them if its run did the same.
PAPER_CLAIMS = ("CC12M", "YFCC", "RedCaps", "28.7", "4096", "30 epochs", "16 GPUs", "52.3", "paper's recipe")
ACCURACY_SUMMARY = {
    "step": 40,
    "loss": 1.5,
    "eval/zero_shot_accuracy": 0.4375,
    "history": [{"step": 20, "eval/zero_shot_accuracy": 0.25}, {"step": 40, "eval/zero_shot_accuracy": 0.4375}],
}
SHARDS = ["hf://datasets/pixparse/cc3m-wds/cc3m-train-{0000..0575}.tar", "/data/extra/shard-{000..009}.tar"]


def _run_config(**values) -> dict:
    from groupvit.training.config import DataArguments, TrainingConfig

    data = values.pop("data")
    return TrainingConfig(data=DataArguments(**data), **values).to_dict()


def _table(text: str) -> dict[str, str]:
    section = text.split("## Training procedure", 1)[1].split("## Evaluation", 1)[0]
    return dict(re.findall(r"^\| (\S+) \| (.*) \|$", section, re.MULTILINE))


def _data_rows(config: dict) -> dict[str, str]:
    """Every data setting with a value, formatted like the card's table."""
    rows = {}
    for name, value in config["data"].items():
        if value not in (None, []):
            rows[f"data.{name}"] = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return rows


def test_card_says_when_the_default_augmentation_was_turned_off():
    config = _run_config(data={"source": "synthetic", "rand_augment": None, "random_erasing": 0.0})
    table = _table(render_model_card(tiny_config(), training_args=config).text)
    # None here is a choice (the default is the paper's RandAugment); an unset list is left out
    assert table["data.rand_augment"] == "none" and table["data.random_erasing"] == "0.0"
    assert "data.multiscale_sizes" not in table and "data.dataset" not in table
    paper = _table(render_model_card(tiny_config(), training_args=_run_config(data={"source": "synthetic"})).text)
    assert paper["data.rand_augment"] == "rand-m9-mstd0.5-inc1"


@pytest.fixture(scope="module")
def synthetic_run() -> tuple[dict, ModelCard]:
    config = _run_config(
        data={
            "source": "synthetic",
            "synthetic_preset": "shapes",
            "synthetic_num_samples": 1234,
            "synthetic_seed": 7,
            "synthetic_recolor": "jitter",
            "synthetic_recolor_share": 0.5,
        },
        init_from="me/groupvit-base",
        eval_steps=20,
        eval_num_samples=96,
        max_steps=40,
    )
    card = render_model_card(tiny_config(), training_args=config, summary=ACCURACY_SUMMARY, repo_id="me/tiny-run")
    return config, card


@pytest.fixture(scope="module")
def webdataset_run(tmp_path_factory) -> tuple[dict, ModelCard]:
    local_init = tmp_path_factory.mktemp("init") / "stage1"
    local_init.mkdir()
    config = _run_config(
        data={"source": "webdataset", "train_shards": SHARDS, "resampled": True}, init_from=str(local_init)
    )
    results = {"pascal_voc": {"mean_iou": 0.112, "bg_thresh": 0.9}}
    card = render_model_card(tiny_config(), results=results, training_args=config, summary={"step": 100})
    return config, card


def test_synthetic_run_card(synthetic_run):
    config, card = synthetic_run
    metadata = _metadata(str(card))
    text = card.text
    # data: the preset and its size, no Hub dataset
    assert "preset `shapes`, 1234 training samples, seed 7" in text
    assert "A share of 0.5 of the training images has its objects recoloured (`jitter`)" in text
    assert "datasets" not in metadata and "Datasets:" not in text
    # base_model from init_from (a Hub id)
    assert metadata["base_model"] == "me/groupvit-base"
    assert "Training started from the weights of [`me/groupvit-base`]" in text
    # the logged evaluation, in model-index and in the text
    (index,) = metadata["model-index"]
    (result,) = index["results"]
    assert result["task"]["type"] == "zero-shot-image-classification"
    assert result["dataset"] == {
        "name": "groupvit synthetic shapes (validation, 96 images)",
        "type": "groupvit-synthetic-shapes",
        "split": "validation",
    }
    assert result["metrics"] == [{"type": "accuracy", "value": 43.75, "name": "accuracy (%)"}]
    assert metadata["metrics"] == ["accuracy"]
    assert "logged during training at step 40: 43.8% on 96 synthetic validation images (preset `shapes`, seed 7)" in (
        text
    )
    # every data setting of the synthetic source, none of the other sources
    table = _table(text)
    expected = {k: v for k, v in _data_rows(config).items() if k not in ("data.split", "data.streaming")}
    expected = {k: v for k, v in expected.items() if not k.endswith(("_column", ".resampled"))}
    assert {k: v for k, v in table.items() if k.startswith("data.")} == expected
    assert table["init_from"] == "me/groupvit-base" and table["max_steps"] == "40"
    assert "which trained for 40 steps" in text
    # synthetic limitations, no web-data claim
    assert "saw only synthetic, procedurally drawn images" in text
    assert "biases of the image-caption data" not in text


def test_webdataset_run_card(webdataset_run):
    config, card = webdataset_run
    metadata = _metadata(str(card))
    text = card.text
    # data: the shard patterns; the Hub dataset among them becomes metadata
    assert "webdataset shards: " + ", ".join(f"`{pattern}`" for pattern in SHARDS) in text
    assert metadata["datasets"] == ["pixparse/cc3m-wds"]
    assert "Datasets: `pixparse/cc3m-wds`." in text
    # a local init_from is named but is no base_model metadata
    assert "base_model" not in metadata
    assert f"Training started from the weights of `{config['init_from']}`" in text
    # segmentation results only (no accuracy logged)
    (index,) = metadata["model-index"]
    (result,) = index["results"]
    assert result["metrics"][0]["type"] == "mean_iou" and result["metrics"][0]["value"] == 11.2
    assert "| PASCAL VOC 2012 | val | 11.2 | 0.9 |" in text
    assert "logged during training" not in text
    table = _table(text)
    assert table["data.train_shards"] == ", ".join(SHARDS).replace("|", "\\|")
    assert table["data.resampled"] == "True" and table["data.source"] == "webdataset"
    assert not [name for name in table if name.startswith("data.synthetic_") or name == "data.dataset"]
    for name, value in _data_rows(config).items():
        if not name.startswith("data.synthetic_") and name not in ("data.split", "data.streaming"):
            if not name.endswith("_column"):
                assert table[name] == value, name
    assert "biases of the image-caption data" in text and "procedurally drawn" not in text


def test_hub_dataset_source_becomes_metadata():
    config = _run_config(data={"source": "hf", "dataset": "me/captions", "split": "train[:1000]"})
    card = render_model_card(tiny_config(), training_args=config)
    assert _metadata(str(card))["datasets"] == ["me/captions"]
    assert "`datasets` source `me/captions` (split `train[:1000]`" in card.text
    assert _table(card.text)["data.image_column"] == "image"


@pytest.mark.parametrize("run", ["synthetic_run", "webdataset_run"])
def test_run_cards_install_before_usage_and_claim_nothing_from_the_paper(run, request):
    _, card = request.getfixturevalue(run)
    text = card.text
    usage = text.split("## How to use", 1)[1]
    assert usage.index("pip install groupvit") < usage.index("```python")
    assert "trust_remote_code=True" in usage
    for claim in PAPER_CLAIMS:
        assert claim not in text, claim


def test_template_states_no_paper_setup_as_this_runs():
    template = Path(model_card_template_path()).read_text()
    for claim in PAPER_CLAIMS:
        assert claim not in template, claim


def test_pipeline_tag_is_one_the_hub_knows():
    from huggingface_hub.inference._providers import PROVIDERS

    hub_tasks = set(PROVIDERS["hf-inference"])
    assert PIPELINE_TAG in hub_tasks
    assert "zero-shot-image-segmentation" not in hub_tasks  # why the card does not use it


def test_pretrain_writes_the_card_of_its_run(tmp_path):
    """`groupvit pretrain` end to end (2 steps of the tiny synthetic run): the card it writes describes that run."""
    from groupvit.cli.pretrain import main as pretrain_main

    run = str(ROOT / "configs" / "tiny-synthetic.yaml")
    args = ["--config", run, "--output_dir", str(tmp_path), "--report_to", "none", "--max_steps", "2"]
    settings = ["data.synthetic_num_samples=64", "eval_steps=2", "eval_num_samples=8", "logging_steps=1"]
    assert pretrain_main([*args, *(part for setting in settings for part in ("--set", setting))]) == 0
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    card = ModelCard.load(tmp_path / "README.md")
    (result,) = card.data.eval_results
    assert result.metric_type == "accuracy" and result.dataset_split == "validation"
    assert result.metric_value == round(summary["eval/zero_shot_accuracy"] * 100, 2)
    assert "preset `objects`, 64 training samples, seed 0" in card.text
    assert _table(card.text)["data.image_size"] == "32" and "which trained for 2 steps" in card.text
