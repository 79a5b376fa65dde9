"""Tests for groupvit.data.nouns: offline noun extraction and prompt sampling."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from groupvit.data.nouns import (
    FULL_TEMPLATES,
    SIMPLE_TEMPLATES,
    SUBSET_TEMPLATES,
    NounExtractor,
    VocabularyNounExtractor,
    get_noun_extractor,
    get_templates,
    list_noun_extractors,
    load_irregular_plurals,
    load_noun_vocabulary,
    sample_prompted_nouns,
    singularize,
    tokenize_caption,
)
from groupvit.data.synthetic import get_spec


@pytest.fixture(scope="module")
def extract() -> NounExtractor:
    return get_noun_extractor("vocabulary")


# --------------------------------------------------------------------------------------------------------------------
# Vocabulary resources
# --------------------------------------------------------------------------------------------------------------------


def test_vocabulary_is_lowercase_and_covers_benchmark_classes():
    vocab = load_noun_vocabulary()
    assert len(vocab) > 2000
    assert all(w == w.lower() and w.strip() == w for w in vocab)
    voc = "aeroplane bicycle bird boat bottle bus car cat chair cow dog horse motorbike person sheep sofa train"
    coco = "giraffe frisbee skateboard surfboard broccoli toothbrush scissors umbrella laptop microwave"
    context = "ceiling curtain fence grass ground keyboard mountain road rock sidewalk sky snow wall water window wood"
    for word in f"{voc} {coco} {context}".split():
        assert word in vocab, word
    for phrase in ("dining table", "potted plant", "fire hydrant", "teddy bear", "traffic light", "cell phone"):
        assert phrase in vocab, phrase
    for preset in ("shapes", "objects"):
        assert set(get_spec(preset).class_names) <= vocab
    for word in ("the", "a", "is", "photo", "image", "background", "red", "white", "thing"):
        assert word not in vocab, word


def test_irregular_plurals_table():
    table = load_irregular_plurals()
    assert table["people"] == "person"
    assert table["teeth"] == "tooth"
    assert all(singular in load_noun_vocabulary() for singular in table.values())


# --------------------------------------------------------------------------------------------------------------------
# Tokenisation and plurals
# --------------------------------------------------------------------------------------------------------------------


def test_tokenize_handles_case_punctuation_and_possessives():
    assert tokenize_caption("A man's RED bike, parked!") == ["a", "man", "red", "bike", "parked"]
    assert tokenize_caption("“Dogs’ toys” — fun...") == ["dogs", "toys", "fun"]
    assert tokenize_caption("a t-shirt") == ["a", "t-shirt"]


@pytest.mark.parametrize(
    ("plural", "singular"),
    [
        ("dogs", "dog"),
        ("horses", "horse"),
        ("buses", "bus"),
        ("boxes", "box"),
        ("dishes", "dish"),
        ("berries", "berry"),
        ("leaves", "leaf"),
        ("knives", "knife"),
        ("tomatoes", "tomato"),
        ("children", "child"),
        ("women", "woman"),
        ("geese", "goose"),
        ("mice", "mouse"),
        ("sheep", "sheep"),
        ("glasses", "glasses"),
        ("bus", "bus"),
        ("grass", "grass"),
    ],
)
def test_singularize(plural, singular):
    assert singularize(plural) == singular


def test_singularize_unknown_word():
    assert singularize("quickly") is None
    assert singularize("xyzzys") is None


# --------------------------------------------------------------------------------------------------------------------
# Extraction on real-looking captions
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("Two dogs playing with a frisbee in the park", ["dog", "frisbee", "park"]),
        ("A man riding a bicycle down a city street", ["man", "bicycle", "city", "street"]),
        ("the sun is setting over the ocean", ["sun", "ocean"]),
        ("THE SUN IS SETTING OVER THE OCEAN!!!", ["sun", "ocean"]),
        ("Two hot dogs and a wine glass on the dining table.", ["hot dog", "wine glass", "dining table"]),
        ("Children feeding geese near the lake", ["child", "goose", "lake"]),
        ("Knives, forks & spoons; boxes of toys.", ["knife", "fork", "spoon", "box", "toy"]),
        ("a red circle and an orange triangle", ["circle", "triangle"]),
        ("an orange on a table", ["orange", "table"]),
        ("A young boy wants to fly a kite", ["boy", "kite"]),
        ("Stock photo of a woman's hands on white background", ["woman", "hand"]),
        ("a dog, a dog and another dog", ["dog"]),
        ("there is a fish next to a ball.", ["fish", "ball"]),
    ],
)
def test_vocabulary_extractor_on_captions(extract, caption, expected):
    assert extract(caption) == expected


def test_extractor_without_nouns(extract):
    assert extract("") == []
    assert extract("it is what it is, and so on.") == []


def test_custom_vocabulary():
    extractor = VocabularyNounExtractor(load_noun_vocabulary() | {"widget", "blue widget"})
    assert extractor("two blue widgets and a dog") == ["blue widget", "dog"]
    small = VocabularyNounExtractor({"cat"})
    assert small("cats and dogs") == ["cat"]


def test_registry():
    assert {"vocabulary", "nltk"} <= set(list_noun_extractors())
    extractor = get_noun_extractor()
    assert isinstance(extractor, NounExtractor)
    assert get_noun_extractor(extractor) is extractor
    with pytest.raises(ValueError, match="spacy-large"):
        get_noun_extractor("spacy-large")


@pytest.mark.skipif(importlib.util.find_spec("nltk") is not None, reason="nltk is installed here")
def test_nltk_extractor_unavailable_raises_import_error():
    with pytest.raises(ImportError, match="vocabulary"):
        get_noun_extractor("nltk")


# --------------------------------------------------------------------------------------------------------------------
# Prompt sampling
# --------------------------------------------------------------------------------------------------------------------


def test_templates():
    assert SIMPLE_TEMPLATES == ["a photo of a {}."]
    assert len(SUBSET_TEMPLATES) == 7 and "a {} in a video game." in SUBSET_TEMPLATES
    assert len(FULL_TEMPLATES) == 80
    assert get_templates("subset") is SUBSET_TEMPLATES
    with pytest.raises(ValueError, match="fancy"):
        get_templates("fancy")


def test_sample_prompted_nouns_picks_distinct_nouns():
    caption = "Two dogs playing with a frisbee in the park"
    prompts = sample_prompted_nouns(caption, 2, rng=np.random.default_rng(0))
    assert len(prompts) == 2 and len(set(prompts)) == 2
    nouns = {p.removeprefix("a photo of a ").removesuffix(".") for p in prompts}
    assert nouns <= {"dog", "frisbee", "park"}
    all_three = sample_prompted_nouns(caption, 3, rng=1)
    assert sorted(all_three) == ["a photo of a dog.", "a photo of a frisbee.", "a photo of a park."]


def test_sample_prompted_nouns_pads_with_caption():
    caption = "the sun is setting over the ocean"
    prompts = sample_prompted_nouns(caption, 5, rng=0)
    assert sorted(prompts[:2]) == ["a photo of a ocean.", "a photo of a sun."]
    assert prompts[2:] == [caption] * 3
    assert sample_prompted_nouns("nothing to see here", 3, rng=0) == ["nothing to see here"] * 3
    assert sample_prompted_nouns(caption, 0) == []
    with pytest.raises(ValueError):
        sample_prompted_nouns(caption, -1)


def test_sample_prompted_nouns_is_deterministic_with_seeded_rng():
    caption = "A man riding a bicycle down a city street"
    runs = [
        sample_prompted_nouns(caption, 3, rng=np.random.default_rng(42), templates=SUBSET_TEMPLATES) for _ in range(3)
    ]
    assert runs[0] == runs[1] == runs[2]
    seen = {tuple(sample_prompted_nouns(caption, 3, rng=seed, templates=SUBSET_TEMPLATES)) for seed in range(20)}
    assert len(seen) > 1
    assert all(
        any(p == t.format(n) for t in SUBSET_TEMPLATES for n in ("man", "bicycle", "city", "street"))
        for run in seen
        for p in run
    )


def test_sample_prompted_nouns_accepts_custom_extractor():
    prompts = sample_prompted_nouns("anything", 2, extractor=lambda caption: ["cat"], rng=0, templates=["{}"])
    assert prompts == ["cat", "anything"]
