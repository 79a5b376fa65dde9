"""Zero-shot segmentation (groupvit.segmentation.segmenter) and its drawing helpers
(groupvit.segmentation.visualization)."""

import copy

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

import groupvit
from conftest import randomize_, tiny_config
from groupvit.segmentation import (
    GroupViTSegmenter,
    SegmentationOptions,
    SegmentationProtocol,
    available_protocols,
    get_protocol,
    pixel_label_logits,
    register_protocol,
    rescaled_size,
    sliding_windows,
    validate_labels,
)
from groupvit.segmentation.segmenter import upsampled_argmax
from groupvit.segmentation.visualization import (
    colorize,
    grid,
    group_overlay,
    label_colors,
    legend,
    overlay,
    voc_palette,
)

LABELS = ["cat", "dog", "grass"]


@pytest.fixture(scope="module")
def model() -> groupvit.GroupViTModel:
    return randomize_(groupvit.GroupViTModel(tiny_config()), seed=1).eval()


@pytest.fixture(scope="module")
def processor() -> groupvit.GroupViTProcessor:
    return groupvit.GroupViTProcessor.from_bundled(image_size=32)


@pytest.fixture(scope="module")
def segmenter(model, processor) -> GroupViTSegmenter:
    return GroupViTSegmenter(model, processor, short_side=32, window=32, stride=16)


def random_image(width: int, height: int, seed: int = 0) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# --------------------------------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------------------------------


def test_rescaled_size_follows_mmseg_keep_ratio_resize():
    assert rescaled_size(375, 500, 448, 2048) == (448, 597)  # a typical VOC image
    assert rescaled_size(500, 375, 448, 2048) == (597, 448)
    assert rescaled_size(100, 3000, 448, 2048) == (68, 2048)  # long side capped
    assert rescaled_size(37, 53, None, None) == (37, 53)


@pytest.mark.parametrize("height,width,window,stride", [(448, 597, 448, 224), (45, 100, 32, 16), (20, 30, 32, 16)])
def test_sliding_windows_cover_the_image_with_full_windows(height, width, window, stride):
    boxes = sliding_windows(height, width, window, stride)
    covered = np.zeros((height, width), dtype=int)
    for y1, y2, x1, x2 in boxes:
        assert 0 <= y1 < y2 <= height and 0 <= x1 < x2 <= width
        assert (y2 - y1, x2 - x1) == (min(window, height), min(window, width))
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1
    if (height, width) == (448, 597):
        assert boxes == [(0, 448, 0, 448), (0, 448, 149, 597)]


# --------------------------------------------------------------------------------------------------------------------
# the segmenter
# --------------------------------------------------------------------------------------------------------------------


def test_result_shapes_and_background_position(segmenter, model):
    images = [random_image(56, 40, seed=0), random_image(32, 32, seed=1)]
    model.train()  # the segmenter runs in eval mode and restores the caller's mode
    last = segmenter.segment(images, LABELS, background_threshold=0.9)
    assert model.training
    model.eval()
    first = segmenter.segment(images, LABELS, background_threshold=0.9, background_first=True)
    for image, a, b in zip(images, last, first, strict=True):
        size = (image.height, image.width)
        # logits stay at the model's resolution (32 px short side); full_size_logits() resizes them
        assert a.label_logits.shape[0] == 4 and min(a.label_logits.shape[1:]) == 32
        assert a.full_size_logits().shape == (4, *size) and a.label_logits.dtype == torch.float32
        assert a.label_map.shape == size and a.label_map.dtype == torch.int64
        assert a.scores.shape == (4,) and a.image_scores.shape == (3,)
        assert torch.isclose(a.image_scores.sum(), torch.tensor(1.0))
        assert a.labels == [*LABELS, "background"] and a.background_index == 3
        assert b.labels == ["background", *LABELS] and b.background_index == 0
        assert torch.equal(b.label_logits[0], a.label_logits[-1]) and torch.equal(
            b.label_logits[1:], a.label_logits[:-1]
        )
        assert torch.equal(a.label_map, a.full_size_logits().argmax(0))
        assert set(a.masks()) == {a.labels[i] for i in a.label_map.unique().tolist()}
    # 32x45 after the resize: two windows, so no group maps; the 32x32 image is one window
    assert last[0].group_maps is None
    assert [tuple(m.shape) for m in last[1].group_maps] == [(8, 8, 8), (4, 8, 8)]
    no_background = segmenter.segment(images[0], LABELS)[0]
    assert no_background.labels == LABELS and no_background.background_index is None
    assert no_background.full_size_logits().shape == (3, 40, 56)


