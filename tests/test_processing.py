"""Tests for `groupvit.processing_groupvit` and the bundled CLIP vocabulary (fast, offline)."""

from __future__ import annotations

import doctest
import glob
import gzip
import hashlib
import importlib.util
import json
import os
from importlib import resources
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import CLIPImageProcessorPil, CLIPTokenizer
from transformers.utils import is_torchvision_available

import groupvit.processing_groupvit as processing_module
from groupvit.processing_groupvit import GroupViTProcessor, bundled_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
# Independent copies of the OpenAI CLIP constants (not imported from transformers).
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
BOS, EOS = 49406, 49407
# sha256 of the files written by `scripts/build_clip_vocab.py` from open_clip_torch 3.3.0's BPE file.
SHIPPED_SHA256 = {
    "vocab.json": "4fc02c6dc501b9d3b282558256f835bcd564ca1cb4a03b5642e1c1a425d26bf7",
    "merges.txt": "9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a",
}


@pytest.fixture(scope="module")
def processor() -> GroupViTProcessor:
    return GroupViTProcessor.from_bundled()


def _load_build_script():
    spec = importlib.util.spec_from_file_location("build_clip_vocab", REPO_ROOT / "scripts" / "build_clip_vocab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _random_image(height: int, width: int, seed: int = 0, mode: str = "RGB") -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def _clip_reference_pixels(image: PIL.Image.Image, size: int = 224) -> np.ndarray:
    """OpenAI CLIP's `_transform`: Resize(size, BICUBIC) on PIL, CenterCrop(size), ToTensor, Normalize.

    The crop offset is floored, as in transformers' `CLIPImageProcessor` (which the Hub GroupViT checkpoints use).
    torchvision's `CenterCrop` instead uses `round()` (half to even), so for an odd margin `2k + 1` with odd `k`
    (e.g. a 240x321 image: resized to 224x299, margin 75) it crops one pixel further right/down.
    """
    width, height = image.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    resized = image.convert("RGB").resize((new_w, new_h), PIL.Image.BICUBIC)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    cropped = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float64) / 255.0
    return ((cropped - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)


# --------------------------------------------------------------------------------------------- bundled vocabulary


def test_bundled_files_are_package_data():
    root = resources.files("groupvit").joinpath("resources", "clip_tokenizer")
    for name in ("vocab.json", "merges.txt", "LICENSE"):
        assert root.joinpath(name).is_file(), name
    assert "OpenAI" in root.joinpath("LICENSE").read_text(encoding="utf-8")
    for name, digest in SHIPPED_SHA256.items():
        assert hashlib.sha256(root.joinpath(name).read_bytes()).hexdigest() == digest, name

    vocab = json.loads(root.joinpath("vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408
    assert sorted(vocab.values()) == list(range(49408))
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab["<|startoftext|>"] == BOS and vocab["<|endoftext|>"] == EOS
    lines = root.joinpath("merges.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#version: 0.2"
    assert len(lines) == 1 + 48894
    assert lines[1] == "i n" and vocab["in"] == 512


def test_build_script_on_synthetic_bpe_file(tmp_path):
    build = _load_build_script()
    merges = [f"a {i}" for i in range(48894)] + ["zz top"]  # entries past 48,894 are ignored, as in CLIP
    source = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    source.write_bytes(gzip.compress(("fake header\n" + "\n".join(merges) + "\n").encode("utf-8")))
    assert build.main([str(source), str(tmp_path / "out")]) == 0

    vocab = json.loads((tmp_path / "out" / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408
    assert vocab["a0"] == 512 and vocab["a48893"] == 49405 and "ztop" not in vocab
    assert vocab["<|startoftext|>"] == BOS and vocab["<|endoftext|>"] == EOS
    lines = (tmp_path / "out" / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#version: 0.2" and lines[1:] == merges[:48894]

    short = tmp_path / "short.txt.gz"
    short.write_bytes(gzip.compress(b"header\ni n\n"))
    with pytest.raises(ValueError, match="48894"):
        build.main([str(short), str(tmp_path / "out2")])


def _open_clip_wheel() -> str | None:
    candidates = [os.environ.get("OPEN_CLIP_WHEEL", "")] + sorted(glob.glob("/tmp/oc/open_clip_torch-*.whl"))
    return next((c for c in candidates if c and os.path.isfile(c)), None)


@pytest.mark.skipif(_open_clip_wheel() is None, reason="open_clip_torch wheel not available (set OPEN_CLIP_WHEEL)")
def test_build_script_reproduces_shipped_files(tmp_path):
    build = _load_build_script()
    assert build.main([_open_clip_wheel(), str(tmp_path)]) == 0
    for name, digest in SHIPPED_SHA256.items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest, name


# --------------------------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("a photo of a cat", [BOS, 320, 1125, 539, 320, 2368, EOS]),
        ("a photo of a dog", [BOS, 320, 1125, 539, 320, 1929, EOS]),
        ("A Photo Of A Cat", [BOS, 320, 1125, 539, 320, 2368, EOS]),  # CLIP lower-cases
        ("Hello world", [BOS, 3306, 1002, EOS]),
        ("", [BOS, EOS]),
    ],
)
def test_known_clip_token_ids(processor, caption, expected):
    assert processor(text=caption)["input_ids"] == expected
    assert bundled_tokenizer()(caption)["input_ids"] == expected


def test_tokenizer_properties(processor):
    tok = processor.tokenizer
    assert isinstance(tok, CLIPTokenizer)
    assert len(tok) == 49408 and tok.vocab_size == 49408
    assert tok.model_max_length == 77
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|startoftext|>", "<|endoftext|>", "<|endoftext|>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (BOS, EOS, EOS)
    assert tok.decode(processor(text="a photo of a cat")["input_ids"], skip_special_tokens=True) == "a photo of a cat"


def _reference_clip_bpe_encode(text: str, vocab: dict[str, int], merges: list[str]) -> list[int]:
    """OpenAI CLIP's `SimpleTokenizer.encode` (minus ftfy/html clean-up), written out independently."""
    regex = pytest.importorskip("regex")
    bs = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:] + [256 + n for n in range(256 - len(bs))]
    bs += [b for b in range(256) if b not in bs]
    byte_encoder = dict(zip(bs, map(chr, cs), strict=True))
    ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
    pattern = regex.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE,
    )

    def bpe(token: str) -> list[str]:
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    ids = [BOS]
    for token in pattern.findall(" ".join(text.split()).lower()):
        ids += [vocab[piece] for piece in bpe("".join(byte_encoder[b] for b in token.encode("utf-8")))]
    return ids + [EOS]


def test_tokenizer_matches_reference_clip_bpe(processor):
    root = resources.files("groupvit").joinpath("resources", "clip_tokenizer")
    vocab = json.loads(root.joinpath("vocab.json").read_text(encoding="utf-8"))
    merges = root.joinpath("merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    captions = [
        "A diagram of a transformer.",
        "Hello, World!! It's 2024, naïve café — déjà vu 🐱🐶",
        "don't stop-believing #tbt @someone https://example.com/x?y=1",
        "   multiple   spaces\tand\nnewlines  ",
        "日本語のテキスト and Ελληνικά, 123456 x1y2",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
    ]
    for caption in captions:
        assert processor(text=caption)["input_ids"] == _reference_clip_bpe_encode(caption, vocab, merges), caption


def test_padding_and_truncation_to_77(processor):
    long_caption = "a photo of a very fluffy cat sitting on a mat " * 20
    out = processor(text=[long_caption, "a photo of a cat"], padding=True, return_tensors="pt")
    assert out["input_ids"].shape == (2, 77) and out["attention_mask"].shape == (2, 77)
    assert out["input_ids"][0, 0] == BOS and out["input_ids"][0, -1] == EOS
    assert bool(out["attention_mask"][0].all())
    assert out["input_ids"][1, :7].tolist() == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert (out["input_ids"][1, 7:] == EOS).all() and out["attention_mask"][1].tolist() == [1] * 7 + [0] * 70

    out = processor(text="a photo of a cat", padding="max_length", return_tensors="pt")
    assert out["input_ids"].shape == (1, 77)
    assert len(processor(text=long_caption, truncation=False)["input_ids"]) > 77


# --------------------------------------------------------------------------------------------- images


def test_pixel_values_shape_and_dtype(processor):
    images = [_random_image(240, 320), _random_image(500, 233, seed=1)]
    out = processor(images=images, return_tensors="pt")
    assert set(out.keys()) == {"pixel_values"}
    assert out["pixel_values"].shape == (2, 3, 224, 224) and out["pixel_values"].dtype == torch.float32
    batch = torch.from_numpy(np.stack([np.asarray(im) for im in [_random_image(64, 80)] * 3])).permute(0, 3, 1, 2)
    assert processor(images=batch, return_tensors="pt")["pixel_values"].shape == (3, 3, 224, 224)
    assert GroupViTProcessor.from_bundled(image_size=96)(images=images[0], return_tensors="pt")[
        "pixel_values"
    ].shape == (1, 3, 96, 96)


def test_text_and_images_together(processor):
    out = processor(
        text=["a photo of a cat", "a photo of a dog"], images=_random_image(50, 60), return_tensors="pt", padding=True
    )
    assert set(out.keys()) == {"input_ids", "attention_mask", "pixel_values"}
    assert out["input_ids"].shape == (2, 7) and out["pixel_values"].shape == (1, 3, 224, 224)


def test_uniform_colour_normalisation(processor):
    colour = (37, 150, 222)
    image = PIL.Image.new("RGB", (317, 211), colour)
    pixels = processor(images=image, return_tensors="pt")["pixel_values"][0].double().numpy()
    expected = (np.array(colour) / 255.0 - CLIP_MEAN) / CLIP_STD
    np.testing.assert_allclose(pixels, np.broadcast_to(expected[:, None, None], (3, 224, 224)), atol=1e-6)


@pytest.mark.parametrize(("height", "width"), [(240, 320), (300, 225), (256, 256), (240, 321), (250, 333)])
def test_matches_clip_reference_transform(processor, height, width):
    image = _random_image(height, width, seed=height + width)
    ours = processor(images=image, return_tensors="pt")["pixel_values"][0].numpy()
    np.testing.assert_allclose(ours, _clip_reference_pixels(image), atol=1e-5)
    # Hub GroupViT checkpoints use exactly transformers' default CLIPImageProcessor settings.
    hf = CLIPImageProcessorPil()(image, return_tensors="pt")["pixel_values"][0].numpy()
    np.testing.assert_array_equal(ours, hf)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "I;16"])
def test_non_rgb_pil_modes(processor, mode):
    image = _random_image(40, 50, mode=mode)
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)
    if mode in ("L", "P", "CMYK"):
        expected = processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(pixels, expected, rtol=0, atol=0)


