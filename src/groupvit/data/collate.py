"""Batching for pretraining: stack images, tokenize captions, and build the multi-label noun prompts."""

import zlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from .nouns import SIMPLE_TEMPLATES, NounExtractor, get_noun_extractor, sample_noun_prompts


def _noun_id(noun: str) -> int:
    """A stable non-negative id of a noun (the same in every process and worker)."""
    return zlib.crc32(noun.encode()) & 0x7FFFFFFF


class ImageTextCollator:
    """Turn stream items into a model batch.

    For the paper's multi-label loss, each caption also yields `num_prompt_nouns` prompts: nouns sampled from the
    caption without replacement, each put into a template, padded with copies of the caption when it has fewer
    nouns (what the original code does; see `groupvit.data.nouns.sample_prompted_nouns`).

    Args:
        tokenizer: CLIP tokenizer.
        num_prompt_nouns: K; 0 disables the prompts.
        noun_extractor: Extractor instance or registered name.
        templates: Prompt templates with one `{}`.
        max_length: Token budget of captions and prompts.
        seed: Base seed of the noun sampling (combined with the worker id and a call counter).

    Returns (from `__call__`):
        `pixel_values (B, 3, H, W)`, `input_ids`/`attention_mask (B, L)`, and with K > 0 `prompt_input_ids`/
        `prompt_attention_mask (B, K, L')` and `prompt_noun_ids (B, K)`; `skipped` maps a skip reason to the
        count of samples skipped before this batch's samples. B counts only real samples: a batch made only of
        sample-less skip records is `{"skipped": ...}` alone.
    """

    def __init__(
        self,
        tokenizer: Any,
        num_prompt_nouns: int = 0,
        noun_extractor: NounExtractor | str = "vocabulary",
        templates: Sequence[str] = SIMPLE_TEMPLATES,
        max_length: int = 77,
        seed: int = 0,
    ) -> None:
        if num_prompt_nouns < 0:
            raise ValueError(f"num_prompt_nouns must be >= 0, got {num_prompt_nouns}")
        self.tokenizer = tokenizer
        self.num_prompt_nouns = num_prompt_nouns
        self.noun_extractor = get_noun_extractor(noun_extractor) if isinstance(noun_extractor, str) else noun_extractor
        self.templates = list(templates)
        self.max_length = max_length
        self.seed = seed
        self._calls = 0

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).data

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("ImageTextCollator got an empty list of samples")
        skipped: Counter[str] = Counter()
        for item in items:
            skipped.update(item.get("skipped", {}))
        # sample-less records carry only the skips a worker made after its last sample
        items = [item for item in items if "pixel_values" in item]
        if not items:
            return {"skipped": dict(skipped)}
        captions = [item["caption"] for item in items]
        tokens = self._tokenize(captions)
        batch: dict[str, Any] = {
            "pixel_values": torch.stack([item["pixel_values"] for item in items]),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
        }
        if self.num_prompt_nouns > 0:
            info = get_worker_info()
            rng = np.random.default_rng([self.seed, info.id if info else 0, self._calls])
            self._calls += 1
            # each caption's nouns, extracted once: the prompts are drawn from them, and the region terms read all
            caption_nouns = [self.noun_extractor(caption) for caption in captions]
            pairs = [
                pair
                for caption, nouns in zip(captions, caption_nouns, strict=True)
                for pair in sample_noun_prompts(
                    caption, self.num_prompt_nouns, self.noun_extractor, rng, self.templates, nouns=nouns
                )
            ]
            prompt_tokens = self._tokenize([prompt for prompt, _ in pairs])
            # (B * K, L') -> (B, K, L')
            shape = (len(items), self.num_prompt_nouns, -1)
            batch["prompt_input_ids"] = prompt_tokens["input_ids"].reshape(shape)
            batch["prompt_attention_mask"] = prompt_tokens["attention_mask"].reshape(shape)
            # a stable id per noun (-1: a padding copy of the caption), for the "semantic" multi-label targets
            noun_ids = [-1 if noun is None else _noun_id(noun) for _, noun in pairs]
            batch["prompt_noun_ids"] = torch.tensor(noun_ids).reshape(len(items), self.num_prompt_nouns)
            # every noun of every caption (not only the K sampled ones), -1 padded: the targets of region terms
            caption_ids = [[_noun_id(noun) for noun in nouns] for nouns in caption_nouns]
            width = max(1, max(len(ids) for ids in caption_ids))
            batch["caption_noun_ids"] = torch.tensor([ids + [-1] * (width - len(ids)) for ids in caption_ids])
        batch["skipped"] = dict(skipped)
        return batch
