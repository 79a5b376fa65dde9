"""Pretraining: config validation, optimizer groups, atomic checkpoints, kill -9 + resume, 2 processes, push."""

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import groupvit
from conftest import TINY_RUN, tiny_run_args
from groupvit.cli.pretrain import main as pretrain_main
from groupvit.training import trainer as training
from groupvit.training.config import DataArguments, LossArguments
from groupvit.training.trainer import (
    TrainingConfig,
    list_checkpoints,
    load_training_config,
    parameter_groups,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[1]


def _args(output_dir, *extra):
    return tiny_run_args(output_dir, "--set", "data.synthetic_num_samples=2000", *extra)


def test_config_file_and_overrides(tmp_path):
    config = load_training_config(TINY_RUN, {"data.num_workers": 3, "max_steps": 7})
    assert config.model_preset == "groupvit-tiny" and config.max_steps == 7 and config.data.num_workers == 3
    assert config.data.crop_scale == (0.6, 1.0)
    paper = load_training_config(str(ROOT / "configs" / "groupvit-s-gcc-yfcc.yaml"))
    assert paper.learning_rate == 1.6e-3 and paper.per_device_train_batch_size * 16 == 4096


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model_preset": "groupvit-xl"}, "Unknown model_preset 'groupvit-xl'"),
        ({"data.source": "webdataset", "data.train_shards": "/nowhere/shard-{0..3}.tar"}, "do not exist"),
        ({"data.source": "hf", "data.dataset": "./missing-folder"}, "does not exist"),
        ({"data.source": "webdataset"}, "needs data.train_shards"),
        ({"max_steps": 0}, "max_steps=0 is out of range"),
        ({"data.noun_extractor": "spacy-large"}, "spacy-large"),
        ({"push_to_hub": True}, "needs hub_model_id"),
        ({"per_device_train_batch_size": 1}, "global batch of at least 2"),
        ({"loss.multi_label_target": "noun"}, "loss.multi_label_target='noun' is not one of"),
        ({"loss.multi_label_group_pooling": "sum"}, "loss.multi_label_group_pooling='sum' is not one of"),
        ({"loss.group_diversity_weight": -1.0}, "loss.group_diversity_weight must be finite and >= 0"),
        ({"loss.multi_label_weight": float("nan")}, "loss.multi_label_weight must be finite"),
        ({"mixed_precision": "fp8"}, "mixed_precision='fp8' is not one of"),
        ({"loss.group_purity_weight": 1.0}, "loss.group_purity_weight=1.0 needs loss.dense_noun_weight > 0"),
        ({"loss.dense_noun_weight": 1.0, "data.num_prompt_nouns": 0}, "data.num_prompt_nouns must be >= 1, got 0"),
        ({"loss.dense_noun_top_k": 0}, "loss.dense_noun_top_k=0 is out of range"),
        ({"loss.group_distill_weight": -0.5}, "loss.group_distill_weight must be finite and >= 0"),
        ({"data.rand_augment": "rand-q9"}, "data.rand_augment: unknown RandAugment policy part 'q9'"),
        ({"data.rand_augment": "autoaug-v0"}, "data.rand_augment: a RandAugment policy looks like"),
        ({"data.rand_augment": "rand-m12"}, "magnitude must be in"),
        ({"data.random_erasing": 1.5}, "data.random_erasing=1.5 is out of range"),
        ({"loss.itc_weight": -1.0}, "loss.itc_weight must be finite and >= 0"),
        ({"loss.itc_weight": 0.0, "loss.multi_label_weight": 0.0}, "loss.itc_weight=0 leaves no term"),
        ({"loss.itc_weight": 0.0, "data.num_prompt_nouns": 0}, "loss.itc_weight=0 leaves no term"),
        ({"loss.dense_noun_backprop": "image"}, "loss.dense_noun_backprop='image' would be ignored"),
        ({"loss.dense_noun_backprop": "text"}, "loss.dense_noun_backprop='text' is not one of"),
        ({"data.synthetic_recolor_share": 0.5}, "data.synthetic_recolor_share=0.5 would be ignored"),
        ({"data.synthetic_recolor": "sepia"}, "data.synthetic_recolor='sepia' is unknown"),
        (
            {"data.synthetic_recolor": "jitter", "data.synthetic_recolor_share": 0.0},
            r"data.synthetic_recolor_share=0.0 is invalid; allowed: \(0, 1\]",
        ),
        (
            {"data.multiscale_sizes": [16, 48]},
            r"data.multiscale_sizes=\[16, 48\]: \[48\] outside \[8, data.image_size=32\]",
        ),
    ],
)
def test_bad_config_fails_at_start(overrides, message):
    with pytest.raises(ValueError, match=message):
        validate_config(load_training_config(TINY_RUN, overrides))


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"max_grad_norm": -1.0}, ValueError, r"max_grad_norm=-1\.0 is out of range; allowed: \[0, inf\)"),
        ({"min_learning_rate": -1e-5}, ValueError, r"min_learning_rate=-1e-05 is out of range; allowed: \[0, inf\)"),
        ({"min_learning_rate": 0.5}, ValueError, r"min_learning_rate=0\.5 is above learning_rate=0\.001"),
        ({"learning_rate": 0.0}, ValueError, r"learning_rate=0\.0 is out of range; allowed: \(0, inf\)"),
        ({"learning_rate": "1e-3"}, TypeError, r"learning_rate='1e-3' has type str; expected float .*1\.0e-3"),
        ({"logging_steps": 0}, ValueError, r"logging_steps=0 is out of range; allowed: \[1, inf\)"),
        ({"max_steps": 100.5}, TypeError, r"max_steps=100\.5 has type float; expected int"),
        ({"max_steps": True}, TypeError, r"max_steps=True has type bool; expected int"),
        ({"checkpointing_steps": -5}, ValueError, r"checkpointing_steps=-5 is out of range; allowed: \[0, inf\)"),
        ({"warmup_steps": -1}, ValueError, r"warmup_steps=-1 is out of range"),
        ({"checkpoints_total_limit": 0}, ValueError, r"checkpoints_total_limit=0 is out of range"),
        ({"adam_beta2": 1.0}, ValueError, r"adam_beta2=1\.0 is out of range; allowed: \[0, 1\)"),
        ({"weight_decay": -0.1}, ValueError, r"weight_decay=-0\.1 is out of range"),
        ({"gradient_accumulation_steps": 0}, ValueError, r"gradient_accumulation_steps=0 is out of range"),
        ({"mixed_precision": "fp8"}, ValueError, r"mixed_precision='fp8' is not one of"),
        ({"seed": -1}, ValueError, r"seed=-1 is out of range"),
        ({"ddp_timeout": 0}, ValueError, r"ddp_timeout=0 is out of range; allowed: \[1, inf\)"),
        ({"data.crop_scale": [0.9, 0.5]}, ValueError, r"data\.crop_scale=\(0\.9, 0\.5\) is invalid; allowed: 0 < low"),
        ({"data.crop_scale": [0.0, 1.0]}, ValueError, r"data\.crop_scale=\(0\.0, 1\.0\) is invalid"),
        ({"data.crop_scale": [0.5, 1.5]}, ValueError, r"data\.crop_scale=\(0\.5, 1\.5\) is invalid"),
        ({"data.crop_scale": [0.5]}, TypeError, r"data\.crop_scale=\(0\.5,\) has type tuple"),
        ({"data.crop_scale": 0.5}, TypeError, r"data\.crop_scale=0\.5 has type float; expected tuple"),
        ({"data.num_workers": -1}, ValueError, r"data\.num_workers=-1 is out of range; allowed: \[0, inf\)"),
        ({"data.hflip": 1.5}, ValueError, r"data\.hflip=1\.5 is out of range; allowed: \[0, 1\]"),
        ({"data.image_size": 0}, ValueError, r"data\.image_size=0 is out of range"),
        ({"data.shuffle_buffer_size": -1}, ValueError, r"data\.shuffle_buffer_size=-1 is out of range"),
        ({"data.num_prompt_nouns": -1}, ValueError, r"data\.num_prompt_nouns=-1 is out of range"),
        ({"data.source": "s3"}, ValueError, r"data\.source='s3' is not one of"),
        ({"loss.multi_label_logit_scale_init": float("inf")}, ValueError, r"scale_init must be finite, got inf"),
        ({"max_grad_norm": float("nan")}, ValueError, r"max_grad_norm must be finite, got nan"),
        ({"data.streaming": "yes"}, TypeError, r"data\.streaming='yes' has type str; expected bool"),
        ({"model_overrides": {"projection_dimm": 8}}, ValueError, r"model_overrides\.projection_dimm"),
        (
            {"model_overrides": {"vision_config": {"depth": [1, 1]}}},
            ValueError,
            r"model_overrides\.vision_config\.depth'",
        ),
        ({"model_overrides": {"vision_config": 3}}, TypeError, r"model_overrides\.vision_config=3 must be a mapping"),
    ],
)
def test_bad_values_are_refused_naming_field_value_and_range(overrides, error, message):
    config = load_training_config(TINY_RUN, overrides)
    with pytest.raises(error, match=message):
        validate_config(config)
    # the command line reports the same, before any step runs
    assert (
        pretrain_main(
            ["--config", TINY_RUN, *[a for k, v in overrides.items() for a in ("--set", f"{k}={json.dumps(v)}")]]
        )
        == 2
    )


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match=r"data\.image_colum"):
        TrainingConfig.from_dict({"data": {"image_colum": "img"}})
    assert pretrain_main(["--config", TINY_RUN, "--set", "learning_rat=1"]) == 2