def test_array_and_tensor_inputs_match_pil(processor):
    image = _random_image(60, 90, seed=3)
    array = np.asarray(image)
    reference = processor(images=image, return_tensors="pt")["pixel_values"]
    chw = torch.from_numpy(array.copy()).permute(2, 0, 1)
    variants = {
        "numpy HWC uint8": array,
        "numpy CHW uint8": array.transpose(2, 0, 1),
        "tensor CHW uint8": chw,
        "tensor HWC uint8": torch.from_numpy(array.copy()),
        "tensor CHW float [0,1]": chw.float() / 255.0,
        "numpy HWC int64": array.astype(np.int64),
        "numpy HWC float [0,255]": array.astype(np.float32),
    }
    for name, variant in variants.items():
        torch.testing.assert_close(processor(images=variant, return_tensors="pt")["pixel_values"], reference, msg=name)
    grey = processor(images=array[..., 0], return_tensors="pt")["pixel_values"]
    expected = processor(images=image.getchannel(0).convert("RGB"), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(grey, expected)


def test_image_path_input(processor, tmp_path):
    image = _random_image(30, 40)
    image.save(tmp_path / "img.png")
    torch.testing.assert_close(
        processor(images=str(tmp_path / "img.png"), return_tensors="pt")["pixel_values"],
        processor(images=image, return_tensors="pt")["pixel_values"],
    )


# --------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "neither"),
        ({"text": None, "images": None}, "neither"),
        ({"images": "definitely/not/an/image.png"}, "str"),
        ({"images": 7}, "int"),
        ({"images": [PIL.Image.new("RGB", (8, 8)), 3.5]}, "float"),
        ({"images": {"a": 1}}, "dict"),
        ({"images": []}, "empty"),
        ({"images": np.zeros((8, 8, 5), dtype=np.uint8)}, "channels"),
        ({"images": np.zeros((2, 2, 8, 8, 3), dtype=np.uint8)}, "shape"),
        ({"images": np.zeros((8, 8, 3), dtype=bool)}, "dtype"),
        ({"images": np.full((8, 8, 3), -1.5, dtype=np.float32)}, "range"),
        ({"images": np.full((8, 8, 3), 300, dtype=np.int32)}, "range"),
        ({"text": []}, "empty"),
        ({"text": ["a photo", 42]}, "42"),
        ({"text": ["a photo", None]}, "None"),
        ({"text": 123}, "int"),
        ({"text": "a photo", "videos": [np.zeros((2, 8, 8, 3))]}, "only processes"),
    ],
)
def test_invalid_inputs_raise(processor, kwargs, match):
    with pytest.raises(ValueError, match=match):
        processor(**kwargs)


