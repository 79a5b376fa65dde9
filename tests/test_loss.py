"""Tests for ``groupvit.training.losses``."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import groupvit
from conftest import randomize_, tiny_config
from groupvit.modeling_groupvit import all_gather_with_grad, distributed_rank_and_world_size
from groupvit.training.config import LossArguments
from groupvit.training.losses import (
    GroupDiversityTerm,
    GroupViTPretrainingLoss,
    ImageTextContrastiveTerm,
    image_text_contrastive_loss,
    multi_label_contrastive_loss,
    soft_target_cross_entropy,
)

WORKER = Path(__file__).with_name("_dist_loss_worker.py")


def _load_worker():
    spec = importlib.util.spec_from_file_location("_dist_loss_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lse(*xs: float) -> float:
    return math.log(sum(math.exp(x) for x in xs))


# ---------------------------------------------------------------------------------------------------------------------
# Hand-computed values
# ---------------------------------------------------------------------------------------------------------------------
# Images (already unit norm): i0 = (1, 0), i1 = (0, 1).
IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
S = 2.0  # exp(log 2)


def test_itc_hand_computed():
    # Unnormalised texts: t0 = (3, 4) -> (0.6, 0.8); t1 = (0, 2) -> (0, 1).
    texts = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    # Cosines: i0.t0 = 0.6, i0.t1 = 0, i1.t0 = 0.8, i1.t1 = 1.
    img_rows = [-0.6 * S + _lse(0.6 * S, 0.0), -1.0 * S + _lse(0.8 * S, 1.0 * S)]
    txt_rows = [-0.6 * S + _lse(0.6 * S, 0.8 * S), -1.0 * S + _lse(0.0, 1.0 * S)]
    expected = 0.5 * (sum(img_rows) / 2 + sum(txt_rows) / 2)

    loss = image_text_contrastive_loss(IMAGES * 5.0, texts, torch.tensor(math.log(S)))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


# Prompts (B=2, K=2), unit norm: p00 = (1, 0), p01 = (0.6, 0.8), p10 = (0.8, 0.6), p11 = (0, 1).
PROMPTS = torch.tensor([[[1.0, 0.0], [0.6, 0.8]], [[0.8, 0.6], [0.0, 1.0]]])
# Cosines of image i with prompts [p00, p01, p10, p11].
COS = [[1.0, 0.6, 0.8, 0.0], [0.0, 0.8, 0.6, 1.0]]


def test_multi_label_instance_hand_computed():
    # image -> text: target 1/2 on the image's own two prompts.
    img_rows = [
        -0.5 * (S * COS[0][0] + S * COS[0][1]) + _lse(*(S * c for c in COS[0])),
        -0.5 * (S * COS[1][2] + S * COS[1][3]) + _lse(*(S * c for c in COS[1])),
    ]
    # text -> image: one-hot on the prompt's own image; columns [i0, i1].
    txt_rows = [
        -S * 1.0 + _lse(S * 1.0, S * 0.0),  # p00 -> i0
        -S * 0.6 + _lse(S * 0.6, S * 0.8),  # p01 -> i0
        -S * 0.6 + _lse(S * 0.8, S * 0.6),  # p10 -> i1
        -S * 1.0 + _lse(S * 0.0, S * 1.0),  # p11 -> i1
    ]
    expected = 0.5 * (sum(img_rows) / 2 + sum(txt_rows) / 4)

    scale = torch.tensor(math.log(S))
    loss = multi_label_contrastive_loss(IMAGES, PROMPTS * 3.0, scale)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # (B, 1, C) image input as in the original code; noun ids are ignored in "instance" mode.
    loss_3d = multi_label_contrastive_loss(IMAGES[:, None], PROMPTS, scale, noun_ids=torch.tensor([[0, 0], [0, 0]]))
    assert loss_3d.item() == pytest.approx(expected, rel=1e-5)


def test_multi_label_semantic_hand_computed():
    # Image 0 has nouns {5, 7}; image 1 has noun {7} and a padding prompt (-1).
    noun_ids = torch.tensor([[5, 7], [7, -1]])
    # image -> text: i0 positives p00, p01 (own) + p10 (noun 7); i1 positives p10, p11 (own) + p01 (noun 7).
    img_rows = [
        -(S * COS[0][0] + S * COS[0][1] + S * COS[0][2]) / 3 + _lse(*(S * c for c in COS[0])),
        -(S * COS[1][1] + S * COS[1][2] + S * COS[1][3]) / 3 + _lse(*(S * c for c in COS[1])),
    ]
    # text -> image, columns [i0, i1]: p00 (5) -> i0; p01 (7) -> i0, i1; p10 (7) -> i0, i1; p11 (pad) -> i1 only.
    txt_rows = [
        -S * 1.0 + _lse(S * 1.0, S * 0.0),
        -0.5 * (S * 0.6 + S * 0.8) + _lse(S * 0.6, S * 0.8),
        -0.5 * (S * 0.8 + S * 0.6) + _lse(S * 0.8, S * 0.6),
        -S * 1.0 + _lse(S * 0.0, S * 1.0),
    ]
    expected = 0.5 * (sum(img_rows) / 2 + sum(txt_rows) / 4)

    loss = multi_label_contrastive_loss(
        IMAGES, PROMPTS, torch.tensor(math.log(S)), target="semantic", noun_ids=noun_ids
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_semantic_equals_instance_when_nouns_are_unique():
    g = torch.Generator().manual_seed(0)
    image, prompts = torch.randn(4, 8, generator=g), torch.randn(4, 3, 8, generator=g)
    unique_ids = torch.arange(12).view(4, 3)
    unique_ids[2, 2] = -1
    scale = torch.tensor(1.5)
    instance = multi_label_contrastive_loss(image, prompts, scale)
    semantic = multi_label_contrastive_loss(image, prompts, scale, target="semantic", noun_ids=unique_ids)
    torch.testing.assert_close(semantic, instance)


def test_soft_target_cross_entropy_matches_hard_ce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=g)
    labels = torch.randint(0, 7, (5,), generator=g)
    target = torch.nn.functional.one_hot(labels, 7).float()
    torch.testing.assert_close(
        soft_target_cross_entropy(logits, target), torch.nn.functional.cross_entropy(logits, labels)
    )


# ---------------------------------------------------------------------------------------------------------------------
# Independent reference: transformers' CLIP loss
# ---------------------------------------------------------------------------------------------------------------------
def _transformers_clip_loss():
    from transformers.models.clip import modeling_clip

    # Renamed from `clip_loss` to `image_text_contrastive_loss` in transformers 5.
    fn = getattr(modeling_clip, "clip_loss", None) or getattr(modeling_clip, "image_text_contrastive_loss", None)
    if fn is None:
        pytest.skip("transformers CLIP loss not found")
    return fn


def test_itc_matches_transformers_clip_loss():
    clip_loss = _transformers_clip_loss()
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    logit_scale = torch.tensor(math.log(1 / 0.07))
    image_n = image / image.norm(dim=-1, keepdim=True)
    text_n = text / text.norm(dim=-1, keepdim=True)
    logits_per_text = logit_scale.exp() * text_n @ image_n.t()  # (B, B)
    expected = clip_loss(logits_per_text)
    torch.testing.assert_close(image_text_contrastive_loss(image, text, logit_scale), expected)


# ---------------------------------------------------------------------------------------------------------------------
# Scales, API, gradients
# ---------------------------------------------------------------------------------------------------------------------
def test_logit_scale_clamped_and_configurable():
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    big = torch.tensor(math.log(500.0), requires_grad=True)
    loss = image_text_contrastive_loss(image, text, big)
    torch.testing.assert_close(loss, image_text_contrastive_loss(image, text, torch.tensor(math.log(100.0))))
    loss.backward()
    assert big.grad.item() == 0.0  # clamped -> no gradient to the scale
    unclamped = image_text_contrastive_loss(image, text, big, max_logit_scale=None)
    torch.testing.assert_close(
        unclamped, image_text_contrastive_loss(image, text, math.log(500.0), max_logit_scale=1e4)
    )
    clamp_10 = image_text_contrastive_loss(image, text, big, max_logit_scale=10.0)
    torch.testing.assert_close(clamp_10, image_text_contrastive_loss(image, text, math.log(10.0)))


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    prompts = torch.randn(3, 2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    noun_ids = torch.tensor([[0, 1], [1, -1], [2, 0]])
    for target in ("instance", "semantic"):
        assert torch.autograd.gradcheck(
            lambda i, p, s, t=target: multi_label_contrastive_loss(i, p, s, target=t, noun_ids=noun_ids),
            (image, prompts, scale),
        )
    assert torch.autograd.gradcheck(
        lambda i, t, s: image_text_contrastive_loss(i, t, s), (image, prompts[:, 0].detach().requires_grad_(), scale)
    )


def test_all_gather_is_identity_without_distributed():
    assert distributed_rank_and_world_size() == (0, 1)
    x = torch.randn(3, 2)
    assert all_gather_with_grad(x) is x


def _step(loss_fn, model, batch):
    outputs = model(**loss_fn.model_inputs(batch))
    return outputs, loss_fn(model, outputs, batch)


PROMPT_IDS = torch.tensor([[[49406, 320, 2368, 49407], [49406, 320, 1929, 49407]]] * 2)


@pytest.mark.parametrize("target,pooling", [("instance", "mean"), ("semantic", "max")])
def test_pretraining_loss_equals_its_terms_computed_by_hand(text_inputs, pixel_values, target, pooling):
    arguments = LossArguments(
        multi_label_weight=0.5, multi_label_target=target, multi_label_group_pooling=pooling, group_diversity_weight=2
    )
    loss_fn = GroupViTPretrainingLoss.from_arguments(arguments, num_prompt_nouns=2, pad_token_id=49407)
    assert set(loss_fn.terms) == {"itc", "multi_label", "group_diversity"}
    model = randomize_(groupvit.GroupViTModel(tiny_config()), std=0.1).eval()
    noun_ids = torch.tensor([[7, 8], [7, -1]])
    batch = {
        **text_inputs,
        "pixel_values": pixel_values[:2],
        "prompt_input_ids": PROMPT_IDS,
        "prompt_noun_ids": noun_ids,
    }
    outputs, out = _step(loss_fn, model, batch)
    with torch.no_grad():
        vision = model.vision_model(pixel_values[:2])
        image = model.visual_projection(vision.pooler_output)
        groups = model.get_group_embeddings(vision.last_hidden_state)
        # captions and prompts go through the text head's BatchNorm together (eval mode: running stats)
        caption = model.get_text_features(**text_inputs).pooler_output
        prompt = model.get_text_features(PROMPT_IDS.reshape(4, 4)).pooler_output.reshape(2, 2, -1)
    itc = image_text_contrastive_loss(image, caption, model.logit_scale)
    multi = multi_label_contrastive_loss(
        groups if pooling == "max" else image,
        prompt,
        loss_fn.terms["multi_label"].logit_scale,
        target=target,
        noun_ids=noun_ids if target == "semantic" else None,
    )
    from groupvit.training.losses import group_diversity_loss

    diversity = group_diversity_loss(vision.attentions)
    torch.testing.assert_close(out.terms["itc"], itc, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.terms["multi_label"], multi, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.terms["group_diversity"], diversity, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.loss, itc + 0.5 * multi + 2 * diversity, atol=1e-5, rtol=1e-5)
    # the model's own return_loss is the same contrastive term
    with torch.no_grad():
        own = model(**text_inputs, pixel_values=pixel_values[:2], return_loss=True).loss
    torch.testing.assert_close(own, itc, atol=1e-5, rtol=1e-5)
    out.loss.backward()
    assert loss_fn.terms["multi_label"].logit_scale.grad is not None
    assert outputs.text_embeds.shape[0] == 2 + 4  # captions and prompts in one text batch


def test_pretraining_loss_without_prompts_is_itc_only_and_new_terms_register(text_inputs, pixel_values):
    loss_fn = GroupViTPretrainingLoss.from_arguments(LossArguments(), num_prompt_nouns=0)
    assert set(loss_fn.terms) == {"itc"} and not list(loss_fn.parameters())
    model = randomize_(groupvit.GroupViTModel(tiny_config()), std=0.1).eval()
    batch = {**text_inputs, "pixel_values": pixel_values[:2]}
    _, out = _step(loss_fn, model, batch)
    torch.testing.assert_close(out.loss, out.terms["itc"])

    class Constant(torch.nn.Module):
        def forward(self, inputs):
            return inputs.image_embeds.new_tensor(3.0)

    loss_fn.add_term("region", Constant(), 0.25)
    _, out = _step(loss_fn, model, batch)
    torch.testing.assert_close(out.loss, out.terms["itc"] + 0.75)
    with pytest.raises(ValueError, match="already registered"):
        loss_fn.add_term("region", Constant(), 1.0)
    with pytest.raises(ValueError, match="weight of loss term 'x'"):
        loss_fn.add_term("x", ImageTextContrastiveTerm(), float("nan"))
    with pytest.raises(ValueError, match="output_attentions"):
        loss_fn2 = GroupViTPretrainingLoss()
        loss_fn2.add_term("group_diversity", GroupDiversityTerm(), 1.0)
        outputs = model(**text_inputs, pixel_values=pixel_values[:2])
        loss_fn2(model, outputs, batch)


def test_invalid_arguments():
    image, prompts = torch.randn(2, 4), torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="noun_ids"):
        multi_label_contrastive_loss(image, prompts, 1.0, target="semantic")
    with pytest.raises(ValueError, match="noun_ids"):
        multi_label_contrastive_loss(image, prompts, 1.0, target="semantic", noun_ids=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="target"):
        multi_label_contrastive_loss(image, prompts, 1.0, target="bogus")


# ---------------------------------------------------------------------------------------------------------------------
# Multi-process equivalence (gloo, CPU)
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dist_results(tmp_path_factory):
    """Runs 2 worker processes once and returns (per-rank results, world size)."""
    tmp_path = tmp_path_factory.mktemp("dist_loss")
    world_size = 2
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    init_file = tmp_path / "store"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), str(world_size), str(init_file), str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in range(world_size)
    ]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=120)
            outputs.append(out.decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world_size)]
    return results, world_size


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["instance", "semantic"])
def test_distributed_matches_single_process(dist_results, scenario):
    """Differentiable gather: mean of per-rank losses == full-batch loss; DDP-averaged grads == full-batch grads.

    Convention (see ``groupvit.training.losses``): the gradient w.r.t. a rank's *local inputs* is ``W`` times the
    full-batch
    gradient of the mean loss, so that DDP's averaging of *parameter* gradients (``proj`` here, a replicated linear
    encoder) yields exactly the full-batch parameter gradient. Replicated logit scales: the per-rank mean equals it.
    """
    worker = _load_worker()
    results, world_size = dist_results
    target = worker.SCENARIOS[scenario][0]
    problem = worker.make_problem()
    ref = worker.run_scenario(problem, slice(None), target)
    per_rank = [r[scenario] for r in results]
    local = worker.FULL_BATCH // world_size

    for key in ("loss", "itc_loss", "multi_label_loss"):
        mean_loss = torch.stack([r[key] for r in per_rank]).mean()
        torch.testing.assert_close(mean_loss, ref[key], rtol=1e-5, atol=1e-6)

    for name in ("x_image", "x_text", "x_prompt"):
        for rank, r in enumerate(per_rank):
            rows = slice(rank * local, (rank + 1) * local)
            torch.testing.assert_close(
                r[f"grad_{name}"], world_size * ref[f"grad_{name}"][rows], rtol=1e-4, atol=1e-6, msg=name
            )
    for name in ("proj", "logit_scale", "multi_label_logit_scale"):  # DDP-style average over ranks
        averaged = torch.stack([r[f"grad_{name}"] for r in per_rank]).mean(0)
        torch.testing.assert_close(averaged, ref[f"grad_{name}"], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_non_differentiable_gather_gives_wrong_gradients(dist_results):
    """With a plain ``all_gather`` the loss values are unchanged but encoder gradients no longer match."""
    worker = _load_worker()
    results, _ = dist_results
    ref = worker.run_scenario(worker.make_problem(), slice(None), "instance")
    per_rank = [r["instance_nograd_gather"] for r in results]
    torch.testing.assert_close(torch.stack([r["loss"] for r in per_rank]).mean(), ref["loss"], rtol=1e-5, atol=1e-6)
    averaged = torch.stack([r["grad_proj"] for r in per_rank]).mean(0)
    assert not torch.allclose(averaged, ref["grad_proj"], rtol=1e-2, atol=1e-4)
    # The differentiable gather does match (sanity check on the same problem).
    averaged_ok = torch.stack([r["instance"]["grad_proj"] for r in results]).mean(0)
    torch.testing.assert_close(averaged_ok, ref["grad_proj"], rtol=1e-4, atol=1e-6)


def test_multi_label_group_max_pooling_hand_computed():
    """(B, G, C) group embeddings: each image-prompt logit is the best group's cosine."""
    from groupvit.training.losses import multi_label_contrastive_loss

    # image 0 has groups e0 and e1, image 1 has groups e1 and -e0; one prompt each: e0 (image 0), e1 (image 1)
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    groups = torch.stack([torch.stack([e0, e1]), torch.stack([e1, -e0])])  # (2, 2, 2)
    prompts = torch.stack([e0, e1])[:, None]  # (2, 1, 2)
    scale = 2.0
    loss = multi_label_contrastive_loss(groups, prompts, math.log(scale), gather=False, max_logit_scale=None)
    # best-group cosines: image 0 vs (e0, e1) = (1, 1); image 1 vs (e0, e1) = (0, 1)
    image_side = 0.5 * (
        -math.log(math.exp(2) / (math.exp(2) + math.exp(2))) - math.log(math.exp(2) / (math.exp(0) + math.exp(2)))
    )
    # prompt e0 vs images (1, 0) -> target image 0; prompt e1 vs images (1, 1) -> target image 1
    text_side = 0.5 * (
        -math.log(math.exp(2) / (math.exp(2) + math.exp(0))) - math.log(math.exp(2) / (math.exp(2) + math.exp(2)))
    )
    assert loss.item() == pytest.approx(0.5 * (image_side + text_side), rel=1e-6)


