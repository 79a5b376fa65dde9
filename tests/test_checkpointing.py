"""Checkpoints are data only: a crafted pickle in a checkpoint folder is refused before anything runs it."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from groupvit.cli.pretrain import main as pretrain_main
from groupvit.training.checkpointing import UnsafeCheckpointError, load_data_only

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = str(ROOT / "configs" / "tiny-synthetic.yaml")


def _args(output_dir, max_steps, *extra):
    return [
        "--config",
        TINY_RUN,
        "--output_dir",
        str(output_dir),
        "--report_to",
        "none",
        "--eval_steps",
        "0",
        "--max_steps",
        str(max_steps),
        "--checkpointing_steps",
        "2",
        "--logging_steps",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--set",
        "data.synthetic_num_samples=64",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 2-step run with its checkpoint-2."""
    output = tmp_path_factory.mktemp("run")
    assert pretrain_main(_args(output, 2)) == 0
    return output


@pytest.fixture()
def run_copy(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


class _WritesMarker:
    """Unpickling this object writes a file: what a crafted checkpoint could do with full unpickling."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_checkpoint_holds_only_data(trained_run):
    checkpoint = trained_run / "checkpoint-2"
    names = sorted(p.name for p in checkpoint.iterdir())
    assert names == [
        "custom_checkpoint_0.pkl",  # the training loss module (multi-label temperature): tensors only
        "model.safetensors",
        "optimizer.bin",
        "random_states_0.pkl",
        "scheduler.json",
        "trainer_state.json",
    ]
    for name in ("custom_checkpoint_0.pkl", "optimizer.bin", "random_states_0.pkl"):
        load_data_only(checkpoint / name)
    assert json.loads((checkpoint / "scheduler.json").read_text())["last_epoch"] == 2


@pytest.mark.parametrize("name", ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"])
def test_resume_refuses_a_crafted_pickle(run_copy, tmp_path, name):
    marker = tmp_path / "marker"
    torch.save({"state": _WritesMarker(marker)}, run_copy / "checkpoint-2" / name)
    with pytest.raises(UnsafeCheckpointError, match=name):
        pretrain_main(_args(run_copy, 4, "--resume_from_checkpoint", "latest"))
    assert not marker.exists()


def test_unreadable_random_state_fails_loudly(run_copy):
    rng = run_copy / "checkpoint-2" / "random_states_0.pkl"
    rng.write_bytes(rng.read_bytes()[:40])
    with pytest.raises(UnsafeCheckpointError, match="random_states_0.pkl"):
        pretrain_main(_args(run_copy, 4, "--resume_from_checkpoint", "latest"))


def test_missing_random_state_is_a_warning_naming_it(run_copy, caplog):
    (run_copy / "checkpoint-2" / "random_states_0.pkl").unlink()
    with caplog.at_level(logging.WARNING, logger="groupvit.training.checkpointing"):
        assert pretrain_main(_args(run_copy, 4, "--resume_from_checkpoint", "latest")) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("random_states_0.pkl" in w and "NOT restored" in w for w in warnings), warnings
    assert json.loads((run_copy / "train_summary.json").read_text())["step"] == 4


def test_resume_restores_the_scheduler(run_copy):
    assert pretrain_main(_args(run_copy, 4, "--resume_from_checkpoint", "latest")) == 0
    scheduler = json.loads((run_copy / "checkpoint-4" / "scheduler.json").read_text())
    assert scheduler["last_epoch"] == 4 and scheduler["_step_count"] == 5