def test_invalid_construction_arguments():
    with pytest.raises(ValueError, match="image_backend"):
        GroupViTProcessor.from_bundled(image_backend="cv2")
    with pytest.raises(ValueError, match="image_size"):
        GroupViTProcessor.from_bundled(image_size=0)
    if not is_torchvision_available():
        with pytest.raises(ValueError, match="torchvision"):
            GroupViTProcessor.from_bundled(image_backend="torchvision")


# --------------------------------------------------------------------------------------------- save / load


def test_save_and_load_round_trip_offline(processor, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    processor.save_pretrained(tmp_path)
    assert {"processor_config.json", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(tmp_path))
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "GroupViTProcessor"
    assert config["image_backend"] == "pil"
    assert config["image_processor"]["image_processor_type"] == "CLIPImageProcessor"
    tokenizer_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert tokenizer_config["processor_class"] == "GroupViTProcessor"
    assert tokenizer_config["model_max_length"] == 77

    reloaded = GroupViTProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, GroupViTProcessor) and reloaded.image_backend == "pil"
    assert reloaded.image_processor.to_dict() == processor.image_processor.to_dict()
    kwargs = {
        "text": ["a photo of a cat", "a diagram " * 60],
        "images": [_random_image(240, 320), _random_image(100, 90, seed=2)],
        "return_tensors": "pt",
        "padding": True,
    }
    before, after = processor(**kwargs), reloaded(**kwargs)
    assert before.keys() == after.keys() == {"input_ids", "attention_mask", "pixel_values"}
    for key in before:
        torch.testing.assert_close(before[key], after[key], rtol=0, atol=0)