def test_parameter_groups_follow_the_original():
    model = groupvit.GroupViTModel(groupvit.GroupViTConfig.from_preset("groupvit-tiny"))
    decay, no_decay = parameter_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert "logit_scale" in decayed  # 0-d: decayed, as in the original
    assert "vision_model.embeddings.position_embeddings" in decayed
    assert all(not n.endswith(".bias") for n in decayed)
    assert "vision_model.layernorm.weight" in {names[id(p)] for p in no_decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    # the loss module's temperature is optimised too, decayed as the original's 0-d multi_label_logit_scale
    loss_fn = training.build_loss(load_training_config(TINY_RUN), model)
    decay, _ = parameter_groups(model, 0.05, loss_fn)
    assert any(p is loss_fn.terms["multi_label"].logit_scale for p in decay["params"])


def test_interrupted_checkpoint_is_ignored(tmp_path):
    (tmp_path / ".tmp-checkpoint-30").mkdir()
    (tmp_path / "checkpoint-20").mkdir()
    (tmp_path / "checkpoint-20" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-25").mkdir()  # no trainer state: not complete
    assert list_checkpoints(tmp_path) == [tmp_path / "checkpoint-20"]
    assert training.resolve_checkpoint(tmp_path, "latest") == tmp_path / "checkpoint-20"
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        training.resolve_checkpoint(tmp_path, str(tmp_path / "checkpoint-25"))


def _run_script(args, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "pretrain.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.mark.slow
def test_kill_and_resume_reaches_the_same_weights(tmp_path):
    steps = ["--max_steps", "40", "--checkpointing_steps", "10", "--logging_steps", "10"]
    reference = _run_script(_args(tmp_path / "reference", *steps))
    assert reference.wait(timeout=300) == 0, reference.stdout.read()[-3000:]

    killed = _run_script(_args(tmp_path / "resumed", *steps))
    deadline = time.time() + 300
    while not (tmp_path / "resumed" / "checkpoint-20").exists():
        assert killed.poll() is None and time.time() < deadline, "run ended before checkpoint-20"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "resumed" / "model.safetensors").exists()

    resumed = _run_script(_args(tmp_path / "resumed", *steps, "--resume_from_checkpoint", "latest"))
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output[-3000:]
    assert "Resumed from" in output
    summary = json.loads((tmp_path / "resumed" / "train_summary.json").read_text())
    assert summary["step"] == 40 and summary["samples_seen"] == 40 * 32
    for weights in ("model.safetensors", training.LOSS_STATE):
        ours = load_file(tmp_path / "resumed" / weights)
        ref = load_file(tmp_path / "reference" / weights)
        assert ours.keys() == ref.keys()
        for name, tensor in ref.items():
            torch.testing.assert_close(ours[name], tensor, atol=1e-6, rtol=1e-5, msg=name)
    # the multi-label temperature trained (so a resume that lost it would not match)
    assert ref["terms.multi_label.logit_scale"].item() != pytest.approx(2.6592, abs=1e-6)


@pytest.mark.slow
def test_one_process_run_trains_and_saves_a_loadable_model(tmp_path):
    assert (
        pretrain_main(_args(tmp_path, "--max_steps", "60", "--logging_steps", "10", "--checkpointing_steps", "0")) == 0
    )
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["loss"] < summary["first_loss"] - 0.5
    assert {"groups_used/stage1", "groups_used/stage2", "samples_per_second"} <= set(summary)
    model = groupvit.GroupViTModel.from_pretrained(tmp_path)
    assert isinstance(model, groupvit.GroupViTModel)
    assert groupvit.GroupViTProcessor.from_pretrained(tmp_path).image_processor.crop_size["height"] == 32
    card = (tmp_path / "README.md").read_text()
    assert "zero-shot-image-segmentation" in card
    assert sorted(p.name for p in tmp_path.glob("*.bin")) == []


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["paper", "dense_noun_alone"])
def test_two_cpu_processes_train(tmp_path, objective):
    """`torchrun --nproc_per_node 2` on CPU: gloo, the loss gathered across both processes.

    `dense_noun_alone` (the demo's shape/ stage 0) leaves weights without gradient, which DDP must be told about.
    """
    args = _args(
        tmp_path,
        "--max_steps",
        "30",
        "--logging_steps",
        "10",
        "--per_device_train_batch_size",
        "16",
        "--checkpointing_steps",
        "30",
    )
    if objective == "dense_noun_alone":
        loss = {"itc_weight": 0.0, "multi_label_weight": 0.0, "dense_noun_weight": 1.0}
        args += [arg for key, value in loss.items() for arg in ("--set", f"loss.{key}={value}")]
        args += ["--set", "loss.dense_noun_backprop=image_text"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --standalone: rendezvous on a free port (a fixed port collides with a concurrent or orphaned run and can hang);
    # --ddp_timeout: a stuck collective fails with a gloo timeout instead of waiting 30 minutes
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    # output to a file, not a pipe: torchrun starts its workers in their own sessions, so a worker that outlives the
    # launcher would hold a pipe open (and escape a process-group kill); they are found by their output folder instead
    log = tmp_path.parent / f"{tmp_path.name}-torchrun.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [*command, str(ROOT / "scripts" / "pretrain.py"), *args, "--ddp_timeout", "180"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            process.wait(timeout=540)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        finally:
            _kill_processes_mentioning(str(tmp_path))
    output = log.read_text()
    assert process.returncode == 0, (
        f"torchrun exit status {process.returncode} (-9: killed after 540 s):\n{output[-3000:]}"
    )
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["samples_seen"] == 30 * 16 * 2
    assert summary["loss"] < summary["first_loss"]
    states = sorted(p.name for p in (tmp_path / "checkpoint-30").glob("random_states_*"))
    assert states == ["random_states_0.pkl", "random_states_1.pkl"]


def _kill_processes_mentioning(text: str) -> None:
    """SIGKILL every process whose command line contains `text` (Linux /proc; elsewhere nothing)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace") and int(cmdline.parent.name) != os.getpid():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _png_bytes(color=(200, 10, 10)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _planted_shard(path: Path) -> None:
    """8 good pairs, a corrupt image, an empty caption, 2 good pairs, then the file ends inside a member.

    With batches of 4 and no shuffling an epoch is: 2 full batches, a partial batch of 2 carrying the two sample
    skips, and the truncated shard's skip after the last sample.
    """
    import io
    import tarfile

    def add(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as tar:
        for i in range(8):
            add(tar, f"g{i}.png", _png_bytes((20 * i, 100, 50)))
            add(tar, f"g{i}.txt", f"a red square number {i}".encode())
        add(tar, "h.jpg", b"not an image")
        add(tar, "h.txt", b"a broken image")
        add(tar, "i.png", _png_bytes())
        add(tar, "i.txt", b"  ")
        for i in (8, 9):
            add(tar, f"g{i}.png", _png_bytes((20 * i, 100, 50)))
            add(tar, f"g{i}.txt", f"a red square number {i}".encode())
        add(tar, "z.png", _png_bytes() * 50)
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"z.png") + 512 + 300])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_counts_in_the_summary_equal_what_was_planted(tmp_path, num_workers):
    shard = tmp_path / "shard-000000.tar"
    _planted_shard(shard)
    args = [
        *_args(tmp_path / "run", "--max_steps", "3", "--logging_steps", "1", "--checkpointing_steps", "0"),
        *["--train_shards", str(shard), "--per_device_train_batch_size", "4", "--num_workers", str(num_workers)],
    ]
    # step 3 is the first batch of epoch 2, so all of epoch 1 (its partial batch and trailing skips) was consumed
    assert pretrain_main(args) == 0
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["skipped"] == {"bad_image": 1, "empty_caption": 1, "corrupt_shard": 1}
    assert summary["step"] == 3 and summary["samples_seen"] == 12


@pytest.fixture()
def fresh_accelerate_state():
    """Accelerate keeps its state per process: reset it so that a run here reads the environment like a new launch."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], ("bf16", 2)),  # nothing set in the run: the launcher's choice
        (["--mixed_precision", "no", "--gradient_accumulation_steps", "1"], ("no", 1)),  # explicit flags win
        (["--set", "gradient_accumulation_steps=3"], ("bf16", 3)),  # as if from the run file
    ],
)
def test_launcher_precision_and_accumulation_apply_unless_the_run_sets_them(
    tmp_path, monkeypatch, fresh_accelerate_state, flags, expected
):
    # what `accelerate launch --mixed_precision bf16 --gradient_accumulation_steps 2` puts in the environment
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "2")
    steps = ["--max_steps", "2", "--logging_steps", "1", "--checkpointing_steps", "0"]
    args = [*_args(tmp_path, *steps, *flags), "--per_device_train_batch_size", "4"]
    assert pretrain_main(args) == 0
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    _, accumulation = expected
    assert (summary["mixed_precision"], summary["gradient_accumulation_steps"]) == expected
    assert summary["step"] == 2 and summary["samples_seen"] == 2 * 4 * accumulation


