"""The zero-shot-image-segmentation pipeline (groupvit.segmentation.pipeline)."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import huggingface_hub
import numpy as np
import PIL.Image
import pytest
import torch
import transformers
from transformers import pipeline

import groupvit
from conftest import randomize_, tiny_config
from groupvit.segmentation import GroupViTSegmenter
from groupvit.segmentation.pipeline import TASK, ZeroShotImageSegmentationPipeline, register_pipeline

SMALL = {"short_side": 32, "window": 32, "stride": 16}  # tiny model: 32-px windows


@pytest.fixture(scope="module")
def segmenter_pipe() -> ZeroShotImageSegmentationPipeline:
    model = randomize_(groupvit.GroupViTModel(tiny_config()), seed=1).eval()
    return pipeline(TASK, model=model, processor=groupvit.GroupViTProcessor.from_bundled(image_size=32), device="cpu")


def random_image(width: int, height: int, seed: int = 0) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_task_is_registered_once(caplog):
    assert TASK in transformers.pipelines.get_supported_tasks()
    with caplog.at_level(logging.WARNING):
        register_pipeline()  # idempotent: no "already registered" warning
    assert "already registered" not in caplog.text


def test_import_groupvit_registers_the_task_without_loading_the_segmenter(tiny_checkpoint):
    """`import groupvit` registers the pipeline but loads none of the heavy modules; they load when a pipeline is
    built. A fresh interpreter, so that no other test's imports count."""
    heavy = [
        "groupvit.segmentation.segmenter",
        "groupvit.segmentation.onnx",
        "groupvit.segmentation.visualization",
        "groupvit.evaluation",
        "onnx",
        "onnxruntime",
    ]
    code = textwrap.dedent(
        f"""
        import json, sys
        import groupvit
        import PIL.Image
        from transformers import pipeline
        after_import = [name for name in {heavy!r} if name in sys.modules]
        segmenter = pipeline("zero-shot-image-segmentation", model={tiny_checkpoint!r}, device="cpu")
        out = segmenter(PIL.Image.new("RGB", (40, 32)), candidate_labels=["cat", "dog"], short_side=32, window=32)
        print(json.dumps({{"after_import": after_import, "segmenter": "groupvit.segmentation.segmenter" in sys.modules,
                          "labels": [entry["label"] for entry in out], "size": list(out[0]["mask"].size)}}))
        """
    )
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env={**os.environ, **env}
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["after_import"] == []
    assert result["segmenter"] is True  # built on demand by the pipeline
    assert set(result["labels"]) <= {"cat", "dog"} and result["labels"] and result["size"] == [40, 32]