def test_group_diversity_loss_hand_computed():
    from groupvit.training.losses import group_diversity_loss

    # 1 - H(usage)/log G + mean token entropy/log G, G = 4
    uniform = torch.full((1, 4, 6), 0.25)  # balanced usage but no token decides: 1 - 1 + 1 = 1
    collapsed = torch.zeros(1, 4, 6)
    collapsed[:, 0] = 1.0  # one group takes every token, confidently: 1 - 0 + 0 = 1
    half = torch.zeros(1, 4, 6)
    half[:, 0, :3] = 1.0
    half[:, 1, 3:] = 1.0  # two groups, confident: 1 - log 2 / log 4 + 0 = 0.5
    spread = torch.zeros(1, 4, 8)
    spread[0, torch.arange(8) % 4, torch.arange(8)] = 1.0  # four groups, confident: 0
    assert group_diversity_loss([uniform]).item() == pytest.approx(1.0, abs=1e-6)
    assert group_diversity_loss([collapsed]).item() == pytest.approx(1.0, abs=1e-6)
    assert group_diversity_loss([half]).item() == pytest.approx(0.5, abs=1e-6)
    assert group_diversity_loss([spread]).item() == pytest.approx(0.0, abs=1e-6)
    assert group_diversity_loss([half, spread]).item() == pytest.approx(0.25, abs=1e-6)