def test_push_to_hub_uploads_the_final_folder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        "groupvit.hub.push.push_folder_to_hub", lambda folder, repo_id, **kw: calls.append((folder, repo_id, kw))
    )
    args = _args(tmp_path, "--max_steps", "2", "--logging_steps", "1", "--checkpointing_steps", "0")
    assert pretrain_main([*args, "--push_to_hub", "--hub_model_id", "me/tiny", "--hub_revision", "v1"]) == 0
    ((folder, repo_id, kwargs),) = calls
    assert Path(folder) == tmp_path and repo_id == "me/tiny" and kwargs["revision"] == "v1"
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "README.md").exists()


def test_init_from_keeps_the_weights_and_takes_the_loss_from_the_run(tmp_path):
    source = tmp_path / "pretrained"
    torch.manual_seed(0)
    groupvit.GroupViTModel(groupvit.GroupViTConfig.from_preset("groupvit-tiny")).save_pretrained(source)
    config = load_training_config(
        TINY_RUN,
        {
            "output_dir": str(tmp_path / "run"),
            "init_from": str(source),
            "loss": {"multi_label_target": "semantic", "multi_label_group_pooling": "max"},
            "model_overrides": {"vision_config": {"gumbel": False}},
        },
    )
    model = training.build_model(config)
    assert model.config.vision_config.gumbel is False
    expected = load_file(source / "model.safetensors")
    loaded = model.state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in expected.items())
    loss_fn = training.build_loss(config, model)
    term = loss_fn.terms["multi_label"]
    assert (term.target, term.group_pooling) == ("semantic", "max")
    assert term.logit_scale.item() == pytest.approx(2.6592)  # nothing saved for it: the run's initial value
    # a run of this package saves the loss state beside the model; an older checkpoint kept it in the model weights
    save_file({"terms.multi_label.logit_scale": torch.tensor(3.5)}, source / training.LOSS_STATE)
    assert training.build_loss(config, model).terms["multi_label"].logit_scale.item() == pytest.approx(3.5)
    (source / training.LOSS_STATE).unlink()
    save_file({**expected, "multi_label_logit_scale": torch.tensor(4.0)}, source / "model.safetensors")
    assert training.build_loss(config, model).terms["multi_label"].logit_scale.item() == pytest.approx(4.0)