def test_window_at_least_as_large_as_the_image_equals_whole_mode(segmenter):
    image = random_image(56, 40, seed=2)  # 32x45 after the short-side resize
    whole = segmenter.segment(image, LABELS, mode="whole", background_threshold=0.5)[0]
    for window in (45, 64):
        slide = segmenter.segment(image, LABELS, mode="slide", window=window, stride=16, background_threshold=0.5)[0]
        assert torch.equal(slide.label_logits, whole.label_logits)
        assert all(torch.equal(a, b) for a, b in zip(slide.group_maps, whole.group_maps, strict=True))
    smaller = segmenter.segment(image, LABELS, mode="slide", window=16, stride=8, background_threshold=0.5)[0]
    assert smaller.label_logits.shape == whole.label_logits.shape
    assert not torch.equal(smaller.label_logits, whole.label_logits)


def test_matches_an_independent_computation_from_the_model_outputs(model, processor):
    """Recompute the original protocol by hand from `model(..., output_segmentation=True)` on a non-square input."""
    segmenter = GroupViTSegmenter(model, processor, short_side=None, mode="whole", background_threshold=0.3, top_k=2)
    image = random_image(48, 32, seed=3)  # W x H; patch grid 8 x 12
    result = segmenter.segment(image, LABELS)[0]

    pixel_values = processor.image_processor(
        images=[image], do_resize=False, do_center_crop=False, return_tensors="pt"
    ).pixel_values
    text = processor.tokenizer([f"a photo of a {label}." for label in LABELS], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**text, pixel_values=pixel_values, output_segmentation=True)
        groups = F.normalize(model.get_group_embeddings(out.vision_model_output.last_hidden_state), dim=-1)[0]
    # the original: attn [B, G, N] -> [B, N, G], chained by P = A1 @ A2, on the patch grid, bilinear, arg-max
    stage1, stage2 = out.vision_model_output.attentions
    chained = stage1.transpose(1, 2) @ stage2.transpose(1, 2)  # (1, 96, 4)
    grid_maps = chained.reshape(1, 8, 12, -1).permute(0, 3, 1, 2)
    pixel_maps = F.interpolate(grid_maps, size=(32, 48), mode="bilinear", align_corners=False)[0]
    onehot = F.one_hot(pixel_maps.argmax(0), num_classes=4).float()  # (H, W, G)

    scale = model.logit_scale.exp().clamp(max=100)
    affinity = groups @ out.text_embeds.t() * scale  # (G, C)
    p_all = affinity.softmax(-1)
    image_probs = (out.image_embeds @ out.text_embeds.t() * scale).softmax(-1)[0]
    mask = torch.zeros_like(image_probs).scatter_(0, image_probs.topk(2).indices, 1.0).bool()
    group_scores = affinity.masked_fill(~mask, float("-inf")).softmax(-1) * p_all
    foreground = (onehot @ group_scores).permute(2, 0, 1)  # (C, H, W)
    background = (foreground.amax(0) < min(0.3, group_scores.max().item())).float()

    assert torch.equal(result.group_maps[-1].argmax(0), grid_maps[0].argmax(0))
    torch.testing.assert_close(result.label_logits[:3], foreground, atol=1e-5, rtol=1e-5)
    assert torch.equal(result.label_logits[3], background)
    torch.testing.assert_close(result.image_scores, image_probs, atol=1e-5, rtol=1e-5)


