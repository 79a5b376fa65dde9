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
        (None, {"candidate_labels": "cat, Cat"}, "'Cat'"),
        (None, {"candidate_labels": "cat,,dog"}, "empty name"),
        (None, {"candidate_labels": ["dog", "Dining  Table", "dining table"]}, "'dining table'"),
        (None, {"candidate_labels": ["cat", " long" * 80]}, "too long"),
        (None, {"candidate_labels": ["Background"], "background_threshold": 0.5}, "'Background'"),
        (None, {"candidate_labels": ["cat"], "timeout": 0}, "timeout"),
        (None, {"candidate_labels": ["cat"], "batch_size": 0}, "batch_size"),
        ([{"picture": 1}], {"candidate_labels": ["cat"]}, "'picture'"),
        ([PIL.Image.new("RGB", (8, 8))] * 2, {"candidate_labels": [["cat"], ["dog"], ["cow"]]}, "3 candidate label"),
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
    with pytest.raises(TypeError, match=r"groupvit.GroupViTModel \(or a model with its get_group_embeddings, scaled"):
        pipeline(TASK, model=builtin, processor=groupvit.GroupViTProcessor.from_bundled(32), device="cpu")
    with pytest.raises(ValueError, match="tokenizer"):
        pipeline(TASK, model=groupvit.GroupViTModel(tiny_config()), device="cpu")


def test_returns_float32_logits_for_a_bfloat16_model():
    model = randomize_(groupvit.GroupViTModel(tiny_config()), seed=2).to(torch.bfloat16).eval()
    pipe = pipeline(TASK, model=model, processor=groupvit.GroupViTProcessor.from_bundled(32), device="cpu")
    out = pipe(random_image(40, 36), candidate_labels=["a", "b", "c"], **SMALL)
    assert all(d["mask"].size == (40, 36) for d in out)


# --------------------------------------------------------------------------------------------------------------------
# the pipeline as users call it
# --------------------------------------------------------------------------------------------------------------------


def _by_label(entries):
    return {entry["label"]: (np.asarray(entry["mask"]), entry["score"]) for entry in entries}


def _assert_same(a, b):
    a, b = _by_label(a), _by_label(b)
    assert a.keys() == b.keys()
    for label in a:
        np.testing.assert_array_equal(a[label][0], b[label][0])
        assert a[label][1] == pytest.approx(b[label][1], rel=1e-5, abs=1e-6)


def test_input_forms_of_the_object_detection_pipeline_give_the_same_masks(segmenter_pipe):
    images = [random_image(45, 38, seed=10), random_image(70, 33, seed=11), random_image(32, 32, seed=12)]
    labels = [["cat", "dog"], ["sky", "tree", "road"], ["cat", "dog"]]
    alone = [
        segmenter_pipe(image, candidate_labels=names, **SMALL) for image, names in zip(images, labels, strict=True)
    ]
    per_image = segmenter_pipe(images, candidate_labels=labels, **SMALL)
    dicts = segmenter_pipe([{"image": i, "candidate_labels": n} for i, n in zip(images, labels, strict=True)], **SMALL)
    batched = segmenter_pipe(images, candidate_labels=labels, batch_size=3, **SMALL)
    strings = segmenter_pipe(images[0], candidate_labels=" cat,dog ", **SMALL)
    one_dict = segmenter_pipe({"image": images[1], "candidate_labels": "sky, tree, road"}, **SMALL)
    for results in (per_image, dicts, batched):
        assert len(results) == 3
        for got, want in zip(results, alone, strict=True):
            _assert_same(got, want)
    _assert_same(strings, alone[0])
    from_generator = segmenter_pipe((image for image in images[:2]), candidate_labels=labels[:2], **SMALL)
    assert len(from_generator) == 2 and all(isinstance(o, list) for o in from_generator)
    _assert_same(from_generator[1], alone[1])
    _assert_same(one_dict, alone[1])


def test_batch_size_batches_windows_of_images_of_different_sizes(segmenter_pipe, monkeypatch):
    images = [random_image(w, h, seed=w) for w, h in ((32, 32), (40, 32), (32, 48), (64, 32))]
    calls = []
    original = segmenter_pipe.segmenter._embed_windows
    monkeypatch.setattr(segmenter_pipe.segmenter, "_embed_windows", lambda x: calls.append(x.shape[0]) or original(x))
    one = segmenter_pipe(images, candidate_labels=["cat", "dog"], batch_size=1, window_batch_size=8, **SMALL)
    windows_one, calls[:] = list(calls), []
    four = segmenter_pipe(images, candidate_labels=["cat", "dog"], batch_size=4, window_batch_size=8, **SMALL)
    # 32-px windows, stride 16: 1 + 2 + 2 + 3 windows; one image at a time makes 4 model calls, all four make 1
    assert sum(windows_one) == sum(calls) == 8
    assert len(windows_one) == 4 and calls == [8]
    for got, want in zip(four, one, strict=True):
        _assert_same(got, want)


def test_a_bad_image_in_a_batch_is_named_by_its_index(segmenter_pipe):
    images = [random_image(32, 32), random_image(40, 32), np.zeros((4, 4, 3), dtype=bool)]
    with pytest.raises(ValueError, match=r"image #2 "):
        segmenter_pipe(images, candidate_labels=["cat"], batch_size=2, **SMALL)
    with pytest.raises(ValueError, match=r"#1 .*no/such.png"):
        segmenter_pipe([random_image(32, 32), "no/such.png"], candidate_labels=["cat"], **SMALL)


