"""GroupViTModel: parity with transformers' built-in GroupViT, both-way loading, SDPA == eager, checkpointing."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

import groupvit
from conftest import builtin_config, randomize_, tiny_config
from groupvit.modeling_groupvit import assignment_probs, chain_groupings

ATOL = 1e-5


def _compare(ours, builtin, text_inputs, pixel_values):
    with torch.no_grad():
        a = builtin(**text_inputs, pixel_values=pixel_values, output_segmentation=True)
        b = ours(**text_inputs, pixel_values=pixel_values, output_segmentation=True)
    return a, b


def test_builtin_checkpoint_loads_into_ours_with_same_outputs(builtin_checkpoint, text_inputs, pixel_values):
    ours, info = groupvit.GroupViTModel.from_pretrained(builtin_checkpoint, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    builtin = transformers.GroupViTModel.from_pretrained(builtin_checkpoint).eval()
    a, b = _compare(ours.eval(), builtin, text_inputs, pixel_values)
    for key in ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
        torch.testing.assert_close(b[key], a[key], atol=ATOL, rtol=0)
    # segmentation: the built-in multiplies by exp(logit_scale) twice, we do it once
    scale = ours.logit_scale.exp()
    torch.testing.assert_close(b.segmentation_logits * scale, a.segmentation_logits, atol=1e-4, rtol=1e-5)
    assert not torch.allclose(b.segmentation_logits, a.segmentation_logits, atol=1e-2)
    for ga, gb in zip(a.vision_model_output.attentions, b.vision_model_output.attentions, strict=True):
        torch.testing.assert_close(gb, ga, atol=ATOL, rtol=0)


def test_our_checkpoint_loads_into_builtin(tiny_checkpoint, text_inputs, pixel_values, tmp_path):
    files = sorted(os.listdir(tiny_checkpoint))
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    builtin, info = transformers.GroupViTModel.from_pretrained(tiny_checkpoint, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    # the only extra key is the multi-label temperature, a training-only parameter the built-in does not have
    assert info["unexpected_keys"] <= {"multi_label_logit_scale"}
    ours = groupvit.GroupViTModel.from_pretrained(tiny_checkpoint)
    a, b = _compare(ours.eval(), builtin.eval(), text_inputs, pixel_values)
    for key in ("logits_per_image", "text_embeds", "image_embeds"):
        torch.testing.assert_close(b[key], a[key], atol=ATOL, rtol=0)


def test_parameter_names_and_shapes_equal_builtin():
    config = tiny_config()
    ours = groupvit.GroupViTModel(config).state_dict()
    builtin = transformers.GroupViTModel(builtin_config(config)).state_dict()
    ours.pop("multi_label_logit_scale")
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in builtin.items()}
    no_multi_label = groupvit.GroupViTModel(tiny_config(multi_label_loss_weight=0.0)).state_dict()
    assert "multi_label_logit_scale" not in no_multi_label


def test_groupvit_s_size_matches_paper():
    with torch.device("meta"):
        model = groupvit.GroupViTModel(groupvit.GroupViTConfig())
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    # facts: vision 28.84 M, text 22.15 M, heads 2.63 M + 2.11 M, about 55.73 M in all
    assert abs(count(model.vision_model) / 1e6 - 28.84) < 0.01
    assert abs(count(model.text_model) / 1e6 - 22.15) < 0.01
    assert abs(count(model) / 1e6 - 55.73) < 0.01


def test_sdpa_and_eager_agree(tiny_checkpoint, text_inputs, pixel_values):
    sdpa = groupvit.GroupViTModel.from_pretrained(tiny_checkpoint, attn_implementation="sdpa").eval()
    eager = groupvit.GroupViTModel.from_pretrained(tiny_checkpoint, attn_implementation="eager").eval()
    assert sdpa.config.text_config._attn_implementation == "sdpa"
    assert eager.config.vision_config._attn_implementation == "eager"
    a, b = _compare(sdpa, eager, text_inputs, pixel_values)
    for key in ("logits_per_image", "text_embeds", "image_embeds", "segmentation_logits"):
        torch.testing.assert_close(a[key], b[key], atol=ATOL, rtol=1e-5)


def test_default_attention_is_sdpa_in_both_towers():
    model = groupvit.GroupViTModel(tiny_config())
    assert model.config._attn_implementation == "sdpa"
    assert model.config.text_config._attn_implementation == "sdpa"
    assert model.config.vision_config._attn_implementation == "sdpa"


def _train_step_grads(model, text_inputs, pixel_values, seed=0):
    torch.manual_seed(seed)
    model.zero_grad()
    model(**text_inputs, pixel_values=pixel_values[:2], return_loss=True).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_same_gradients(text_inputs, pixel_values):
    # drop path and Gumbel noise on: the recomputation must replay the same random draws
    model = randomize_(groupvit.GroupViTModel(tiny_config(vision_config={"drop_path_rate": 0.2})), std=0.1).train()
    reference = _train_step_grads(model, text_inputs, pixel_values)
    model.gradient_checkpointing_enable()
    assert model.vision_model.encoder.stages[0].layers[0].gradient_checkpointing
    assert model.vision_model.encoder.stages[0].downsample.gradient_checkpointing
    checkpointed = _train_step_grads(model, text_inputs, pixel_values)
    assert reference.keys() == checkpointed.keys() and len(reference) > 100
    for name in reference:
        torch.testing.assert_close(checkpointed[name], reference[name], atol=1e-6, rtol=1e-5, msg=name)


def test_training_uses_gumbel_noise_and_eval_is_deterministic(pixel_values):
    model = randomize_(groupvit.GroupViTModel(tiny_config()), std=0.1)
    vision = model.vision_model
    model.eval()
    with torch.no_grad():
        first = vision(pixel_values).pooler_output
        second = vision(pixel_values).pooler_output
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    model.train()
    with torch.no_grad():
        noisy = [vision(pixel_values).pooler_output for _ in range(2)]
    assert not torch.allclose(noisy[0], noisy[1])


def test_hard_assignment_is_one_hot_with_soft_gradients():
    logits = torch.randn(2, 4, 6, requires_grad=True)
    assign = assignment_probs(logits, dim=-2, gumbel=False, hard=True)
    assert torch.equal(assign.detach().sum(dim=-2), torch.ones(2, 6))
    assert set(assign.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(assign.detach().argmax(-2), logits.detach().argmax(-2))
    (assign * torch.randn_like(assign)).sum().backward()
    assert logits.grad.abs().sum() > 0  # straight-through: the soft probabilities carry the gradient
    # bf16 logits: computed in float32, noise included
    noisy = assignment_probs(logits.detach().bfloat16(), dim=-2, gumbel=True, hard=True)
    assert noisy.dtype == torch.float32 and torch.isfinite(noisy).all()


def test_output_shapes_and_grouping_chain(text_inputs, pixel_values):
    model = groupvit.GroupViTModel(tiny_config()).eval()
    with torch.no_grad():
        out = model(**text_inputs, pixel_values=pixel_values, output_segmentation=True, output_hidden_states=True)
    assert out.logits_per_image.shape == (3, 2) and out.logits_per_text.shape == (2, 3)
    assert out.image_embeds.shape == (3, 16) and out.text_embeds.shape == (2, 16)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(3))
    assert out.segmentation_logits.shape == (3, 2, 32, 32)
    groupings = out.vision_model_output.attentions
    assert [g.shape for g in groupings] == [(3, 8, 64), (3, 4, 8)]
    torch.testing.assert_close(groupings[0].sum(1), torch.ones(3, 64))  # softmax over groups
    chained = chain_groupings(groupings)
    assert chained.shape == (3, 4, 64)
    torch.testing.assert_close(chained.sum(1), torch.ones(3, 64))
    assert len(out.vision_model_output.hidden_states) == 4
    as_tuple = model(**text_inputs, pixel_values=pixel_values, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.logits_per_image)


def test_other_input_sizes_interpolate_position_embedding(text_inputs):
    model = groupvit.GroupViTModel(tiny_config()).eval()
    with torch.no_grad():
        out = model(**text_inputs, pixel_values=torch.randn(1, 3, 48, 40), output_segmentation=True)
    assert out.segmentation_logits.shape == (1, 2, 48, 40)
    assert out.vision_model_output.attentions[0].shape == (1, 8, 12 * 10)
    with pytest.raises(ValueError, match="doesn't match"):
        model(**text_inputs, pixel_values=torch.randn(1, 3, 48, 40), interpolate_pos_encoding=False)


def test_bad_inputs_raise_clear_errors(text_inputs):
    model = groupvit.GroupViTModel(tiny_config()).eval()
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        model(**text_inputs, pixel_values=torch.randn(1, 32, 32))
    with pytest.raises(ValueError, match="needs both"):
        model(**text_inputs)
    with pytest.raises(TypeError, match="integer tensor"):
        model(input_ids=text_inputs["input_ids"].float(), pixel_values=torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="at most 77"):
        model(input_ids=torch.ones(1, 80, dtype=torch.long), pixel_values=torch.randn(1, 3, 32, 32))


def test_loss_uses_paper_losses(text_inputs, pixel_values):
    from groupvit.training.losses import groupvit_loss

    model = randomize_(groupvit.GroupViTModel(tiny_config()), std=0.1).eval()
    prompts = torch.tensor([[[49406, 320, 2368, 49407], [49406, 320, 1929, 49407]]] * 2)
    out = model(**text_inputs, pixel_values=pixel_values[:2], return_loss=True, prompt_input_ids=prompts)
    with torch.no_grad():
        image = model.get_image_features(pixel_values[:2]).pooler_output
        # captions and prompts go through the text head's BatchNorm together (eval mode: running stats)
        caption = model.get_text_features(**text_inputs).pooler_output
        prompt = model.get_text_features(prompts.reshape(4, 4)).pooler_output.reshape(2, 2, -1)
    expected = groupvit_loss(image, caption, model.logit_scale, prompt, model.multi_label_logit_scale)
    torch.testing.assert_close(out.loss, expected.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.itc_loss, expected.itc_loss, atol=1e-5, rtol=1e-5)
    assert out.multi_label_loss is not None and out.loss > out.itc_loss
    itc_only = model(**text_inputs, pixel_values=pixel_values[:2], return_loss=True)
    torch.testing.assert_close(itc_only.loss, expected.itc_loss, atol=1e-5, rtol=1e-5)


def test_auto_classes_resolve_to_ours(tiny_checkpoint):
    assert isinstance(transformers.AutoConfig.from_pretrained(tiny_checkpoint), groupvit.GroupViTConfig)
    assert isinstance(transformers.AutoModel.from_pretrained(tiny_checkpoint), groupvit.GroupViTModel)
    assert isinstance(transformers.AutoProcessor.from_pretrained(tiny_checkpoint), groupvit.GroupViTProcessor)


def test_saved_directory_is_safetensors_with_builtin_compatible_config(tiny_checkpoint):
    config = json.loads(Path(tiny_checkpoint, "config.json").read_text())
    assert config["model_type"] == "groupvit" and config["architectures"] == ["GroupViTModel"]
    weights = load_file(Path(tiny_checkpoint, "model.safetensors"))
    assert "vision_model.encoder.stages.1.group_projector.1.fc1.weight" in weights
    assert "text_model.embeddings.position_ids" not in weights  # non-persistent buffer, as in the built-in


def _lay_out_hub_cache(hf_home: Path, repo_id: str, source: str) -> None:
    """A Hub cache snapshot as huggingface_hub writes it: blobs are files, refs/main names the commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in os.listdir(source):
        (snapshot / name).write_bytes(Path(source, name).read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


@pytest.mark.slow
def test_from_pretrained_hub_id_offline(tiny_checkpoint, tmp_path):
    _lay_out_hub_cache(tmp_path, "someone/groupvit-tiny", tiny_checkpoint)
    script = textwrap.dedent(
        """
        import torch, transformers, groupvit
        model = groupvit.GroupViTModel.from_pretrained("someone/groupvit-tiny").eval()
        auto = transformers.AutoModel.from_pretrained("someone/groupvit-tiny").eval()
        processor = transformers.AutoProcessor.from_pretrained("someone/groupvit-tiny")
        assert type(auto) is groupvit.GroupViTModel and type(processor) is groupvit.GroupViTProcessor
        inputs = processor(text=["a photo of a cat"], images=[torch.zeros(3, 40, 40, dtype=torch.uint8)],
                           return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model(**inputs)
        print("OK", tuple(out.logits_per_image.shape))
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK (1, 1)" in result.stdout


def test_semantic_targets_and_group_pooling_reach_the_loss(text_inputs, pixel_values):
    from groupvit.training.losses import groupvit_loss

    config = tiny_config(multi_label_target="semantic", multi_label_group_pooling="max")
    model = randomize_(groupvit.GroupViTModel(config), std=0.1).eval()
    prompts = torch.tensor([[[49406, 320, 2368, 49407], [49406, 320, 1929, 49407]]] * 2)
    noun_ids = torch.tensor([[7, 8], [7, -1]])
    out = model(
        **text_inputs,
        pixel_values=pixel_values[:2],
        return_loss=True,
        prompt_input_ids=prompts,
        prompt_noun_ids=noun_ids,
    )
    with torch.no_grad():
        vision = model.vision_model(pixel_values[:2])
        image = model.visual_projection(vision.pooler_output)
        groups = model.get_group_embeddings(vision.last_hidden_state)
        caption = model.get_text_features(**text_inputs).pooler_output
        prompt = model.get_text_features(prompts.reshape(4, 4)).pooler_output.reshape(2, 2, -1)
    expected = groupvit_loss(
        image,
        caption,
        model.logit_scale,
        prompt,
        model.multi_label_logit_scale,
        multi_label_image_embeds=groups,
        multi_label_target="semantic",
        noun_ids=noun_ids,
    )
    torch.testing.assert_close(out.multi_label_loss, expected.multi_label_loss, atol=1e-5, rtol=1e-5)
    paper = groupvit_loss(image, caption, model.logit_scale, prompt, model.multi_label_logit_scale)
    assert not torch.isclose(out.multi_label_loss, paper.multi_label_loss)
    with pytest.raises(ValueError, match="multi_label_group_pooling"):
        tiny_config(multi_label_group_pooling="sum")
