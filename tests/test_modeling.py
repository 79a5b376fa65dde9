"""GroupViTModel: parity with transformers' built-in GroupViT, both-way loading, SDPA == eager, checkpointing."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file, save_file

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
    assert not info["unexpected_keys"]
    # exactly the built-in's weights, and every config field the built-in has (plus architecture extras it keeps)
    assert set(load_file(Path(tiny_checkpoint, "model.safetensors"))) == set(builtin.state_dict())
    saved = json.loads(Path(tiny_checkpoint, "config.json").read_text())
    assert not set(saved) & set(groupvit.configuration_groupvit.LEGACY_LOSS_FIELDS)
    assert builtin.config.vision_config.gumbel is saved["vision_config"]["gumbel"]
    ours = groupvit.GroupViTModel.from_pretrained(tiny_checkpoint)
    a, b = _compare(ours.eval(), builtin.eval(), text_inputs, pixel_values)
    for key in ("logits_per_image", "text_embeds", "image_embeds"):
        torch.testing.assert_close(b[key], a[key], atol=ATOL, rtol=0)


def test_parameter_names_and_shapes_equal_builtin():
    config = tiny_config()
    ours = groupvit.GroupViTModel(config).state_dict()
    builtin = transformers.GroupViTModel(builtin_config(config)).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in builtin.items()}


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


def test_return_loss_is_clip_contrastive_loss(text_inputs, pixel_values):
    model = randomize_(groupvit.GroupViTModel(tiny_config()), std=0.1).eval()
    with torch.no_grad():
        out = model(**text_inputs, pixel_values=pixel_values[:2], return_loss=True)
    # CLIP's loss of the same logits (no clamp reached at exp(2.6592)): mean of both directions' cross-entropy
    labels = torch.arange(2)
    expected = (F.cross_entropy(out.logits_per_text, labels) + F.cross_entropy(out.logits_per_image, labels)) / 2
    torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="2 texts and 3 images"):
        model(**text_inputs, pixel_values=pixel_values, return_loss=True)


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


def test_old_checkpoint_with_loss_fields_and_temperature_loads(tiny_checkpoint, tmp_path, text_inputs, pixel_values):
    old = tmp_path / "old"
    old.mkdir()
    config = json.loads(Path(tiny_checkpoint, "config.json").read_text())
    legacy = {"multi_label_loss_weight": 1.0, "multi_label_target": "semantic", "multi_label_group_pooling": "max"}
    legacy |= {"group_diversity_loss_weight": 1.0, "group_diversity_marginal": "image", "group_diversity_usage": "kl"}
    (old / "config.json").write_text(json.dumps({**config, **legacy}))
    weights = load_file(Path(tiny_checkpoint, "model.safetensors"))
    save_file({**weights, "multi_label_logit_scale": torch.tensor(3.0)}, old / "model.safetensors")
    model, info = groupvit.GroupViTModel.from_pretrained(old, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not any(hasattr(model.config, key) for key in legacy)
    assert "multi_label_logit_scale" not in model.state_dict()
    reference = groupvit.GroupViTModel.from_pretrained(tiny_checkpoint).eval()
    a, b = _compare(model.eval(), reference, text_inputs, pixel_values)
    torch.testing.assert_close(a.logits_per_image, b.logits_per_image, atol=0, rtol=0)


def _tiny_towers():
    config = tiny_config()
    return config, groupvit.GroupViTModel(config).eval()


def test_config_output_flags_are_honoured(text_inputs, pixel_values):
    config = tiny_config(output_attentions=True, output_hidden_states=True)
    model = groupvit.GroupViTModel(config).eval()
    with torch.no_grad():
        out = model(**text_inputs, pixel_values=pixel_values)
        plain = model(**text_inputs, pixel_values=pixel_values, output_attentions=False, output_hidden_states=False)
    assert len(out.vision_model_output.attentions) == 2 and len(out.vision_model_output.hidden_states) == 4
    # text attention weights need eager attention (SDPA computes none): see the next test
    assert len(out.text_model_output.hidden_states) == 3 and out.text_model_output.attentions is not None
    assert plain.vision_model_output.attentions is None and plain.text_model_output.hidden_states is None
    # the towers alone read their own configs
    text_config = tiny_config().text_config
    text_config.output_hidden_states = True
    text = groupvit.GroupViTTextModel(text_config).eval()
    assert len(text(text_inputs["input_ids"]).hidden_states) == 3
    vision_config = tiny_config().vision_config
    vision_config.output_attentions = True
    vision = groupvit.GroupViTVisionModel(vision_config).eval()
    assert [g.shape for g in vision(pixel_values).attentions] == [(3, 8, 64), (3, 4, 8)]
    assert vision(pixel_values, output_attentions=False).attentions is None
    # return_dict from the config
    config.return_dict = False
    assert isinstance(groupvit.GroupViTModel(config).eval()(**text_inputs, pixel_values=pixel_values), tuple)


def test_text_attentions_are_recorded_with_eager_attention(text_inputs):
    config = tiny_config()
    eager = groupvit.GroupViTTextModel(config.text_config)
    eager.set_attn_implementation("eager")
    out = eager.eval()(text_inputs["input_ids"], output_attentions=True)
    length = text_inputs["input_ids"].shape[1]
    assert [a.shape for a in out.attentions] == [(2, 2, length, length)] * 2
    # causal: nothing above the diagonal
    assert torch.all(out.attentions[0].triu(1) == 0)


def test_get_features_accept_the_builtin_keywords(text_inputs, pixel_values):
    _, model = _tiny_towers()
    with torch.no_grad():
        text = model.get_text_features(**text_inputs, output_attentions=True, output_hidden_states=True)
        image = model.get_image_features(pixel_values, output_attentions=True, output_hidden_states=True)
        as_tuple = model.get_image_features(pixel_values, return_dict=False)
    assert text.pooler_output.shape == (2, 16) and len(text.hidden_states) == 3
    assert image.pooler_output.shape == (3, 16) and len(image.attentions) == 2 and len(image.hidden_states) == 4
    torch.testing.assert_close(as_tuple[1], image.pooler_output)
    # prompts are the training loss' business: the model names them instead of ignoring them
    with pytest.raises(TypeError, match="prompt_input_ids"):
        model(**text_inputs, pixel_values=pixel_values, prompt_input_ids=torch.ones(3, 1, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="colour"):
        model.get_image_features(pixel_values, colour=True)


def test_config_validation_names_the_field():
    from huggingface_hub.errors import StrictDataclassError

    cases = [
        (groupvit.GroupViTVisionConfig, {"gumbel_tau": float("nan")}, "gumbel_tau"),
        (groupvit.GroupViTVisionConfig, {"gumbel_tau": float("inf")}, "gumbel_tau"),
        (groupvit.GroupViTConfig, {"logit_scale_max": float("inf")}, "logit_scale_max"),
        (groupvit.GroupViTConfig, {"logit_scale_max": float("nan")}, "logit_scale_max"),
        (groupvit.GroupViTTextConfig, {"layer_norm_eps": -1e-5}, "layer_norm_eps"),
        (groupvit.GroupViTTextConfig, {"dropout": 1.5}, "dropout"),
        (groupvit.GroupViTVisionConfig, {"attention_dropout": -0.1}, "attention_dropout"),
        (groupvit.GroupViTTextConfig, {"hidden_act": "swishy"}, "hidden_act"),
        (groupvit.GroupViTVisionConfig, {"hidden_size": 32}, "num_attention_heads"),
    ]
    for cls, values, field in cases:
        with pytest.raises(StrictDataclassError, match=field) as info:
            cls(**values)
        assert isinstance(info.value.__cause__, ValueError | TypeError)


def test_bad_model_inputs_raise_value_errors(text_inputs, pixel_values):
    config, model = _tiny_towers()
    with pytest.raises(ValueError, match="vocab_size=49408"):
        model(input_ids=torch.tensor([[49406, 49408, 49407]]), pixel_values=pixel_values[:1])
    with pytest.raises(ValueError, match="input_ids is an empty batch"):
        model(input_ids=torch.zeros(0, 4, dtype=torch.long), pixel_values=pixel_values[:1])
    with pytest.raises(ValueError, match="pixel_values is an empty batch"):
        model(**text_inputs, pixel_values=pixel_values[:0])
    no_groups = tiny_config(vision_config={"depths": [2], "num_group_tokens": [0], "num_output_groups": [0]})
    with pytest.raises(ValueError, match="output_segmentation=True needs a grouping stage"):
        groupvit.GroupViTModel(no_groups).eval()(**text_inputs, pixel_values=pixel_values, output_segmentation=True)
