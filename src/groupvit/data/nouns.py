"""Offline noun extraction from captions for GroupViT's multi-label image-text contrastive loss.

The original GroupViT code (``WordAugTokenizeWrapper``) tokenised each caption with ``nltk.word_tokenize``, POS-tagged
it with ``nltk.pos_tag`` and kept the words tagged ``NN, NNS, NNP, VBG, VB, VBD, VBN, VBP, VBZ``; it then sampled
``min(K, #words)`` of them without replacement, put each into a random prompt template and padded the list to ``K``
prompts with copies of the raw caption. NLTK's tagger needs data files downloaded at run time, which this project
does not allow, so the default here is a *vocabulary* extractor:

* :class:`VocabularyNounExtractor` (default, ``get_noun_extractor("vocabulary")``) matches caption words against a
  shipped list of ~3.5k lower-case English concrete nouns (``groupvit/resources/nouns/nouns.txt``: PASCAL VOC,
  PASCAL Context, COCO things/stuff, ADE20K, common ImageNet-style objects, people and places, the synthetic preset
  categories, plus common concrete WordNet nouns; see ``build_vocabulary.py`` there). Plurals are reduced to the
  singular with a table of irregular plurals and simple suffix rules, multi-word nouns (``"fire hydrant"``,
  ``"teddy bear"``) are matched greedily, and a few context rules drop words used as verbs or colour adjectives
  (``"the sun is setting"``, ``"an orange triangle"``). It returns singular lemmas so prompts read
  ``"a photo of a dog."`` rather than ``"a photo of a dogs."``. Unlike the original it keeps nouns only (no verbs) and
  drops caption "meta" words (photo, image, picture, background...).
* :class:`NltkNounExtractor` (``get_noun_extractor("nltk")``) reproduces the original tagging exactly (same tags,
  surface forms) when ``nltk`` *and* its tokenizer/tagger data are already installed locally; it never downloads.

:func:`sample_prompted_nouns` implements the sampling/padding step of the original.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from importlib import resources
from typing import Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "FULL_TEMPLATES",
    "IDENTITY_TEMPLATES",
    "NLTK_NOUN_TAGS",
    "SIMPLE_TEMPLATES",
    "SUBSET_TEMPLATES",
    "TEMPLATE_SETS",
    "NltkNounExtractor",
    "NounExtractor",
    "VocabularyNounExtractor",
    "get_noun_extractor",
    "get_templates",
    "list_noun_extractors",
    "load_irregular_plurals",
    "load_noun_vocabulary",
    "register_noun_extractor",
    "sample_prompted_nouns",
    "singularize",
    "tokenize_caption",
]

# ---------------------------------------------------------------------------------------------------------------------
# Prompt templates (CLIP's ImageNet templates, as used by GroupViT's ``template_set`` option).
# ---------------------------------------------------------------------------------------------------------------------

SIMPLE_TEMPLATES: list[str] = ["a photo of a {}."]

SUBSET_TEMPLATES: list[str] = [
    "itap of a {}.",
    "a bad photo of a {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
]

IDENTITY_TEMPLATES: list[str] = ["{}"]

FULL_TEMPLATES: list[str] = [
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
]

TEMPLATE_SETS: dict[str, list[str]] = {
    "simple": SIMPLE_TEMPLATES,
    "subset": SUBSET_TEMPLATES,
    "full": FULL_TEMPLATES,
    "identity": IDENTITY_TEMPLATES,
}


def get_templates(name: str) -> list[str]:
    """Template set by name: ``"simple"``, ``"subset"``, ``"full"`` (80 CLIP templates) or ``"identity"``.

    Raises:
        ValueError: For an unknown name (the message names it).
    """
    try:
        return TEMPLATE_SETS[name]
    except KeyError:
        raise ValueError(f"Unknown template set {name!r}; expected one of {sorted(TEMPLATE_SETS)}") from None


# ---------------------------------------------------------------------------------------------------------------------
# Extractor protocol and registry
# ---------------------------------------------------------------------------------------------------------------------


@runtime_checkable
class NounExtractor(Protocol):
    """Anything that maps a caption to the list of nouns it mentions (distinct, in order of appearance)."""

    def __call__(self, caption: str) -> list[str]: ...


_EXTRACTORS: dict[str, Callable[[], NounExtractor]] = {}


def register_noun_extractor(name: str, factory: Callable[[], NounExtractor], overwrite: bool = False) -> None:
    """Register a zero-argument ``factory`` building an extractor under ``name``."""
    if name in _EXTRACTORS and not overwrite:
        raise ValueError(f"Noun extractor {name!r} is already registered")
    _EXTRACTORS[name] = factory


def list_noun_extractors() -> list[str]:
    """Names accepted by :func:`get_noun_extractor`."""
    return sorted(_EXTRACTORS)


def get_noun_extractor(name: str | NounExtractor = "vocabulary") -> NounExtractor:
    """Build (or pass through) a noun extractor.

    Args:
        name: ``"vocabulary"`` (default, offline word list), ``"nltk"`` (original POS-tag rule; needs ``nltk`` and
            its data installed locally), another registered name, or an extractor instance (returned unchanged).

    Raises:
        ValueError: For an unknown name (the message names it and lists the registered ones).
    """
    if not isinstance(name, str):
        return name
    try:
        factory = _EXTRACTORS[name]
    except KeyError:
        raise ValueError(f"Unknown noun extractor {name!r}; available: {list_noun_extractors()}") from None
    return factory()


# ---------------------------------------------------------------------------------------------------------------------
# Resources
# ---------------------------------------------------------------------------------------------------------------------


def _resource_text(filename: str) -> str:
    folder = resources.files("groupvit").joinpath("resources").joinpath("nouns")
    return folder.joinpath(filename).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def load_noun_vocabulary() -> frozenset[str]:
    """The shipped noun vocabulary: lower-case singular lemmas (multi-word entries use single spaces)."""
    words = (line.strip() for line in _resource_text("nouns.txt").splitlines())
    return frozenset(w for w in words if w and not w.startswith("#"))


@lru_cache(maxsize=1)
def load_irregular_plurals() -> dict[str, str]:
    """Irregular plural -> singular for nouns in the vocabulary (e.g. ``"teeth" -> "tooth"``)."""
    table: dict[str, str] = {}
    for line in _resource_text("irregular_plurals.tsv").splitlines():
        if line and not line.startswith("#"):
            plural, singular = line.split("\t")
            table[plural] = singular
    return table


# ---------------------------------------------------------------------------------------------------------------------
# Tokenisation and singularisation
# ---------------------------------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u2013": "-", "\u2014": " "})


def tokenize_caption(caption: str) -> list[str]:
    """Lower-case word tokens; punctuation is dropped and possessive ``'s`` / trailing ``'`` removed.

    Example: ``"A man's red bike, parked."`` -> ``["a", "man", "red", "bike", "parked"]``.
    """
    tokens = []
    for tok in _TOKEN_RE.findall(caption.lower().translate(_QUOTES)):
        if tok.endswith("'s"):
            tok = tok[:-2]
        tokens.append(tok.strip("'-"))
    return [t for t in tokens if t]


def _singular_candidates(word: str) -> list[str]:
    """Possible singulars of ``word`` by suffix rules, most specific first (may include non-words)."""
    if len(word) < 3 or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return []
    out = []
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")  # berries -> berry
    if word.endswith("ves"):
        out += [word[:-3] + "f", word[:-3] + "fe"]  # leaves -> leaf, knives -> knife
    if word.endswith("es"):
        out.append(word[:-2])  # boxes -> box, buses -> bus, tomatoes -> tomato
    out.append(word[:-1])  # dogs -> dog, horses -> horse
    return out


def singularize(word: str, vocabulary: frozenset[str] | None = None) -> str | None:
    """Map ``word`` to a vocabulary lemma: itself, its irregular singular, or a rule-based singular.

    Args:
        word: A lower-case token.
        vocabulary: Lemmas to accept (default: :func:`load_noun_vocabulary`).

    Returns:
        The lemma, or ``None`` if no form of ``word`` is in the vocabulary.
    """
    vocab = load_noun_vocabulary() if vocabulary is None else vocabulary
    if word in vocab:
        return word
    irregular = load_irregular_plurals().get(word)
    if irregular is not None and irregular in vocab:
        return irregular
    for candidate in _singular_candidates(word):
        if candidate in vocab:
            return candidate
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Vocabulary extractor (default)
# ---------------------------------------------------------------------------------------------------------------------

# A noun-vocabulary word right after one of these is a verb ("is setting", "can fly", "going to park").
_BE_FORMS = frozenset("is are was were be been being am isn't aren't wasn't weren't".split())
_MODALS = frozenset(
    "can could will would shall should may might must do does did don't doesn't didn't can't cannot won't "
    "wouldn't couldn't shouldn't let lets".split()
)
_TO_TRIGGERS = frozenset(
    "going want wants wanted trying try tries tried about ready able need needs needed has have had like likes "
    "love loves wait waits waiting learn learns learning prepare prepares preparing start starts starting begin "
    "begins beginning began used attempt attempts attempting plan plans planning help helps helping decide decides "
    "decided ought".split()
)
# Colour words that are also nouns: before another noun or colour they are adjectives ("an orange triangle").
_COLOUR_NOUNS = frozenset(
    "orange gold silver lime olive peach cream coral ivory lavender salmon plum tan charcoal amber mint emerald "
    "bronze light".split()
)
_COLOURS = frozenset(
    "red green blue yellow white black grey gray pink purple brown violet beige navy maroon teal cyan magenta "
    "turquoise dark pale bright light".split()
)


class VocabularyNounExtractor:
    """Extract nouns by matching caption tokens against a shipped English noun vocabulary (no downloads).

    Rules, in order, for each position of the tokenised caption (:func:`tokenize_caption`):

    1. Multi-word vocabulary entries are matched greedily, longest first, with the last word singularised
       (``"two hot dogs"`` -> ``"hot dog"``).
    2. A single token is kept if :func:`singularize` maps it to a vocabulary lemma, unless the context says it is
       a verb (after a form of *be* with an ``-ing``/``-ed`` ending; after a modal/do-form; after ``to`` preceded by
       ``going``/``want``/...) or a colour adjective (a colour noun such as ``orange`` directly followed by a noun or
       colour).

    Returns distinct singular lemmas in order of first appearance.

    Args:
        vocabulary: Lemmas to accept; defaults to the shipped ``nouns.txt``. Extra words can be added with
            ``VocabularyNounExtractor(load_noun_vocabulary() | {"widget"})``.
        max_ngram: Longest multi-word entry to look for.
    """

    def __init__(self, vocabulary: frozenset[str] | set[str] | None = None, max_ngram: int | None = None) -> None:
        self.vocabulary: frozenset[str] = frozenset(load_noun_vocabulary() if vocabulary is None else vocabulary)
        longest = max((w.count(" ") + 1 for w in self.vocabulary), default=1)
        self.max_ngram = longest if max_ngram is None else max(1, min(max_ngram, longest))

    def _lemma(self, word: str) -> str | None:
        return singularize(word, self.vocabulary)

    def _is_verb_or_adjective(self, tokens: list[str], i: int) -> bool:
        word = tokens[i]
        prev = tokens[i - 1] if i > 0 else ""
        if prev in _BE_FORMS and word.endswith(("ing", "ed")):
            return True
        if prev in _MODALS:
            return True
        if prev == "to" and i > 1 and tokens[i - 2] in _TO_TRIGGERS:
            return True
        if word in _COLOUR_NOUNS and i + 1 < len(tokens):
            nxt = tokens[i + 1]
            if nxt in _COLOURS or nxt in _COLOUR_NOUNS or self._lemma(nxt) is not None:
                return True
        return False

    def _match_phrase(self, tokens: list[str], i: int) -> tuple[str, int] | None:
        for length in range(min(self.max_ngram, len(tokens) - i), 1, -1):
            words = tokens[i : i + length]
            head = words[-1]
            for last in (head, *_singular_candidates(head), load_irregular_plurals().get(head, head)):
                phrase = " ".join([*words[:-1], last])
                if phrase in self.vocabulary:
                    return phrase, length
        return None

    def __call__(self, caption: str) -> list[str]:
        tokens = tokenize_caption(caption)
        found: list[str] = []
        i = 0
        while i < len(tokens):
            match = self._match_phrase(tokens, i) if self.max_ngram > 1 else None
            if match is not None:
                lemma, step = match
            else:
                step = 1
                lemma = self._lemma(tokens[i])
                if lemma is not None and self._is_verb_or_adjective(tokens, i):
                    lemma = None
            if lemma is not None and lemma not in found:
                found.append(lemma)
            i += step
        return found

    def __repr__(self) -> str:
        return f"VocabularyNounExtractor(vocabulary_size={len(self.vocabulary)}, max_ngram={self.max_ngram})"


@lru_cache(maxsize=1)
def _default_vocabulary_extractor() -> VocabularyNounExtractor:
    return VocabularyNounExtractor()


# ---------------------------------------------------------------------------------------------------------------------
# Optional: the original NLTK POS-tag rule
# ---------------------------------------------------------------------------------------------------------------------

NLTK_NOUN_TAGS: tuple[str, ...] = ("NN", "NNS", "NNP", "VBG", "VB", "VBD", "VBN", "VBP", "VBZ")


class NltkNounExtractor:
    """The original GroupViT rule: ``nltk.word_tokenize`` + ``nltk.pos_tag``, keep words tagged ``tags``.

    Needs the ``nltk`` package and its ``punkt``/``punkt_tab`` and ``averaged_perceptron_tagger``/
    ``averaged_perceptron_tagger_eng`` data already present locally; nothing is downloaded. Words are returned as
    they appear (surface form, duplicates removed), like the original.

    Raises:
        ImportError: If ``nltk`` is not installed.
        LookupError: If its tokenizer or tagger data is missing (checked at construction).
    """

    def __init__(self, tags: Sequence[str] = NLTK_NOUN_TAGS) -> None:
        try:
            import nltk
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "The 'nltk' noun extractor needs the nltk package; use get_noun_extractor('vocabulary') instead"
            ) from err
        self._nltk = nltk
        self.tags = frozenset(tags)
        try:
            nltk.pos_tag(nltk.word_tokenize("a dog"))
        except LookupError as err:
            raise LookupError(
                "nltk is installed but its tokenizer/tagger data is missing; install it ahead of time "
                "(groupvit never downloads data at run time) or use the 'vocabulary' extractor"
            ) from err

    def __call__(self, caption: str) -> list[str]:
        found: list[str] = []
        for word, tag in self._nltk.pos_tag(self._nltk.word_tokenize(caption)):
            if tag in self.tags and word not in found:
                found.append(word)
        return found


register_noun_extractor("vocabulary", _default_vocabulary_extractor)
register_noun_extractor("nltk", NltkNounExtractor)


# ---------------------------------------------------------------------------------------------------------------------
# Prompt sampling
# ---------------------------------------------------------------------------------------------------------------------


def sample_prompted_nouns(
    caption: str,
    k: int,
    extractor: str | NounExtractor | None = None,
    rng: np.random.Generator | int | None = None,
    templates: Sequence[str] = SIMPLE_TEMPLATES,
) -> list[str]:
    """Build the ``k`` extra texts of GroupViT's multi-label contrastive loss for one caption.

    Mirrors the original ``WordAugTokenizeWrapper``: extract the caption's nouns, sample ``min(k, #nouns)`` distinct
    nouns without replacement, fill each into a template drawn uniformly from ``templates``, and pad the list to
    ``k`` entries with copies of the raw caption (so a caption without nouns yields ``k`` copies of itself). The
    caption itself is *not* included; callers prepend it (the original returned ``[caption] + prompts``).

    Args:
        caption: The raw caption.
        k: Number of texts to return (``multi_label`` in the original config); ``0`` gives ``[]``.
        extractor: Extractor or registered name; ``None`` uses the default vocabulary extractor.
        rng: ``numpy.random.Generator`` (or an int seed) for reproducible sampling; ``None`` uses fresh entropy.
        templates: Prompt templates with one ``{}`` placeholder, e.g. :data:`SIMPLE_TEMPLATES` or
            :data:`SUBSET_TEMPLATES`.

    Returns:
        ``k`` strings: prompts for the sampled nouns (in sampling order), then caption copies.
    """
    return [prompt for prompt, _ in sample_noun_prompts(caption, k, extractor, rng, templates)]


def sample_noun_prompts(
    caption: str,
    k: int,
    extractor: str | NounExtractor | None = None,
    rng: np.random.Generator | int | None = None,
    templates: Sequence[str] = SIMPLE_TEMPLATES,
    nouns: Sequence[str] | None = None,
) -> list[tuple[str, str | None]]:
    """Like :func:`sample_prompted_nouns`, with the noun of each prompt (``None`` for a padding caption copy).

    ``nouns``: the caption's nouns when the caller has already extracted them (``extractor`` is then not run).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if not templates:
        raise ValueError("templates must not be empty")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if nouns is None:
        extract = get_noun_extractor("vocabulary" if extractor is None else extractor)
        nouns = extract(caption) if k > 0 else []
    n_pick = min(k, len(nouns))
    prompts: list[tuple[str, str | None]] = []
    if n_pick:
        picked = generator.choice(len(nouns), size=n_pick, replace=False)
        for idx in picked.tolist():
            template = templates[int(generator.integers(len(templates)))]
            prompts.append((template.format(nouns[idx]), nouns[idx]))
    prompts.extend([(caption, None)] * (k - n_pick))
    return prompts