def test_region_terms_train_end_to_end_from_an_earlier_run(tmp_path):
    # the demo's stage 3, shrunken: a run, then the dense-noun teacher, distillation and purity terms on top of it
    first, second = tmp_path / "first", tmp_path / "second"
    assert pretrain_main(_args(first, "--max_steps", "20", "--checkpointing_steps", "0")) == 0
    region = ("loss.dense_noun_weight=1", "loss.group_distill_weight=1", "loss.group_purity_weight=1")
    args = _args(second, "--max_steps", "20", "--checkpointing_steps", "0", "--set", f"init_from={first}")
    assert pretrain_main([*args, *(x for pair in region for x in ("--set", pair))]) == 0
    summary = json.loads((second / "train_summary.json").read_text())
    for name in ("dense_noun", "group_distill", "group_purity"):
        assert math.isfinite(summary[f"loss/{name}"]), name
    # the teacher and its temperature live in the loss state; the saved model has the built-in's weights only
    loss_state = load_file(second / training.LOSS_STATE)
    assert {"terms.dense_noun.no_object", "terms.dense_noun.logit_scale"} <= set(loss_state)
    assert set(load_file(second / "model.safetensors")) == set(load_file(first / "model.safetensors"))
    model = groupvit.GroupViTModel.from_pretrained(second)
    assert not any("patch_head" in name for name in model.state_dict())