def test_scores_are_confidences_and_the_background_score_varies(segmenter_pipe):
    """Label score: mean winning logit (group score) over the mask; background: 1 - mean best label logit over its
    pixels. By hand on 1x4 logits, then against the segmenter's full-size logits through the pipeline."""
    options = segmenter_pipe.segmenter.options.replace(background_threshold=0.5)
    foreground = torch.tensor([[0.2, 0.1, 0.05, 0.3], [0.1, 0.3, 0.02, 0.1], [0.0, 0.0, 0.01, 0.0]])
    background_scores = []
    for background_pixel in ([0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]):
        logits = torch.cat([foreground, torch.tensor([background_pixel])])[:, None, :]  # (4, 1, 4)
        prediction = {"logits": logits, "image_scores": torch.ones(3) / 3}
        result = segmenter_pipe.segmenter.finalize(prediction, (1, 4), ["a", "b", "c"], options)
        background_scores.append(float(result.scores[3]))
        assert result.scores[0] == pytest.approx((0.2 + 0.3) / 2) and result.scores[2] == 0.0
    # pixel 2 (best label 0.05) is background, then pixels 1 and 2 (best 0.3 and 0.05)
    assert background_scores == pytest.approx([1 - 0.05, 1 - (0.3 + 0.05) / 2])
    direct = GroupViTSegmenter(
        segmenter_pipe.model, tokenizer=segmenter_pipe.tokenizer, image_processor=segmenter_pipe.image_processor
    )
    for seed in range(2):
        image = random_image(50, 40, seed=20 + seed)
        out = segmenter_pipe(image, candidate_labels=["cat", "dog", "sky"], background_threshold=0.9, **SMALL)
        result = direct.segment(image, ["cat", "dog", "sky"], background_threshold=0.9, **SMALL)[0]
        logits = result.full_size_logits()
        for entry in out:
            index = result.labels.index(entry["label"])
            inside = result.label_map == index
            best = logits[:3].amax(0)[inside].mean()
            expected = 1 - best if entry["label"] == "background" else logits[index][inside].mean()
            assert entry["score"] == pytest.approx(float(expected), abs=1e-5)
            assert 0.0 <= entry["score"] <= 1.0


def test_a_model_of_another_class_object_with_the_same_api_is_accepted(segmenter_pipe):
    """`trust_remote_code=True` loads the modeling file as another module: its GroupViTModel is a different class."""
    import importlib.util

    import groupvit.modeling_groupvit as modeling

    spec = importlib.util.spec_from_file_location("groupvit.remote_code_modeling_groupvit", modeling.__file__)
    remote = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(remote)
    assert remote.GroupViTModel is not groupvit.GroupViTModel
    model = remote.GroupViTModel(segmenter_pipe.model.config).eval()
    model.load_state_dict(segmenter_pipe.model.state_dict())
    assert not isinstance(model, groupvit.GroupViTModel)
    pipe = pipeline(TASK, model=model, processor=groupvit.GroupViTProcessor.from_bundled(32), device="cpu")
    image = random_image(48, 40, seed=30)
    _assert_same(pipe(image, candidate_labels=["cat", "dog"], **SMALL), segmenter_pipe(image, ["cat", "dog"], **SMALL))


# --------------------------------------------------------------------------------------------------------------------
# loading images: 16-bit, URLs that never answer
# --------------------------------------------------------------------------------------------------------------------


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    from groupvit.processing_groupvit import to_rgb_image

    ramp = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = np.rint(ramp / 257).astype(np.uint8)  # 0 -> 0, 65535 -> 255, linear
    path = tmp_path / "ramp16.png"
    PIL.Image.fromarray(ramp).save(path)
    loaded = PIL.Image.open(path)
    assert loaded.mode in ("I;16", "I")
    for source in (ramp, path, str(path), loaded, PIL.Image.fromarray(ramp.astype(np.int32))):
        rgb = np.asarray(to_rgb_image(source))
        assert rgb.dtype == np.uint8 and rgb.shape == (256, 256, 3)
        np.testing.assert_array_equal(rgb[..., 0], expected)
        assert (rgb == 255).mean() < 0.01  # was 99.6% pure white
    with pytest.raises(ValueError, match=r"16-bit values in \[0, 65535\]"):
        to_rgb_image(PIL.Image.fromarray(np.array([[70000]], dtype=np.int32)))


@pytest.fixture()
def silent_url():
    """An http URL on a local server that accepts connections and never answers."""
    import socket

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}/photo.png"
    server.close()


def test_a_url_that_never_answers_fails_within_the_timeout(segmenter_pipe, silent_url):
    import time

    from groupvit.processing_groupvit import IMAGE_URL_TIMEOUT, to_rgb_image

    assert IMAGE_URL_TIMEOUT == 10.0
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"no answer within 0.3 s"):
        to_rgb_image(silent_url, timeout=0.3)
    with pytest.raises(ValueError, match=r"#1 .*no answer within 0.3 s"):
        segmenter_pipe([random_image(32, 32), silent_url], candidate_labels=["cat"], timeout=0.3, **SMALL)
    assert time.perf_counter() - start < 10