def test_loads_from_a_local_directory_offline(tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    pipe = pipeline(TASK, model=tiny_checkpoint, device="cpu")
    assert isinstance(pipe, ZeroShotImageSegmentationPipeline)
    assert isinstance(pipe.model, groupvit.GroupViTModel)
    out = pipe(random_image(40, 32), candidate_labels=["cat", "dog"], **SMALL)
    assert out and all(d["mask"].size == (40, 32) for d in out)


def test_output_schema_and_masks_at_the_original_size(segmenter_pipe):
    image = random_image(57, 31, seed=1)  # non-square, not a multiple of anything
    out = segmenter_pipe(image, candidate_labels=["cat", "dog", "grass"], background_threshold=0.3, **SMALL)
    assert isinstance(out, list) and out
    total = np.zeros((31, 57), dtype=np.int64)
    for entry in out:
        assert set(entry) == {"label", "score", "mask"}
        assert entry["label"] in {"cat", "dog", "grass", "background"}
        assert isinstance(entry["score"], float) and 0.0 <= entry["score"] <= 1.0
        mask = entry["mask"]
        assert isinstance(mask, PIL.Image.Image) and mask.mode == "L" and mask.size == (57, 31)
        values = np.asarray(mask)
        assert set(np.unique(values)) <= {0, 255} and values.any()
        total += values // 255
    assert (total == 1).all()  # the masks partition the image
    labels = [entry["label"] for entry in out]
    assert len(set(labels)) == len(labels)


def test_same_result_as_the_segmenter(segmenter_pipe):
    image = random_image(70, 45, seed=2)
    out = segmenter_pipe(image, candidate_labels=["sky", "tree"], background_threshold=0.9, mode="whole", **SMALL)
    direct = GroupViTSegmenter(
        segmenter_pipe.model, tokenizer=segmenter_pipe.tokenizer, image_processor=segmenter_pipe.image_processor
    ).segment(image, ["sky", "tree"], background_threshold=0.9, mode="whole", **SMALL)[0]
    for entry in out:
        index = direct.labels.index(entry["label"])
        assert np.array_equal(np.asarray(entry["mask"]) > 0, (direct.label_map == index).numpy())
        assert entry["score"] == pytest.approx(float(direct.scores[index]))


def test_list_input_paths_and_one_text_encoding(segmenter_pipe, tmp_path, monkeypatch):
    path = tmp_path / "photo.png"
    random_image(33, 47, seed=3).save(path)
    calls = []
    original = segmenter_pipe.model.get_text_features
    monkeypatch.setattr(
        segmenter_pipe.model, "get_text_features", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    out = segmenter_pipe(
        [str(path), random_image(64, 32, seed=4), path],
        candidate_labels=["cat", "dog"],
        hypothesis_template="{}",
        **SMALL,
    )
    assert len(out) == 3 and all(isinstance(o, list) for o in out)
    assert [o[0]["mask"].size for o in out] == [(33, 47), (64, 32), (33, 47)]
    assert len(calls) == 1  # label embeddings computed once per call


@pytest.mark.parametrize(
    "image,kwargs,match",
    [
        (None, {"candidate_labels": []}, "empty"),
        (None, {"candidate_labels": ["cat", "cat"]}, "'cat'"),
        (None, {"candidate_labels": "cat"}, "'cat'"),
        (None, {"candidate_labels": ["cat"], "background_threshold": 1.5}, "1.5"),
        (None, {"candidate_labels": ["cat"], "background_threshold": -0.1}, "-0.1"),
        (None, {"candidate_labels": ["cat"], "hypothesis_template": "a photo of a cat"}, "a photo of a cat"),
        (None, {"candidate_labels": ["background"], "background_threshold": 0.5}, "background"),
        (None, {"candidate_labels": ["cat"], "mode": "tiles"}, "tiles"),
        (None, {}, "candidate_labels"),
        (42, {"candidate_labels": ["cat"]}, "42"),
        ("no/such/file.jpg", {"candidate_labels": ["cat"]}, "no/such/file.jpg"),
        (PIL.Image.new("RGB", (0, 12)), {"candidate_labels": ["cat"]}, "empty"),
        ([], {"candidate_labels": ["cat"]}, "empty"),
    ],
)
def test_bad_inputs_raise_value_error(segmenter_pipe, image, kwargs, match):
    image = random_image(32, 32) if image is None else image
    with pytest.raises(ValueError, match=match):
        segmenter_pipe(image, **kwargs)


def test_needs_our_model_and_a_processor():
    builtin = transformers.GroupViTModel(transformers.GroupViTConfig(**tiny_config().to_dict()))
    with pytest.raises(TypeError, match="groupvit.GroupViTModel"):
        pipeline(TASK, model=builtin, processor=groupvit.GroupViTProcessor.from_bundled(32), device="cpu")
    with pytest.raises(ValueError, match="tokenizer"):
        pipeline(TASK, model=groupvit.GroupViTModel(tiny_config()), device="cpu")


def test_returns_float32_logits_for_a_bfloat16_model():
    model = randomize_(groupvit.GroupViTModel(tiny_config()), seed=2).to(torch.bfloat16).eval()
    pipe = pipeline(TASK, model=model, processor=groupvit.GroupViTProcessor.from_bundled(32), device="cpu")
    out = pipe(random_image(40, 36), candidate_labels=["a", "b", "c"], **SMALL)
    assert all(d["mask"].size == (40, 36) for d in out)