def test_synthetic_recolor_settings_reach_the_training_split():
    # the training stream's images are the recoloured split's: the setting is never dropped on the way
    from groupvit.data.streams import StreamPosition
    from groupvit.data.synthetic import make_split

    overrides = {"data.synthetic_num_samples": 40, "data.synthetic_recolor": "jitter"}
    processor = groupvit.GroupViTProcessor.from_bundled(image_size=32)
    expected = {}
    for share in (1.0, 0.5):
        config = load_training_config(TINY_RUN, {**overrides, "data.synthetic_recolor_share": share})
        validate_config(config)
        stream, _ = training.build_train_stream(config, processor)
        data = config.data
        split = make_split(
            data.synthetic_preset, "train", 40, data.synthetic_image_size, data.synthetic_seed, "jitter", share
        )
        position = StreamPosition(seed=0, epoch=0, rank=0, world=1, worker=0, num_workers=1)
        images = {image.tobytes() for image, _ in stream.source(position, None)}
        assert images == {sample.image.tobytes() for sample in split}
        expected[share] = sum(split.is_recolored(i) for i in range(40))
    assert expected[1.0] == 40 and 10 < expected[0.5] < 30


def test_demo_recipe_stages_chain():
    folder = ROOT / "src" / "groupvit" / "resources" / "demo"
    stage1 = load_training_config(str(folder / "run.yaml"))
    stage2 = load_training_config(str(folder / "run_stage2.yaml"))
    validate_config(stage1)
    validate_config(stage2)
    # stage 2 starts from stage 1's output and only changes the loss settings, never the architecture
    assert stage2.init_from == stage1.output_dir and stage2.model_preset == stage1.model_preset
    assert stage2.model_overrides == stage1.model_overrides == {}
    assert stage2.loss.multi_label_group_pooling == "max" and stage2.loss.multi_label_target == "semantic"
    assert stage1.loss.group_diversity_weight == stage2.loss.group_diversity_weight == 1.0
    assert stage2.learning_rate < stage1.learning_rate
    # stage 3 continues stage 2 with the region terms on top of stage 2's objective
    stage3 = load_training_config(str(folder / "run_stage3.yaml"))
    validate_config(stage3)
    assert stage3.init_from == stage2.output_dir and stage3.model_preset == stage2.model_preset
    for name in ("multi_label_target", "multi_label_group_pooling", "group_diversity_weight"):
        assert getattr(stage3.loss, name) == getattr(stage2.loss, name), name
    assert min(stage3.loss.dense_noun_weight, stage3.loss.group_distill_weight, stage3.loss.group_purity_weight) > 0
    # stage 4: stage 3's objective, briefly, at 2x the resolution; the model itself stays a 64 px model
    stage4 = load_training_config(str(folder / "run_stage4.yaml"))
    validate_config(stage4)
    assert stage4.init_from == stage3.output_dir
    assert stage4.loss == dataclasses.replace(stage3.loss, dense_noun_top_k=6)  # 4x the patches of stage 3
    assert stage4.data.image_size == 2 * stage3.data.image_size and stage4.model_overrides == {}
    assert stage4.data.multiscale_sizes == [stage3.data.image_size]  # alternates 2x and 1x steps
    assert stage4.max_steps < stage3.max_steps and stage4.learning_rate < stage3.learning_rate
    # the quick recipe of `groupvit demo --train`: the region stage right from stage 1
    quick = load_training_config(str(folder / "run_quick.yaml"))
    validate_config(quick)
    assert quick.init_from == stage1.output_dir and quick.model_preset == stage1.model_preset
    assert quick.loss.multi_label_group_pooling == "max" and quick.loss.group_distill_weight > 0


