"""Property-based tests (hypothesis), bounded in time: the pipeline over image modes, array dtypes, sizes and label
lists; the model config over every numeric field; the run configuration over random values of every field.

Each test has its own `max_examples` and `deadline`; the whole file runs in well under 30 s on 2 CPU cores.
"""

import dataclasses
import math

import numpy as np
import PIL.Image
import pytest
from huggingface_hub.errors import StrictDataclassError
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import groupvit
from conftest import randomize_, tiny_config
from groupvit.training.config import DataArguments, LossArguments, TrainingConfig, validate_config

SMALL = {"short_side": 32, "window": 32, "stride": 16}


def bounded(max_examples: int, deadline: int = 2000) -> settings:
    """A time bound per test; no example database (tests never write into the repo tree)."""
    return settings(
        max_examples=max_examples,
        deadline=deadline,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture(scope="module")
def pipe():
    from transformers import pipeline

    from groupvit.segmentation.pipeline import TASK

    model = randomize_(groupvit.GroupViTModel(tiny_config()), seed=1).eval()
    return pipeline(TASK, model=model, processor=groupvit.GroupViTProcessor.from_bundled(image_size=32), device="cpu")


def _check_result(result: list[dict], labels: list[str], width: int, height: int) -> None:
    """Masks are binary, of the input's size, disjoint, and named by the given labels."""
    assert result, "no segment at all"
    masks = [np.asarray(entry["mask"]) for entry in result]
    for entry, mask in zip(result, masks, strict=True):
        assert entry["label"] in labels
        assert mask.shape == (height, width)
        assert set(np.unique(mask)) <= {0, 255}
    assert (np.stack(masks).astype(np.int64) // 255).sum(axis=0).max() <= 1


# --------------------------------------------------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------------------------------------------------

MODES = ("RGB", "L", "RGBA", "P", "I;16", "I", "F")
# sides 1..300 with extreme aspect ratios (1x300, 300x1) among them
SIDES = st.integers(1, 300)


def _image(mode: str, width: int, height: int, seed: int) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    rgb = PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode in ("RGB", "L", "RGBA", "P"):
        return rgb.convert(mode)
    gray = rng.integers(0, 2**16, (height, width))
    if mode == "I;16":
        return PIL.Image.fromarray(gray.astype(np.uint16))  # mode I;16
    if mode == "I":
        return PIL.Image.fromarray(gray.astype(np.int32))  # mode I
    return PIL.Image.fromarray((gray / 2**16).astype(np.float32))  # mode F


@bounded(30)
@given(mode=st.sampled_from(MODES), width=SIDES, height=SIDES, seed=st.integers(0, 1000))
def test_pipeline_segments_any_image_mode_and_size(pipe, mode, width, height, seed):
    image = _image(mode, width, height, seed)
    assert image.mode == mode
    _check_result(
        pipe(image, candidate_labels=["cat", "dog", "grass"], **SMALL), ["cat", "dog", "grass"], width, height
    )


@bounded(20)
@given(
    dtype=st.sampled_from(["uint8", "uint16", "float32"]),
    channels=st.sampled_from([None, 3]),
    width=SIDES,
    height=SIDES,
    seed=st.integers(0, 1000),
)
def test_pipeline_segments_numpy_arrays_of_each_dtype(pipe, dtype, channels, width, height, seed):
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels is None else (height, width, channels)
    if dtype == "float32":
        array = rng.random(shape, dtype=np.float32)  # in [0, 1]
    else:
        array = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    _check_result(pipe(array, candidate_labels=["sky", "sea"], **SMALL), ["sky", "sea"], width, height)


@pytest.mark.parametrize("size", [(1, 1), (1, 300), (300, 1), (300, 200), (2, 299)])
def test_pipeline_extreme_sizes(pipe, size):
    width, height = size
    _check_result(pipe(_image("RGB", width, height, 0), candidate_labels=["a", "b"], **SMALL), ["a", "b"], *size)


LABEL = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(
    lambda text: text.strip()
)


@bounded(25)
@given(labels=st.lists(LABEL, min_size=1, max_size=5, unique_by=lambda text: " ".join(text.lower().split())))
def test_pipeline_takes_unicode_and_whitespace_labels(pipe, labels):
    image = _image("RGB", 20, 12, 0)
    _check_result(pipe(image, candidate_labels=labels, **SMALL), labels, 20, 12)


@bounded(25)
@given(labels=st.lists(LABEL, min_size=1, max_size=4), data=st.data())
def test_pipeline_refuses_a_duplicate_label_by_name(pipe, labels, data):
    duplicate = data.draw(st.sampled_from(labels))
    spaced = data.draw(st.sampled_from([duplicate, f" {duplicate} ", duplicate.upper(), duplicate.lower()]))
    # case changes that are not round trips ('ı'.upper() == 'I', whose casefold is 'i') make a different prompt
    assume(" ".join(spaced.split()).casefold() == " ".join(duplicate.split()).casefold())
    position = data.draw(st.integers(0, len(labels)))
    candidates = [*labels[:position], spaced, *labels[position:]]
    with pytest.raises(ValueError, match="duplicate candidate label") as error:
        pipe(_image("RGB", 8, 8, 0), candidate_labels=candidates, **SMALL)
    assert any(repr(label) in str(error.value) for label in candidates)


@pytest.mark.parametrize("labels", [[], [" "], ["cat", ""], ["\t\n"]])
def test_pipeline_refuses_empty_labels(pipe, labels):
    with pytest.raises(ValueError, match="empty|non-empty"):
        pipe(_image("RGB", 8, 8, 0), candidate_labels=labels, **SMALL)


# --------------------------------------------------------------------------------------------------------------------
# the model config: every numeric field, valid values build, invalid ones raise naming the field
# --------------------------------------------------------------------------------------------------------------------

POSITIVE_INT = st.integers(1, 4096)
NOT_POSITIVE_INT = st.integers(-4096, 0)
POSITIVE_FLOAT = st.floats(1e-12, 1e6)
NOT_POSITIVE_FLOAT = st.one_of(st.floats(max_value=0.0, allow_infinity=False), st.just(math.inf), st.just(math.nan))
NON_NEGATIVE_FLOAT = st.floats(0.0, 1e6)
NEGATIVE_FLOAT = st.one_of(st.floats(max_value=-1e-12, allow_infinity=False), st.just(math.inf), st.just(math.nan))
PROBABILITY = st.floats(0.0, 1.0)
NOT_PROBABILITY = st.one_of(st.floats(min_value=1.0, exclude_min=True), st.floats(max_value=0.0, exclude_max=True))

# (sub-config or "" for the top level, field) -> (valid values, invalid values); an independent statement of the ranges
_MODEL_FIELDS = {
    **{
        ("text_config", f): (POSITIVE_INT, NOT_POSITIVE_INT)
        for f in ("vocab_size", "intermediate_size", "num_hidden_layers", "max_position_embeddings")
    },
    **{("vision_config", f): (POSITIVE_INT, NOT_POSITIVE_INT) for f in ("intermediate_size", "num_channels")},
    **{(c, "layer_norm_eps"): (POSITIVE_FLOAT, NOT_POSITIVE_FLOAT) for c in ("text_config", "vision_config")},
    **{(c, f): (PROBABILITY, NOT_PROBABILITY) for c in ("text_config", "vision_config") for f in ("dropout",)},
    **{(c, "attention_dropout"): (PROBABILITY, NOT_PROBABILITY) for c in ("text_config", "vision_config")},
    **{
        (c, f): (NON_NEGATIVE_FLOAT, NEGATIVE_FLOAT)
        for c in ("text_config", "vision_config", "")
        for f in ("initializer_range", "initializer_factor")
    },
    ("vision_config", "gumbel_tau"): (POSITIVE_FLOAT, NOT_POSITIVE_FLOAT),
    ("vision_config", "assign_eps"): (NON_NEGATIVE_FLOAT, NEGATIVE_FLOAT),
    ("vision_config", "drop_path_rate"): (
        st.floats(0.0, 1.0, exclude_max=True),
        st.one_of(st.floats(min_value=1.0), st.floats(max_value=0.0, exclude_max=True)),
    ),
    ("vision_config", "image_size"): (POSITIVE_INT, NOT_POSITIVE_INT),
    ("vision_config", "patch_size"): (POSITIVE_INT, NOT_POSITIVE_INT),
    ("", "projection_dim"): (POSITIVE_INT, NOT_POSITIVE_INT),
    ("", "projection_intermediate_dim"): (POSITIVE_INT, NOT_POSITIVE_INT),
    ("", "logit_scale_max"): (POSITIVE_FLOAT, NOT_POSITIVE_FLOAT),
}
# hidden_size and num_attention_heads are drawn together (the heads must divide the width)
_HEADS = {("text_config", "hidden_size"), ("text_config", "num_attention_heads")}


def _build(sub: str, field: str, value) -> groupvit.GroupViTConfig:
    if sub:
        return groupvit.GroupViTConfig.from_preset("groupvit-tiny", **{sub: {field: value}})
    return groupvit.GroupViTConfig.from_preset("groupvit-tiny", **{field: value})


def _built_value(config, sub: str, field: str):
    return getattr(getattr(config, sub) if sub else config, field)


@bounded(120, 1000)
@given(data=st.data())
def test_model_config_numeric_fields_valid_values_build(data):
    sub, field = data.draw(st.sampled_from(sorted(_MODEL_FIELDS)), label="field")
    value = data.draw(_MODEL_FIELDS[sub, field][0], label="value")
    assert _built_value(_build(sub, field, value), sub, field) == value


@bounded(120, 1000)
@given(data=st.data())
def test_model_config_numeric_fields_invalid_values_raise_naming_the_field(data):
    sub, field = data.draw(st.sampled_from(sorted(_MODEL_FIELDS)), label="field")
    value = data.draw(_MODEL_FIELDS[sub, field][1], label="value")
    # transformers' strict configs wrap the validator's ValueError in a StrictDataclassError (not a ValueError)
    with pytest.raises((ValueError, TypeError, StrictDataclassError)) as error:
        _build(sub, field, value)
    assert field in str(error.value)


@pytest.mark.parametrize(
    ("sub", "field", "value"),
    [
        ("text_config", "initializer_range", -1.0),
        ("vision_config", "initializer_factor", math.inf),
        ("vision_config", "assign_eps", math.nan),
        ("", "initializer_range", -0.5),
    ],
)
def test_model_config_init_scales_and_assign_eps_are_checked(sub, field, value):
    # these built with any value before: a negative init std or a NaN eps only showed up as NaN weights or outputs
    with pytest.raises(StrictDataclassError, match=f"{field} must be a finite number >= 0"):
        _build(sub, field, value)


@bounded(40, 1000)
@given(heads=st.integers(1, 16), per_head=st.integers(1, 64), sub=st.sampled_from(["text_config", "vision_config"]))
def test_model_config_heads_must_divide_the_width(heads, per_head, sub):
    config = groupvit.GroupViTConfig.from_preset(
        "groupvit-tiny", **{sub: {"hidden_size": heads * per_head, "num_attention_heads": heads}}
    )
    assert getattr(config, sub).hidden_size == heads * per_head
    if heads > 1:
        with pytest.raises((ValueError, StrictDataclassError), match="hidden_size.*num_attention_heads"):
            groupvit.GroupViTConfig.from_preset(
                "groupvit-tiny", **{sub: {"hidden_size": heads * per_head + 1, "num_attention_heads": heads}}
            )


# --------------------------------------------------------------------------------------------------------------------
# the run configuration: random values per field pass, or raise ValueError/TypeError naming the field
# --------------------------------------------------------------------------------------------------------------------

_RUN_FIELDS = [
    *(spec.name for spec in dataclasses.fields(TrainingConfig)),
    *(f"data.{spec.name}" for spec in dataclasses.fields(DataArguments)),
    *(f"loss.{spec.name}" for spec in dataclasses.fields(LossArguments)),
]
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.one_of(st.integers(-3, 3), st.floats(-2, 2)), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@bounded(200)
@given(key=st.sampled_from([*_RUN_FIELDS, "data", "loss"]), value=ANY_VALUE)
# found by this test: a non-mapping block was an AttributeError, NaN passed every range, the noun registry's error
# did not name the field
@example(key="data", value=5)
@example(key="loss", value=[1])
@example(key="learning_rate", value=math.nan)
@example(key="data.hflip", value=math.nan)
@example(key="data.noun_extractor", value="")
@example(key="data.train_shards", value="{")  # braceexpand's "Unbalanced braces" did not name the field
def test_run_config_random_values_pass_or_raise_naming_the_field(tmp_path, key, value):
    values = {"model_preset": "groupvit-tiny", "output_dir": str(tmp_path), "per_device_train_batch_size": 2}
    block, _, name = key.rpartition(".")
    if block:
        values[block] = {name: value}
    else:
        values[name] = value
    try:
        config = TrainingConfig.from_dict(values)
        validate_config(config)
    except (ValueError, TypeError) as error:
        assert name in str(error), f"{key}={value!r}: {error}"
        return
    # accepted: a numeric field holds a finite number
    accepted = getattr(getattr(config, block) if block else config, name) if name not in ("data", "loss") else None
    if isinstance(accepted, float):
        assert math.isfinite(accepted), f"{key}={value!r} was accepted"
