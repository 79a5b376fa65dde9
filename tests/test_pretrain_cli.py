"""The pretraining command line: generated from the run-config dataclasses, README examples parse as written."""

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

from groupvit.cli.pretrain import build_parser, main, parse_args
from groupvit.training.config import DataArguments, LossArguments, TrainingConfig, load_training_config

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = str(ROOT / "configs" / "tiny-synthetic.yaml")


def test_help_lists_every_field_with_type_default_and_choices():
    text = " ".join(build_parser().format_help().split())
    for cls in (TrainingConfig, DataArguments, LossArguments):
        for spec in dataclasses.fields(cls):
            if spec.name not in ("data", "loss"):
                assert f"--{spec.name} " in text, spec.name
    assert "--max_steps INT Optimizer steps of the whole run. (default: 209940)" in text
    assert "--learning_rate FLOAT" in text and "(default: 0.0016)" in text
    assert "--mixed_precision {no,bf16,fp16}" in text
    assert "--source {synthetic,webdataset,hf}" in text
    assert "--multi_label_group_pooling {mean,max}" in text
    assert "--crop_scale FLOAT FLOAT" in text and "(default: [0.08, 1.0])" in text
    assert not re.search(r"--\w+-\w+", text), "flags are spelled with underscores only"


def test_flags_become_typed_overrides():
    path, overrides = parse_args(
        [
            "--config",
            TINY_RUN,
            "--max_steps",
            "7",
            "--learning_rate",
            "2e-3",
            "--crop_scale",
            "0.5",
            "1",
            "--push_to_hub",
            "--streaming",
            "false",
            "--warmup_steps",
            "none",
            "--model_overrides",
            '{"vision_config": {"gumbel": false}}',
            "--set",
            "data.hflip=0.25",
        ]
    )
    assert path == TINY_RUN
    assert overrides == {
        "max_steps": 7,
        "learning_rate": 2e-3,
        "data.crop_scale": [0.5, 1.0],
        "push_to_hub": True,
        "data.streaming": False,
        "warmup_steps": None,
        "model_overrides": {"vision_config": {"gumbel": False}},
        "data.hflip": 0.25,
    }
    config = load_training_config(path, overrides)
    assert config.max_steps == 7 and config.data.crop_scale == (0.5, 1.0) and config.data.hflip == 0.25


def test_bad_flag_values_are_refused_by_the_parser(capsys):
    for argv in (
        ["--max_steps", "1.5"],
        ["--mixed_precision", "fp8"],
        ["--push_to_hub", "maybe"],
        ["--max_step", "3"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(argv)
        assert exit_info.value.code == 2
    assert "invalid choice: 'fp8'" in capsys.readouterr().err


def _readme_commands() -> list[list[str]]:
    commands = []
    for line in (ROOT / "README.md").read_text().splitlines():
        if "scripts/pretrain.py" in line and not line.lstrip().startswith(("|", "#")) and "--" in line:
            words = shlex.split(line, comments=True)  # as the shell reads it: a trailing "# ..." is a comment
            commands.append(words[words.index("scripts/pretrain.py") + 1 :])
    return commands


def test_readme_examples_parse_as_written():
    commands = _readme_commands()
    assert len(commands) >= 5
    for argv in commands:
        path, overrides = parse_args(argv)
        config = load_training_config(path, overrides)
        assert config.output_dir


@pytest.mark.parametrize(
    ("argv", "source"),
    [
        (["--dataset", "some/hub-id"], "hf"),
        (["--set", "data.dataset=./pairs.parquet"], "hf"),
        (["--train_shards", "shards/{0..3}.tar"], "webdataset"),
        ([], "synthetic"),
    ],
)
def test_a_dataset_flag_selects_its_source(argv, source):
    config = load_training_config(*parse_args(["--config", TINY_RUN, *argv]))
    assert config.data.source == source


def test_a_conflicting_source_is_an_error(capsys):
    with pytest.raises(ValueError, match=r"data\.dataset='x' is set but data\.source='synthetic'"):
        TrainingConfig.from_dict({"data": {"source": "synthetic", "dataset": "x"}})
    with pytest.raises(ValueError, match="both set"):
        DataArguments(dataset="x", train_shards="y")
    assert DataArguments(dataset="x").source == "hf" and DataArguments().source == "synthetic"
    assert main(["--config", TINY_RUN, "--source", "synthetic", "--dataset", "x"]) == 2
    assert "data.dataset='x' is set but data.source='synthetic'" in capsys.readouterr().err


def test_dataset_flag_trains_on_that_dataset(tmp_path):
    import datasets

    from groupvit.data.synthetic import make_split

    samples = make_split("objects", "train", 8, 32)
    parquet = tmp_path / "pairs.parquet"
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    rows = {"image": [s.image for s in samples], "text": [s.caption for s in samples]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(parquet))
    output = tmp_path / "run"
    argv = ["--config", TINY_RUN, "--output_dir", str(output), "--report_to", "none", "--eval_steps", "0"]
    argv += ["--max_steps", "3", "--per_device_train_batch_size", "4", "--checkpointing_steps", "0"]
    assert main([*argv, "--logging_steps", "1", "--dataset", str(parquet)]) == 0
    used = json.loads((output / "training_config.json").read_text())["data"]
    assert used["source"] == "hf" and used["dataset"] == str(parquet)
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["step"] == 3 and summary["samples_seen"] == 12