def test_dense_noun_mil_loss_matches_hand_computation():
    from groupvit.training.losses import dense_noun_mil_loss

    # two patches on the two axes, classes [noun, no-object] on the same axes, scale 2
    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    high = math.exp(2) / (math.exp(2) + 1)  # a patch's probability of its own class
    # named noun: both classes present; each class's top-1 patch scores `high`
    loss, probs = dense_noun_mil_loss(patches, classes, torch.tensor([[1.0, 1.0]]), 2.0, top_k=1)
    assert probs[0, 0].tolist() == pytest.approx([high, 1 - high], rel=1e-6)
    assert loss.item() == pytest.approx(-math.log(high), rel=1e-6)
    # noun not named: its top patch is a false positive
    loss, _ = dense_noun_mil_loss(patches, classes, torch.tensor([[0.0, 1.0]]), 2.0, top_k=1)
    assert loss.item() == pytest.approx(0.5 * (-math.log(1 - high) - math.log(high)), rel=1e-6)
    # top-2 pools both patches: (high + (1 - high)) / 2 = 0.5
    loss, _ = dense_noun_mil_loss(patches, classes, torch.tensor([[1.0, 1.0]]), 2.0, top_k=2)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)


def test_group_distillation_loss_matches_hand_computation():
    from groupvit.training.losses import group_distillation_loss

    # one group holding both patches; posteriors over [noun a, noun b, no-object]
    probs = torch.tensor([[[0.6, 0.1, 0.3], [0.2, 0.2, 0.6]]])
    assignment = torch.ones(1, 1, 2)
    # teacher: mean [0.4, 0.15, 0.45]; the no-object 0.45 spread over the two nouns -> [0.625, 0.375]
    teacher = [0.625, 0.375]
    nouns = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    group = torch.tensor([[[1.0, 0.0]]])
    log_student = [1 - math.log(1 + math.e), -math.log(1 + math.e)]  # log_softmax([1, 0])
    expected = sum(t * (math.log(t) - s) for t, s in zip(teacher, log_student, strict=True))
    loss = group_distillation_loss(group, nouns, assignment, probs, 1.0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # an empty group (no patch mass) does not count; the other group's loss is unchanged
    two = torch.cat([assignment, torch.zeros(1, 1, 2)], dim=1)
    groups = torch.cat([group, torch.tensor([[[0.0, 1.0]]])], dim=1)
    assert group_distillation_loss(groups, nouns, two, probs, 1.0).item() == pytest.approx(expected, rel=1e-5)


def test_batch_noun_classes_averages_prompts_of_the_same_noun():
    from groupvit.training.losses import batch_noun_classes

    embeds = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[0.0, 3.0], [1.0, 1.0]]])
    ids = torch.tensor([[7, 5], [-1, 5]])  # -1: a padding caption copy, not a noun
    unique, classes = batch_noun_classes(embeds, ids)
    assert unique.tolist() == [5, 7]
    # noun 5: mean of [0, 1] and [1, 1] / sqrt(2), normalised; noun 7: [1, 0]
    five = torch.tensor([0.5**0.5, 1 + 0.5**0.5])
    torch.testing.assert_close(classes, torch.stack([five / five.norm(), torch.tensor([1.0, 0.0])]))


