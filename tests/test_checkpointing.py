"""Checkpoints are data only: a crafted pickle in a checkpoint folder is refused before anything runs it."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_run_args
from groupvit.cli.pretrain import main as pretrain_main
from groupvit.training.checkpointing import UnsafeCheckpointError, load_data_only


def _args(output_dir, max_steps, *extra):
    return tiny_run_args(
        output_dir,
        *("--max_steps", str(max_steps), "--checkpointing_steps", "2", "--logging_steps", "1"),
        *("--per_device_train_batch_size", "4", "--set", "data.synthetic_num_samples=64"),
        *extra,
    )


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


# --------------------------------------------------------------------------------------------------------------------
# fault injection: an output folder that cannot be written fails the run at start, naming the folder
# --------------------------------------------------------------------------------------------------------------------


def _unwritable_output(tmp_path: Path) -> Path:
    """An output path that no process can create: its parent is a regular file (works as root, unlike chmod)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    return blocker / "run"


def test_output_under_a_regular_file_fails_at_start_naming_it(tmp_path, capsys, monkeypatch):
    import groupvit.training.trainer as trainer

    def no_training(*args, **kwargs):
        raise AssertionError("the model was built: the output folder was not checked first")

    monkeypatch.setattr(trainer, "build_model", no_training)
    output = _unwritable_output(tmp_path)
    assert pretrain_main(_args(output, 2)) == 2
    err = capsys.readouterr().err
    assert str(output) in err and "not a writable folder" in err and "Traceback" not in err
    # the library refuses it too, before building anything
    from groupvit.training.config import TrainingConfig

    config = TrainingConfig.from_dict({"output_dir": str(output), "model_preset": "groupvit-tiny"})
    with pytest.raises(ValueError, match="output_dir=.*a_file/run.*not a writable folder"):
        trainer.train(config)


def test_read_only_output_folder_fails_at_start(tmp_path, capsys):
    import os
    import stat

    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)  # 0o555
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: chmod 0o555 does not stop writes (the regular-file parent case covers it)")
        assert pretrain_main(_args(folder, 2)) == 2
        err = capsys.readouterr().err
        assert str(folder) in err and "not a writable folder" in err
        assert not list(folder.iterdir())
    finally:
        folder.chmod(0o755)


def test_run_logs_a_summary_at_start_and_end(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="groupvit.training.trainer")
    output = tmp_path / "run"
    assert pretrain_main(_args(output, 2, "--scale_lr", "true", "--learning_rate", "0.004096")) == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "groupvit.training.trainer"]
    start = next(m for m in messages if "Run summary (start)" in m)
    end = next(m for m in messages if "Run summary (end)" in m)
    # 2 steps x global batch 4 (4 per device x 1 x 1 process); lr 0.004096 scaled by 4/4096 -> 4e-06
    assert "2 optimizer steps" in start and "8 image-caption pairs" in start
    assert "global batch:         4 = 4 per device x 1 accumulation x 1 process(es)" in start
    assert "peak learning rate:   4e-06" in start and "precision:            no" in start
    assert "synthetic 'objects' (64 pairs" in start
    summary = json.loads((output / "train_summary.json").read_text())
    assert "steps:      2" in end and "samples:    8" in end
    assert f"final losses: loss={summary['loss']:.4f}" in end
    assert "skipped samples: none" in end and f"model saved to: {output}" in end
    assert summary["wall_time_s"] > 0 and summary["samples_this_run"] == 8