def test_template_ensembles(segmenter, model, processor):
    templates = ["a photo of a {}.", "art of the {}.", "a {} in a video game."]
    prompts = [t.format(label) for label in ["cat", "dog"] for t in templates]
    tokens = processor.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        raw = model.get_text_features(**tokens).pooler_output.reshape(2, 3, -1)
    original = segmenter.encode_labels(["cat", "dog"], templates)
    clip_style = segmenter.encode_labels(["cat", "dog"], templates, template_ensemble="normalized_mean")
    torch.testing.assert_close(original, F.normalize(raw.mean(1), dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(clip_style, F.normalize(F.normalize(raw, dim=-1).mean(1), dim=-1), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(original, clip_style, atol=1e-4)
    single = segmenter.encode_labels(["cat", "dog"], templates[:1])
    torch.testing.assert_close(single, F.normalize(raw[:, 0], dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(segmenter.encode_labels(["cat", "dog"], templates[:1], "normalized_mean"), single)
    assert segmenter.segment(random_image(32, 32), ["cat", "dog"], templates=tuple(templates))[0].labels == [
        "cat",
        "dog",
    ]


def test_label_embeddings_are_computed_once_per_call(segmenter, model, monkeypatch):
    calls = []
    original = model.get_text_features
    monkeypatch.setattr(model, "get_text_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    segmenter.segment([random_image(80, 40), random_image(40, 40), random_image(40, 90)], LABELS)  # 5 windows
    assert len(calls) == 1


def test_background_rules():
    # 3 groups, 2 labels; a 1x4 image whose pixels belong to groups 0, 1, 2, 0
    group_scores = torch.tensor([[[0.6, 0.1], [0.2, 0.3], [0.05, 0.05]]])
    maps = F.one_hot(torch.tensor([[[0, 1, 2, 0]]]), 3).permute(0, 3, 1, 2).float()
    expected = torch.tensor([[0.6, 0.2, 0.05, 0.6], [0.1, 0.3, 0.05, 0.1]])  # (C, W): each pixel's group row
    assert torch.equal(pixel_label_logits(maps, group_scores)[0, :, 0], expected)

    def background(threshold, score_mode="original"):
        return pixel_label_logits(maps, group_scores, threshold, score_mode=score_mode)[0, -1, 0].tolist()

    assert background(0.0) == [0, 0, 0, 0]  # nothing is below 0
    assert background(0.25) == [0, 0, 1, 0]  # min(0.25, 0.6) = 0.25
    assert background(1.0) == [0, 1, 1, 0]  # min(1, 0.6): only the best group stays foreground
    assert background(1.0, "cosine") == [1, 1, 1, 1]  # an absolute threshold: every score is below 1
    soft = pixel_label_logits(torch.full((1, 3, 1, 4), 1 / 3), group_scores, assignment="soft")
    torch.testing.assert_close(soft[0, :, 0, 0], group_scores[0].mean(0))


def test_background_threshold_end_to_end(segmenter):
    image = random_image(48, 32, seed=4)
    none = segmenter.segment(image, LABELS, background_threshold=0.0, mode="whole")[0]
    assert not (none.label_map == none.background_index).any()
    cosine = segmenter.segment(image, LABELS, background_threshold=1.0, score_mode="cosine", mode="whole")[0]
    assert (cosine.label_map == cosine.background_index).all()
    strict = segmenter.segment(image, LABELS, background_threshold=1.0, mode="whole")[0]
    top = strict.label_logits[:3].amax(0)
    # with the original rule the pixels of the best-scoring group stay foreground, everything else is background
    assert torch.equal(strict.label_map == strict.background_index, top < top.max())


def test_bfloat16_model(model, processor):
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    result = GroupViTSegmenter(bf16, processor, short_side=32).segment(random_image(40, 32), LABELS)[0]
    assert result.label_logits.dtype == torch.float32 and torch.isfinite(result.label_logits).all()
    assert result.label_map.shape == (32, 40)


def test_invalid_options_and_labels(segmenter, model, processor):
    for bad in (
        {"background_threshold": 1.5},
        {"background_threshold": float("nan")},
        {"templates": ("no placeholder",)},
        {"templates": ()},
        {"mode": "tile"},
        {"stride": 64, "window": 32},
        {"short_side": 0},
        {"top_k": 0},
        {"assignment": "gumbel"},
        {"no_such_option": 1},
    ):
        with pytest.raises(ValueError):
            SegmentationOptions().replace(**bad)
    for labels in ([], ["a", "a"], "cat", ["cat", ""], ["cat", 3]):
        with pytest.raises(ValueError):
            validate_labels(labels)
    with pytest.raises(ValueError, match="background"):
        segmenter.segment(random_image(32, 32), ["sky", "background"], background_threshold=0.5)
    with pytest.raises(ValueError, match="empty"):
        segmenter.segment(PIL.Image.new("RGB", (0, 8)), LABELS)
    with pytest.raises(TypeError):
        GroupViTSegmenter(torch.nn.Linear(2, 2), processor)


# --------------------------------------------------------------------------------------------------------------------
# protocols
# --------------------------------------------------------------------------------------------------------------------


def test_builtin_protocols():
    assert {"voc", "context", "coco_object", "synthetic"} <= set(available_protocols())
    voc, context, coco = get_protocol("voc"), get_protocol("context"), get_protocol("coco_object")
    assert len(voc.labels) == 20 and len(context.labels) == 59 and len(coco.labels) == 80
    assert {"table", "plant", "monitor"} <= set(voc.labels) and "diningtable" not in voc.labels
    assert {"airplane", "plant", "monitor"} <= set(context.labels) and "aeroplane" not in context.labels
    assert "aeroplane" in voc.labels and "dining table" in coco.labels
    assert (voc.options.background_threshold, voc.background_threshold_paper) == (0.95, 0.9)
    assert context.options.background_threshold == 0.35 and coco.options.background_threshold == 0.95
    for protocol in (voc, context, coco):
        opts = protocol.options
        assert opts.templates == ("a photo of a {}.",) and opts.background_first
        assert (opts.mode, opts.short_side, opts.window, opts.stride, opts.top_k) == ("slide", 448, 448, 224, 5)
    assert get_protocol("synthetic").class_names == ()
    with pytest.raises(ValueError, match="unknown"):
        get_protocol("ade847")  # ade20k is a preset of the benchmark suite; ADE-847 is not


def test_register_protocol():
    filled = get_protocol("synthetic").with_class_names(["sun", "leaf"], background_threshold=0.5)
    with pytest.raises(ValueError, match="already registered"):
        register_protocol(filled)
    original = get_protocol("synthetic")
    try:
        register_protocol(filled, overwrite=True)
        assert get_protocol("synthetic").labels == ["sun", "leaf"]
        assert get_protocol("synthetic").options.background_threshold == 0.5
    finally:
        register_protocol(original, overwrite=True)
    custom = SegmentationProtocol.from_dict({"name": "_test_custom", "class_names": ["a", "b"], "options": {}})
    assert SegmentationProtocol.from_dict(custom.to_dict()) == custom


# --------------------------------------------------------------------------------------------------------------------
# visualization
# --------------------------------------------------------------------------------------------------------------------


def test_palette_and_overlay():
    palette = voc_palette(21)
    assert (
        tuple(palette[0]) == (0, 0, 0) and tuple(palette[1]) == (128, 0, 0) and tuple(palette[15]) == (192, 128, 128)
    )
    assert len({tuple(c) for c in palette}) == 21
    colors = label_colors(3, background_index=0)
    assert tuple(colors[0]) == (0, 0, 0) and np.array_equal(colors[1:], label_colors(2))
    image = PIL.Image.new("RGB", (40, 30), (100, 100, 100))
    label_map = np.zeros((15, 20), dtype=np.int64)
    label_map[:, 10:] = 1
    plain = overlay(image, label_map, ["background", "cat"], alpha=1.0, background_index=0, with_legend=False)
    assert plain.size == (40, 30)
    assert plain.getpixel((0, 0)) == (100, 100, 100) and plain.getpixel((39, 0)) == tuple(int(c) for c in colors[1])
    with_legend = overlay(image, torch.from_numpy(label_map), ["background", "cat"], background_index=0)
    assert with_legend.width == 40 and with_legend.height > 30
    assert legend(["a", "bb", "ccc"] * 10, voc_palette(30), width=60).height > legend(["a"], voc_palette(1), 60).height
    assert colorize(np.array([[0, 1], [255, 1]]), colors).getpixel((0, 1)) == (255, 255, 255)
    assert group_overlay(image, torch.rand(4, 3, 4)).size == (40, 30)
    tiled = grid([[image, plain, None], [image, image, plain]], column_titles=["image", "gt", "prediction"])
    assert tiled.width == 3 * (40 + 4) + 4 and tiled.height > 2 * (30 + 4)


def test_model_without_grouping_segments_by_patch():
    """A plain ViT (no grouping stage): every patch is its own group, as in the paper's non-grouping baseline."""
    from conftest import tiny_config
    from groupvit import GroupViTModel, GroupViTProcessor
    from groupvit.segmentation import GroupViTSegmenter

    config = tiny_config(vision_config={"depths": [2], "num_group_tokens": [0], "num_output_groups": [0]})
    model = GroupViTModel(config).eval()
    segmenter = GroupViTSegmenter(model, GroupViTProcessor.from_bundled(image_size=32))
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    result = segmenter.segment(image, ["cat", "dog"], mode="whole", short_side=None)[0]
    assert result.label_map.shape == (32, 32)
    assert result.group_maps[0].shape == (64, 8, 8)  # 8x8 patches, one group each


def test_count_used_groups_by_hand_and_against_a_per_image_reference():
    from groupvit.segmentation import chained_stages, count_used_groups

    # stage 1: 4 patches -> 3 groups; patches 0,1 -> group 0, patches 2,3 -> group 2 (group 1 wins none)
    stage1 = torch.tensor([[[0.8, 0.7, 0.1, 0.0], [0.1, 0.2, 0.2, 0.1], [0.1, 0.1, 0.7, 0.9]]])
    # stage 2: 3 groups -> 2 groups, both stage-1 winners go to group 1
    stage2 = torch.tensor([[[0.4, 0.9, 0.3], [0.6, 0.1, 0.7]]])
    assert count_used_groups(chained_stages((stage1, stage2))) == [2.0, 1.0]
    generator = torch.Generator().manual_seed(0)
    groupings = (
        torch.rand(5, 8, 16, generator=generator).softmax(1),
        torch.rand(5, 3, 8, generator=generator).softmax(1),
    )
    chained, expected = None, []
    for grouping in groupings:
        chained = grouping if chained is None else grouping @ chained  # (batch, G_k, N)
        expected.append(np.mean([len(set(chained[b].argmax(0).tolist())) for b in range(5)]))
    assert count_used_groups(chained_stages(groupings)) == pytest.approx(expected)
    maps = groupvit.segmentation.stage_group_maps(groupings, (4, 4), batch_size=5)  # the same on the patch grid
    assert count_used_groups(maps) == pytest.approx(expected)


def test_eval_mode_restores_the_mode_even_after_an_error():
    from groupvit.utils import eval_mode

    module = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(2)).train()
    with pytest.raises(RuntimeError), eval_mode(module):
        assert not module.training and not module[1].training
        raise RuntimeError("boom")
    assert module.training and module[1].training
    with eval_mode(module.eval()):
        pass
    assert not module.training


def test_docstring_examples_run():
    import doctest

    from groupvit import utils
    from groupvit.cli import shipped_model
    from groupvit.segmentation import protocols, scoring, segmenter, windows

    for module in (protocols, windows, scoring, segmenter, utils, shipped_model):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# --------------------------------------------------------------------------------------------------------------------
# bounded memory: the resize to the original size runs label by label with a running arg-max
# --------------------------------------------------------------------------------------------------------------------


def _old_finalize(logits: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The computation before the streaming resize: all labels resized at once, arg-max, mean winning logit."""
    full = torch.nn.functional.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
    label_map = full.argmax(0)
    winning = full.gather(0, label_map[None]).flatten()
    pixels = torch.bincount(label_map.flatten(), minlength=logits.shape[0]).float()
    totals = torch.zeros(logits.shape[0]).scatter_add_(0, label_map.flatten(), winning)
    return label_map, totals / pixels.clamp(min=1)


@pytest.mark.parametrize("background_index", [None, 0, 6])
@pytest.mark.parametrize("max_elements", [1, 3 * 50 * 70, 1 << 24])
def test_streaming_argmax_equals_resizing_all_labels_at_once(background_index, max_elements):
    generator = torch.Generator().manual_seed(0)
    # few distinct values, so that many pixels tie (the first label must win, as argmax)
    logits = torch.randint(0, 3, (7, 9, 13), generator=generator).float() / 2
    for size in ((50, 70), (9, 13), (5, 31)):
        label_map, winning, best_label = upsampled_argmax(logits, size, background_index, max_elements)
        full = torch.nn.functional.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
        assert torch.equal(label_map, full.argmax(0))
        assert torch.equal(winning, full.amax(0))
        if background_index is None:
            assert best_label is None
        else:
            others = torch.cat([full[:background_index], full[background_index + 1 :]])
            assert torch.equal(best_label, others.amax(0))


def test_masks_and_scores_equal_the_old_full_size_computation(segmenter):
    image = random_image(83, 61, seed=5)  # resized to 32x44, then back to 61x83
    for threshold in (None, 0.9):
        result = segmenter.segment(image, LABELS, background_threshold=threshold)[0]
        label_map, scores = _old_finalize(result.label_logits, (61, 83))
        assert torch.equal(result.label_map, label_map)
        foreground = slice(0, len(LABELS))
        torch.testing.assert_close(result.scores[foreground], scores[foreground], rtol=1e-6, atol=1e-7)