def test_group_purity_loss_matches_hand_computation():
    from groupvit.training.losses import group_purity_loss

    # two classes; patch 0 and 1 are class 0, patch 2 is class 1 (one-hot posteriors)
    probs = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    pure = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    assert group_purity_loss(pure, probs).item() == pytest.approx(0.0, abs=1e-6)
    # one group takes everything: mixture [2/3, 1/3], entropy / log 2
    mixed = torch.tensor([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]])
    entropy = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(2)
    assert group_purity_loss(mixed, probs).item() == pytest.approx(entropy, rel=1e-6)
    # the gradient reaches the assignment, never the (fixed) posteriors
    assignment = mixed.clone().requires_grad_(True)
    probs = probs.clone().requires_grad_(True)
    group_purity_loss(assignment, probs).backward()
    assert assignment.grad is not None and assignment.grad.abs().sum() > 0
    assert probs.grad is None


def _noun_batch(second_caption_nouns: list[int]) -> tuple[groupvit.GroupViTModel, dict[str, torch.Tensor]]:
    """A tiny model and a two-image batch with one noun prompt each (nouns 3 and 4)."""
    config = tiny_config()
    model = groupvit.GroupViTModel(config)
    batch = {
        "pixel_values": torch.randn(2, 3, config.vision_config.image_size, config.vision_config.image_size),
        "input_ids": torch.tensor([[49406, 320, 49407], [49406, 321, 49407]]),
        "prompt_input_ids": torch.tensor([[[49406, 320, 49407]], [[49406, 321, 49407]]]),
        "prompt_noun_ids": torch.tensor([[3], [4]]),
        "caption_noun_ids": torch.tensor([[3, -1], second_caption_nouns]),
    }
    return model, batch