def test_the_shape_first_variant_is_the_shipped_recipe_with_its_overlay():
    folder = ROOT / "src" / "groupvit" / "resources" / "demo"
    stage0 = load_training_config(str(folder / "shape" / "run_stage0.yaml"))
    validate_config(stage0)
    assert stage0.init_from is None and stage0.output_dir == "runs/shape-stage0"
    assert (stage0.loss.itc_weight, stage0.loss.multi_label_weight, stage0.loss.group_diversity_weight) == (0, 0, 0)
    assert (stage0.loss.dense_noun_weight, stage0.loss.dense_noun_backprop) == (1.0, "image_text")
    assert sorted(path.name for path in (folder / "shape").glob("run*.yaml")) == [
        "run.yaml",
        "run_stage0.yaml",
        "run_stage2.yaml",
        "run_stage3.yaml",
    ]
    # stage 1 is the shipped stage 1; the region stage is the shipped stage 3's objective, straight from stage 1,
    # 4500 steps at distillation 3; the last stage is the shipped 2x stage at that distillation, 200 steps
    previous = stage0.output_dir
    for name, shipped_name, changes in (
        ("run.yaml", "run.yaml", {}),
        ("run_stage2.yaml", "run_stage3.yaml", {"max_steps": 4500, "group_distill_weight": 3.0}),
        ("run_stage3.yaml", "run_stage4.yaml", {"max_steps": 200, "group_distill_weight": 3.0}),
    ):
        shipped = load_training_config(str(folder / shipped_name))
        shape = load_training_config(str(folder / "shape" / name))
        validate_config(shape)
        assert shape.init_from == previous, name  # each stage starts from the one before, stage 1 from stage 0
        previous = shape.output_dir
        distill = changes.get("group_distill_weight", shipped.loss.group_distill_weight)
        loss = dataclasses.replace(
            shipped.loss, dense_noun_weight=1.0, dense_noun_backprop="image", group_distill_weight=distill
        )
        data = dataclasses.replace(shipped.data, synthetic_recolor="jitter", synthetic_recolor_share=0.5)
        assert (shape.loss, shape.data) == (loss, data), name
        steps = changes.get("max_steps", shipped.max_steps)
        assert dataclasses.replace(shape, output_dir="", init_from=None) == dataclasses.replace(
            shipped, loss=loss, data=data, max_steps=steps, output_dir="", init_from=None
        ), name
    stage1 = load_training_config(str(folder / "shape" / "run.yaml"))
    assert stage0.data == stage1.data  # the same half of the images recoloured from the start


def _write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_a_run_file_extends_its_base_key_by_key(tmp_path):
    (tmp_path / "stages").mkdir()
    _write(
        tmp_path / "stage1.yaml",
        """\
        output_dir: runs/one
        max_steps: 600
        learning_rate: 1.0e-3
        loss: {multi_label_weight: 1.0, group_diversity_weight: 1.0}
        data: {source: synthetic, image_size: 64, num_workers: 1}
        """,
    )
    child = _write(
        tmp_path / "stages" / "stage2.yaml",
        """\
        base: ../stage1.yaml
        output_dir: runs/two
        init_from: runs/one
        learning_rate: 4.0e-4
        loss: {multi_label_target: semantic}
        """,
    )
    config = load_training_config(child)
    assert (config.output_dir, config.init_from, config.max_steps, config.learning_rate) == (
        "runs/two",
        "runs/one",
        600,
        4e-4,
    )
    # the child's loss block adds to the base's instead of replacing it; the data block is the base's
    assert (config.loss.multi_label_weight, config.loss.group_diversity_weight) == (1.0, 1.0)
    assert config.loss.multi_label_target == "semantic"
    assert (config.data.source, config.data.image_size, config.data.num_workers) == ("synthetic", 64, 1)
    # command-line overrides still come last
    assert (
        load_training_config(child, {"data.num_workers": 0, "loss.group_diversity_weight": 2.0}).data.num_workers == 0
    )


