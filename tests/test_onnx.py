"""ONNX export of the two towers and the ONNX Runtime segmenter (groupvit.segmentation.onnx)."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

import groupvit
from conftest import tiny_config
from groupvit.segmentation import GroupViTSegmenter

ort = pytest.importorskip("onnxruntime")
from groupvit.cli.export_onnx import main as export_onnx_main  # noqa: E402
from groupvit.segmentation import onnx as onnx_export  # noqa: E402

ATOL = 1e-4  # float32 graphs: the observed errors are ~1e-7
LABELS = ["cat", "dog", "grass", "sky"]


def random_image(width: int, height: int, seed: int) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    # smooth blobs rather than noise
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return PIL.Image.fromarray(small).resize((width, height), PIL.Image.Resampling.BILINEAR)


IMAGES = [random_image(48, 40, 0), random_image(32, 32, 1), random_image(37, 61, 2), random_image(32, 32, 0)]


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> groupvit.GroupViTModel:
    return groupvit.GroupViTModel.from_pretrained(tiny_checkpoint).eval()


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory) -> onnx_export.OnnxExport:
    """The tiny checkpoint (every parameter randomised: the strictest numerical parity check) exported."""
    return onnx_export.export_onnx(tiny_checkpoint, tmp_path_factory.mktemp("onnx"), validate=True, atol=ATOL)


@pytest.fixture(scope="module")
def grouping_checkpoint(tmp_path_factory) -> str:
    """A tiny model whose groups split the test images (the randomised one puts every pixel in one group)."""
    path = tmp_path_factory.mktemp("grouping")
    with torch.random.fork_rng():
        torch.manual_seed(4)  # default initialisation; seed 4 gives 2-3 groups on IMAGES[0], IMAGES[1] and IMAGES[3]
        groupvit.GroupViTModel(tiny_config()).save_pretrained(path)
    groupvit.GroupViTProcessor.from_bundled(image_size=32).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def onnx_segmenter(grouping_checkpoint, tmp_path_factory) -> onnx_export.OnnxGroupViTSegmenter:
    directory = tmp_path_factory.mktemp("grouping-onnx")
    onnx_export.export_onnx(grouping_checkpoint, directory, validate=False)
    return onnx_export.OnnxGroupViTSegmenter(directory, short_side=32, window=32, stride=16)


@pytest.fixture(scope="module")
def torch_segmenter(grouping_checkpoint) -> GroupViTSegmenter:
    return GroupViTSegmenter.from_pretrained(grouping_checkpoint, short_side=32, window=32, stride=16)


@pytest.fixture(scope="module")
def group_labels(torch_segmenter) -> torch.Tensor:
    """Label embeddings that are the group embeddings of IMAGES[3]: each group wins "its" label."""
    model = torch_segmenter.model
    pixel_values, _ = torch_segmenter.prepare_image(IMAGES[3], torch_segmenter.options.replace(mode="whole"))
    with torch.no_grad():
        vision = model.vision_model(pixel_values, interpolate_pos_encoding=True)
        return F.normalize(model.get_group_embeddings(vision.last_hidden_state)[0], dim=-1)


# --------------------------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------------------------


def test_export_writes_graphs_metadata_and_processor(exported, model):
    files = {path.name for path in exported.directory.iterdir()}
    assert {"image_model.onnx", "text_model.onnx", "groupvit_onnx.json", "processor_config.json"} <= files
    assert not any(name.endswith((".safetensors", ".bin")) for name in files)  # no PyTorch weights
    metadata = json.loads((exported.directory / "groupvit_onnx.json").read_text())
    assert metadata["logit_scale"] == pytest.approx(float(model.scaled(model.logit_scale.detach())), rel=1e-6)
    assert metadata["patch_size"] == [4, 4] and metadata["opset"] == onnx_export.DEFAULT_OPSET
    assert metadata["image_outputs"] == ["image_embeds", "group_embeds", "grouping_1", "grouping_2"]
    assert set(exported.parity) == {*metadata["image_outputs"], "text_embeds"}
    assert max(exported.parity.values()) < ATOL
    assert metadata["parity"]["max_abs_error"] == exported.parity


def test_export_of_a_training_model_uses_eval_mode_and_restores_it(model, tmp_path, text_inputs):
    processor = groupvit.GroupViTProcessor.from_bundled(image_size=32)
    model.train()
    try:
        export = onnx_export.export_onnx(model, tmp_path, processor, validate=False)
        assert model.training
    finally:
        model.eval()
    feeds = {name: value.numpy() for name, value in text_inputs.items()}
    (actual,) = session(export.text_model).run(None, feeds)  # BatchNorm with its running statistics
    with torch.no_grad():
        expected = model.get_text_features(**text_inputs).pooler_output
    np.testing.assert_allclose(actual, expected.numpy(), atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 48, 48), (3, 3, 32, 48)])
def test_image_graph_matches_pytorch_at_several_sizes(exported, model, shape):
    pixel_values = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    outputs = session(exported.image_model).run(None, {"pixel_values": pixel_values.numpy()})
    with torch.no_grad():
        vision = model.vision_model(pixel_values, interpolate_pos_encoding=True)
        expected = [
            model.visual_projection(vision.pooler_output),
            model.get_group_embeddings(vision.last_hidden_state),
            *vision.attentions,
        ]
    assert outputs[2].shape == (shape[0], 8, (shape[2] // 4) * (shape[3] // 4))
    for actual, reference in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(actual, reference.numpy(), atol=ATOL, rtol=ATOL)


def test_text_graph_matches_pytorch_with_padding(exported, model, text_inputs):
    text = session(exported.text_model)
    for input_ids, attention_mask in [
        (text_inputs["input_ids"], text_inputs["attention_mask"]),
        (text_inputs["input_ids"][:1, :7], text_inputs["attention_mask"][:1, :7]),  # another batch and length
    ]:
        (actual,) = text.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
        with torch.no_grad():
            expected = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        np.testing.assert_allclose(actual, expected.numpy(), atol=ATOL, rtol=ATOL)


def test_export_rejects_bad_arguments(model, tmp_path):
    processor = groupvit.GroupViTProcessor.from_bundled(image_size=32)
    with pytest.raises(ValueError, match="opset"):
        onnx_export.export_onnx(model, tmp_path, processor, opset=13)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        onnx_export.export_onnx(model, tmp_path, processor, image_size=30)
    with pytest.raises(ValueError, match="processor"):
        onnx_export.export_onnx(model, tmp_path)


# --------------------------------------------------------------------------------------------------------------------
# runtime
# --------------------------------------------------------------------------------------------------------------------


def test_onnx_label_embeddings_match_pytorch(onnx_segmenter, torch_segmenter):
    templates = ("a photo of a {}.", "itap of a {}.")
    for ensemble in ("projection_mean", "normalized_mean"):
        expected = torch_segmenter.encode_labels(LABELS, templates, ensemble)
        actual = onnx_segmenter.encode_labels(LABELS, templates, ensemble)
        torch.testing.assert_close(actual, expected, atol=ATOL, rtol=ATOL)


def assert_same_segmentation(actual, expected, mode):
    for got, want in zip(actual, expected, strict=True):
        assert got.labels == want.labels and got.background_index == want.background_index
        assert got.label_map.shape == want.label_map.shape
        # identical up to ties: the graphs agree to ~1e-7, but a pixel on a group boundary whose two bilinearly
        # resized group weights are that close may switch group (seen: 1 pixel of 1024); allow 0.5% of the pixels
        assert (got.label_map != want.label_map).float().mean() <= 0.005
        close = (got.label_logits - want.label_logits).abs() <= 1e-4 + 1e-4 * want.label_logits.abs()
        assert (~close.all(0)).float().mean() <= 0.005
        torch.testing.assert_close(got.image_scores, want.image_scores, atol=1e-5, rtol=1e-4)
        if mode == "whole":
            for got_map, want_map in zip(got.group_maps, want.group_maps, strict=True):
                torch.testing.assert_close(got_map, want_map, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "changes",
    [
        {"mode": "whole"},
        {"mode": "whole", "score_mode": "cosine", "top_k": None},
        {"mode": "whole", "background_threshold": 0.9, "top_k": 2, "background_first": True},
        {"mode": "whole", "assignment": "soft", "background_threshold": 0.5},
        {"mode": "slide", "background_threshold": 0.5},
    ],
)
def test_onnx_segmenter_matches_pytorch_segmenter(onnx_segmenter, torch_segmenter, group_labels, changes):
    labels = [f"group {i}" for i in range(len(group_labels))]
    expected = torch_segmenter.segment(IMAGES, labels, text_embeds=group_labels, **changes)
    actual = onnx_segmenter.segment(IMAGES, labels, text_embeds=group_labels, **changes)
    assert_same_segmentation(actual, expected, changes["mode"])
    if changes["mode"] == "whole" and changes.get("assignment", "hard") == "hard":
        # the comparison means something: several labels win pixels
        assert max(len(result.label_map.unique()) for result in expected) >= 2


def test_onnx_segmenter_matches_pytorch_segmenter_with_text_labels(onnx_segmenter, torch_segmenter):
    for changes in ({"mode": "whole", "background_threshold": 0.9}, {"mode": "slide"}):
        expected = torch_segmenter.segment(IMAGES, LABELS, **changes)
        actual = onnx_segmenter.segment(IMAGES, LABELS, **changes)
        assert_same_segmentation(actual, expected, changes["mode"])


def test_onnx_segmenter_matches_the_pipeline(grouping_checkpoint, onnx_segmenter):
    from transformers import pipeline

    segmenter = pipeline("zero-shot-image-segmentation", model=grouping_checkpoint)
    image = IMAGES[0]
    options = {"short_side": 32, "mode": "whole", "background_threshold": 0.8}
    masks = {item["label"]: np.asarray(item["mask"]) > 0 for item in segmenter(image, LABELS, **options)}
    result = onnx_segmenter.segment(image, LABELS, **options)[0]
    label_map = result.label_map.numpy()
    for label, mask in masks.items():
        assert (mask != (label_map == result.labels.index(label))).mean() <= 0.005


def test_onnx_segmenter_rejects_a_directory_without_an_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a groupvit ONNX export"):
        onnx_export.OnnxGroupViTSegmenter(tmp_path)


# --------------------------------------------------------------------------------------------------------------------
# `groupvit export-onnx`
# --------------------------------------------------------------------------------------------------------------------


def test_export_onnx_main_prints_parity(tiny_checkpoint, tmp_path, capsys):
    assert export_onnx_main(["--model", tiny_checkpoint, "--output", str(tmp_path), "--opset", "18"]) == 0
    printed = capsys.readouterr().out
    assert "max abs error" in printed and "grouping_2" in printed and "text_embeds" in printed
    metadata = json.loads((tmp_path / "groupvit_onnx.json").read_text())
    assert metadata["opset"] == 18 and max(metadata["parity"]["max_abs_error"].values()) < ATOL
    result = onnx_export.OnnxGroupViTSegmenter(tmp_path, short_side=32, mode="whole").segment(
        random_image(32, 32, 4), LABELS
    )[0]
    assert result.label_map.shape == (32, 32)


def test_export_onnx_main_without_validation_and_errors(tiny_checkpoint, tmp_path, capsys):
    assert export_onnx_main(["--model", tiny_checkpoint, "--output", str(tmp_path), "--no_validate"]) == 0
    assert "max abs error" not in capsys.readouterr().out
    assert "parity" not in json.loads((tmp_path / "groupvit_onnx.json").read_text())
    assert export_onnx_main(["--model", tiny_checkpoint, "--output", str(tmp_path), "--opset", "12"]) == 1
    assert "opset" in capsys.readouterr().err