def test_dense_noun_terms_need_their_teacher_and_the_patch_tokens():
    with pytest.raises(ValueError, match="group_distill_weight=1.0 needs loss.dense_noun_weight > 0"):
        GroupViTPretrainingLoss.from_arguments(LossArguments(group_distill_weight=1.0), 2, 0, 16, 8)
    loss = GroupViTPretrainingLoss.from_arguments(
        LossArguments(dense_noun_weight=1.0, group_distill_weight=1.0, group_purity_weight=1.0), 2, 0, 16, 8
    )
    assert list(loss.terms) == ["itc", "multi_label", "dense_noun", "group_distill", "group_purity"]
    model, batch = _noun_batch([4, 5])
    config = model.config
    loss = GroupViTPretrainingLoss.from_arguments(
        LossArguments(dense_noun_weight=1.0, group_distill_weight=1.0),
        1,
        0,
        config.vision_config.hidden_size,
        config.projection_dim,
    )
    outputs = model(**loss.model_inputs(batch))
    with pytest.raises(ValueError, match="call GroupViTPretrainingLoss.bind"):
        loss(model, outputs, batch)
    loss.bind(model)
    outputs = model(**loss.model_inputs(batch))
    result = loss(model, outputs, batch)
    assert set(result.terms) == {"itc", "multi_label", "dense_noun", "group_distill"}
    assert all(torch.isfinite(value) for value in result.terms.values())
    # the teacher reads detached tokens: its loss trains its own head only, the distillation trains the model
    result.terms["dense_noun"].backward(retain_graph=True)
    head = loss.terms["dense_noun"].patch_head[-1].weight
    assert head.grad is not None and head.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    result.terms["group_distill"].backward()
    assert model.visual_projection[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("backprop", "image", "text"), [("head", False, False), ("image", True, False),
                                                         ("image_text", True, True)])  # fmt: skip
def test_dense_noun_backprop_trains_the_towers_it_names(backprop, image, text):
    model, batch = _noun_batch([4, -1])
    config = model.config
    arguments = LossArguments(
        itc_weight=0.0, multi_label_weight=0.0, dense_noun_weight=2.0, dense_noun_backprop=backprop
    )
    hidden, projection = config.vision_config.hidden_size, config.projection_dim
    loss = GroupViTPretrainingLoss.from_arguments(arguments, 1, 0, hidden, projection)
    assert loss.weights == {"dense_noun": 2.0}  # itc_weight=0: the image-text term is not computed at all
    loss.bind(model)
    result = loss(model, model(**loss.model_inputs(batch)), batch)
    assert result.loss.item() == pytest.approx(2.0 * result.terms["dense_noun"].item())
    result.loss.backward()
    patch_embedding = model.vision_model.embeddings.patch_embeddings.projection.weight
    assert (patch_embedding.grad is not None) == image
    assert (model.text_model.embeddings.token_embedding.weight.grad is not None) == text
    # what no term reads gets no gradient: the later vision stages and the image-text temperature
    assert model.logit_scale.grad is None
    assert all(p.grad is None for p in model.vision_model.encoder.stages[-1].parameters())