def test_a_run_file_extends_several_bases_in_order(tmp_path):
    _write(tmp_path / "stage.yaml", "output_dir: runs/one\nmax_steps: 600\nloss: {dense_noun_weight: 1.0}\n")
    _write(tmp_path / "overlay.yaml", "max_steps: 700\nloss: {dense_noun_backprop: image}\ndata: {hflip: 0.1}\n")
    child = _write(tmp_path / "child.yaml", "base: [stage.yaml, overlay.yaml]\noutput_dir: runs/two\n")
    config = load_training_config(child)
    # later bases win key by key, mappings merge, the file's own values come last
    assert (config.output_dir, config.max_steps, config.data.hflip) == ("runs/two", 700, 0.1)
    assert (config.loss.dense_noun_weight, config.loss.dense_noun_backprop) == (1.0, "image")
    with pytest.raises(ValueError, match="names no output_dir of its own"):
        load_training_config(_write(tmp_path / "bad.yaml", "base: [overlay.yaml, stage.yaml]\n"))


def test_paper_augmentation_is_the_default_and_the_demo_recipe_runs_without_it():
    data = DataArguments()
    assert (data.rand_augment, data.random_erasing, data.color_jitter) == ("rand-m9-mstd0.5-inc1", 0.25, 0.0)
    assert (data.crop_scale, data.hflip) == ((0.08, 1.0), 0.5)
    folder = ROOT / "src" / "groupvit" / "resources" / "demo"
    for name in ("run.yaml", "run_stage2.yaml", "run_stage3.yaml", "run_stage4.yaml", "run_quick.yaml"):
        demo = load_training_config(str(folder / name)).data
        assert (demo.rand_augment, demo.random_erasing, demo.color_jitter) == (None, 0.0, 0.1), name


def test_every_augmentation_setting_reaches_the_training_transform():
    from groupvit.data.transforms import TrainTransform

    changed = {
        "data.image_size": 24,
        "data.crop_scale": (0.3, 0.9),
        "data.hflip": 0.2,
        "data.color_jitter": 0.35,
        "data.rand_augment": "rand-m5",
        "data.random_erasing": 0.6,
    }
    config = load_training_config(TINY_RUN, changed)
    validate_config(config)
    stream, _ = training.build_train_stream(config, groupvit.GroupViTProcessor.from_bundled(image_size=32))
    transform = stream.transform
    assert (transform.scale, transform.hflip, transform.color_jitter) == ((0.3, 0.9), 0.2, 0.35)
    assert (transform.image_size, transform.rand_augment, transform.random_erasing) == (24, "rand-m5", 0.6)
    # every transform setting with a data.* field of the same name is covered above
    same_name = {f.name for f in dataclasses.fields(TrainTransform)} & {
        f.name for f in dataclasses.fields(DataArguments)
    }
    assert {f"data.{name}" for name in same_name} <= set(changed)


def test_the_demo_recipe_files_resolve_to_the_runs_that_were_measured():
    # the stage files list only what they change (`base:`); these are the settings of the measured runs in full
    folder = ROOT / "src" / "groupvit" / "resources" / "demo"
    stage3 = load_training_config(str(folder / "run_stage3.yaml"))
    assert (stage3.max_steps, stage3.learning_rate, stage3.warmup_steps, stage3.per_device_train_batch_size) == (
        2000,
        4e-4,
        20,
        64,
    )
    assert (stage3.eval_steps, stage3.report_to, stage3.checkpointing_steps, stage3.scale_lr) == (
        0,
        "none",
        200,
        False,
    )
    assert stage3.loss == LossArguments(
        multi_label_weight=1.0,
        multi_label_target="semantic",
        multi_label_group_pooling="max",
        group_diversity_weight=1.0,
        dense_noun_weight=1.0,
        dense_noun_top_k=3,
        group_distill_weight=1.0,
        group_purity_weight=10.0,
    )
    quick = load_training_config(str(folder / "run_quick.yaml"))
    assert dataclasses.replace(quick, output_dir="x", init_from="y", max_steps=1, per_device_train_batch_size=1) == (
        dataclasses.replace(
            stage3,
            output_dir="x",
            init_from="y",
            max_steps=1,
            per_device_train_batch_size=1,
            loss=dataclasses.replace(stage3.loss, group_distill_weight=3.0),
        )
    )
    assert (quick.max_steps, quick.per_device_train_batch_size, quick.learning_rate) == (2200, 32, 4e-4)
    assert quick.init_from == "runs/demo"


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("base: [base.yaml, 3]\noutput_dir: runs/x\n", TypeError, "base=['base.yaml', 3]"),
        ("base: []\noutput_dir: runs/x\n", TypeError, "base=[]"),
        ("base: [base.yaml, missing.yaml]\noutput_dir: runs/x\n", ValueError, "base='missing.yaml'"),
        ("base: missing.yaml\noutput_dir: runs/x\n", ValueError, "no run file at"),
        ("base: base.yaml\n", ValueError, "names no output_dir of its own"),
        ("base: base.yaml\noutput_dir: runs/x\nloss:\n", ValueError, "loss=None"),
        ("base: child.yaml\noutput_dir: runs/x\n", ValueError, "in a cycle"),
    ],
)
def test_a_bad_base_is_refused_by_name(tmp_path, text, error, message):
    _write(tmp_path / "base.yaml", "output_dir: runs/base\nloss: {multi_label_weight: 1.0}\n")
    child = _write(tmp_path / "child.yaml", text)
    with pytest.raises(error, match=re.escape(message)):
        load_training_config(child)