def test_loads_hub_style_clip_processor_files(processor, tmp_path, monkeypatch):
    """A directory laid out like the Hub GroupViT repos (preprocessor_config.json + vocab.json/merges.txt)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = resources.files("groupvit").joinpath("resources", "clip_tokenizer")
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes(root.joinpath(name).read_bytes())
    CLIPImageProcessorPil().save_pretrained(tmp_path)
    tokenizer_config = {
        "tokenizer_class": "CLIPTokenizer",
        "processor_class": "CLIPProcessor",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
        "errors": "replace",
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))

    loaded = GroupViTProcessor.from_pretrained(tmp_path)
    kwargs = {"text": ["a photo of a cat", "Hello world"], "images": _random_image(90, 70), "padding": True}
    before, after = processor(**kwargs, return_tensors="pt"), loaded(**kwargs, return_tensors="pt")
    for key in before:
        torch.testing.assert_close(before[key], after[key], rtol=0, atol=0)


def test_auto_processor_finds_class(processor, tmp_path):
    from transformers import AutoProcessor
    from transformers.models.auto.processing_auto import processor_class_from_name

    if processor_class_from_name("GroupViTProcessor") is not GroupViTProcessor:
        pytest.skip("GroupViTProcessor is not registered with AutoProcessor (done by the package __init__)")
    processor.save_pretrained(tmp_path)
    assert isinstance(AutoProcessor.from_pretrained(tmp_path), GroupViTProcessor)


def test_default_constructor_matches_from_bundled(processor):
    default = GroupViTProcessor()
    assert default.image_processor.to_dict() == processor.image_processor.to_dict()
    assert default(text="a photo of a dog")["input_ids"] == [BOS, 320, 1125, 539, 320, 1929, EOS]


def test_docstring_examples_run():
    result = doctest.testmod(processing_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