def test_an_output_dir_given_on_the_command_line_names_the_extending_run(tmp_path):
    _write(tmp_path / "base.yaml", "output_dir: runs/base\nmax_steps: 5\n")
    child = _write(tmp_path / "child.yaml", "base: base.yaml\n")
    config = load_training_config(child, {"output_dir": "runs/mine"})
    assert (config.output_dir, config.max_steps) == ("runs/mine", 5)


def test_missing_trackers_are_returned_for_a_warning_after_the_accelerator_exists():
    # Accelerate's logger refuses to log before the Accelerator's state exists, so the check only sorts the names
    assert training._available_trackers("none") == ([], [])
    assert training._available_trackers("json, no_such_tracker_module") == (["json"], ["no_such_tracker_module"])


def _finished_run(folder: Path, init_from: str | None, step: int) -> None:
    folder.mkdir(parents=True)
    (folder / "training_config.json").write_text(json.dumps({"output_dir": str(folder), "init_from": init_from}))
    (folder / "train_summary.json").write_text(json.dumps({"step": step, "wall_time_s": float(step)}))


def test_training_lineage_follows_init_from_to_the_first_run(tmp_path):
    # stage 1 starts from a Hub id (not a local run): the walk stops there and keeps the id
    _finished_run(tmp_path / "s1", "nvidia/groupvit-gcc-yfcc", 10)
    _finished_run(tmp_path / "s2", str(tmp_path / "s1"), 20)
    _finished_run(tmp_path / "s3", str(tmp_path / "s2"), 30)
    stages = training.training_lineage(tmp_path / "s3")
    assert [stage["summary"]["step"] for stage in stages] == [10, 20, 30]
    assert [Path(stage["output_dir"]).name for stage in stages] == ["s1", "s2", "s3"]
    assert stages[0]["init_from"] == "nvidia/groupvit-gcc-yfcc" and stages[2]["init_from"] == str(tmp_path / "s2")
    # a folder holding weights only (a converted model) also ends the walk
    (tmp_path / "converted").mkdir()
    _finished_run(tmp_path / "s4", str(tmp_path / "converted"), 5)
    assert len(training.training_lineage(tmp_path / "s4")) == 1


def test_training_lineage_refuses_a_cycle_and_an_unfinished_run(tmp_path):
    _finished_run(tmp_path / "a", str(tmp_path / "b"), 1)
    _finished_run(tmp_path / "b", str(tmp_path / "a"), 2)
    with pytest.raises(ValueError, match="cycle"):
        training.training_lineage(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="not a finished training run"):
        training.training_lineage(tmp_path / "missing")


def test_multiscale_steps_cycle_through_the_sizes(tmp_path, monkeypatch, fresh_accelerate_state):
    from groupvit.modeling_groupvit import GroupViTModel

    seen, forward = [], GroupViTModel.forward

    def spy(self, *args, **kwargs):
        seen.append(tuple(kwargs["pixel_values"].shape[-2:]))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(GroupViTModel, "forward", spy)
    steps = ["--max_steps", "5", "--checkpointing_steps", "0", "--per_device_train_batch_size", "4"]
    assert pretrain_main([*_args(tmp_path, *steps), "--multiscale_sizes", "16", "24"]) == 0
    assert seen == [(32, 32), (16, 16), (24, 24), (32, 32), (16, 16)]
    assert json.loads((tmp_path / "training_config.json").read_text())["data"]["multiscale_sizes"] == [16, 24]
    # a smaller step sees the crop downscaled with antialiasing, not a new crop
    crop = torch.rand(2, 3, 32, 32)
    expected = torch.nn.functional.interpolate(crop, size=(16, 16), mode="bilinear", antialias=True)
    torch.testing.assert_close(training.downscale(crop, 16), expected)
    torch.testing.assert_close(training.downscale(torch.ones(1, 3, 32, 32), 16), torch.ones(1, 3, 16, 16))
