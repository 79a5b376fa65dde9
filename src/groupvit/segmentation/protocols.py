"""What to segment and how: the inference options, the dataset protocols and their registry, and the validators.

:class:`SegmentationOptions` holds every inference setting of :mod:`groupvit.segmentation.segmenter` (templates,
background threshold, resolution, sliding windows...). A :class:`SegmentationProtocol` names a dataset's classes, their
prompt renames and its options; the built-in ones are data (JSON files in `groupvit/resources/protocols/`), loaded by
:func:`get_protocol`; :func:`register_protocol` adds or replaces one.

The validators (:func:`validate_labels`, :func:`check_template`, :func:`check_background_threshold`) are the one set
every entry point uses: the options, the pipeline, the CLI and the app.

Example:
    ```python
    >>> voc = get_protocol("voc")
    >>> voc.labels[:3], voc.options.background_threshold, voc.options.replace(mode="whole").window
    (['aeroplane', 'bicycle', 'bird'], 0.95, 448)

    ```
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

__all__ = [
    "ASSIGNMENTS",
    "BACKGROUND_LABEL",
    "DEFAULT_TEMPLATE",
    "SCORE_MODES",
    "SegmentationOptions",
    "SegmentationProtocol",
    "available_protocols",
    "check_background_threshold",
    "check_template",
    "check_templates",
    "get_protocol",
    "normalize_label",
    "register_protocol",
    "validate_labels",
]

BACKGROUND_LABEL = "background"
"""Name of the background class in results (it is never embedded as text)."""
DEFAULT_TEMPLATE = "a photo of a {}."
"""The original segmentation template (the `simple` set)."""

_MODES = ("slide", "whole")
_ENSEMBLES = ("projection_mean", "normalized_mean")
ASSIGNMENTS = ("hard", "soft")
SCORE_MODES = ("original", "cosine")


# --------------------------------------------------------------------------------------------------------------------
# Options and protocols
# --------------------------------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_template(template: Any) -> str:
    """Return `template` if it is a string with one `{}` where the label goes; raise ValueError naming it otherwise."""
    if not isinstance(template, str) or "{}" not in template:
        raise ValueError(f'the prompt template must contain "{{}}" where the label goes, got {template!r}')
    try:
        template.format("x")
    except (IndexError, KeyError, ValueError) as error:
        raise ValueError(f"template {template!r} cannot be formatted with one label: {error}") from error
    return template


def check_templates(templates: Any, name: str = "templates") -> tuple[str, ...]:
    """One template or a non-empty sequence of them, as a tuple of checked templates (see :func:`check_template`)."""
    templates = (templates,) if isinstance(templates, str) else tuple(templates)
    if not templates:
        raise ValueError(f"{name} must hold at least one template, got an empty list")
    return tuple(check_template(template) for template in templates)


def check_background_threshold(value: Any) -> float | None:
    """Return `value` as a float in `[0, 1]` (or None); raise ValueError naming the value otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"background_threshold must be None or a number in [0, 1], got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"background_threshold must be in [0, 1], got {value!r}")
    return value


@dataclass(frozen=True)
class SegmentationOptions:
    """How to segment; the defaults are the original protocol without a background class.

    Args:
        templates: Prompt templates, each with one `{}` for the label; several form an ensemble.
        template_ensemble: `"projection_mean"` (original: average the templates' un-normalised projected text
            embeddings, then L2-normalise) or `"normalized_mean"` (CLIP-style: normalise each, average, normalise).
        background_threshold: `None` for no background class, else a threshold in `[0, 1]` (see the module doc).
        background_first: Put the background at index 0 of the logits and label map (the datasets' convention)
            instead of after the labels.
        mode: `"slide"` (windows of `window` px with `stride`, logits averaged) or `"whole"` (the resized image at
            once).
        short_side: Resize the image's short side to this many pixels first (None: keep the size).
        max_long_side: Cap on the resized long side (None: no cap).
        window: Sliding-window size in pixels of the resized image.
        stride: Sliding-window stride in pixels, at most `window` (None: `window // 2`, i.e. 224 for 448).
        top_k: Labels kept by the image-level top-k restriction (`min(top_k, C)`; None: all).
        assignment: `"hard"` (arg-max pixel -> group, original) or `"soft"` (soft grouping weights).
        score_mode: `"original"` (`P_top * P_all`, relative background threshold) or `"cosine"` (raw group-text
            cosine similarity, absolute background threshold).
        window_batch_size: Windows run through the model at once.
        resample: PIL filter for the short-side resize (`"bilinear"` as mmseg, or `"bicubic"`).

    Example:
        ```python
        >>> SegmentationOptions(background_threshold=0.95, mode="whole").window
        448

        ```
    """

    templates: tuple[str, ...] = (DEFAULT_TEMPLATE,)
    template_ensemble: str = "projection_mean"
    background_threshold: float | None = None
    background_first: bool = False
    mode: str = "slide"
    short_side: int | None = 448
    max_long_side: int | None = 2048
    window: int = 448
    stride: int | None = None
    top_k: int | None = 5
    assignment: str = "hard"
    score_mode: str = "original"
    window_batch_size: int = 8
    resample: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "templates", check_templates(self.templates))
        object.__setattr__(self, "background_threshold", check_background_threshold(self.background_threshold))
        for name, allowed in (
            ("template_ensemble", _ENSEMBLES),
            ("mode", _MODES),
            ("assignment", ASSIGNMENTS),
            ("score_mode", SCORE_MODES),
            ("resample", ("bilinear", "bicubic")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("short_side", "max_long_side", "top_k", "stride"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value <= 0):
                raise ValueError(f"{name} must be None or a positive int, got {value!r}")
        for name in ("window", "window_batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.stride is not None and self.stride > self.window:
            raise ValueError(f"stride ({self.stride}) must not exceed window ({self.window}): pixels would be skipped")
        if not isinstance(self.background_first, bool):
            raise ValueError(f"background_first must be a bool, got {self.background_first!r}")

    @property
    def with_background(self) -> bool:
        return self.background_threshold is not None

    @property
    def window_stride(self) -> int:
        """The sliding-window stride: `stride`, or half the window when it is None."""
        return self.stride if self.stride is not None else max(1, self.window // 2)

    def replace(self, **changes: Any) -> SegmentationOptions:
        """A copy with `changes` applied (validated); unknown names raise ValueError."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown segmentation option(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SegmentationOptions:
        return cls().replace(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["templates"] = list(self.templates)
        return values


@dataclass(frozen=True)
class SegmentationProtocol:
    """A named evaluation protocol: the dataset's class names, their prompt renames and the inference options.

    Args:
        name: Registry key, e.g. `"voc"`.
        class_names: The dataset's foreground class names in label order (background excluded).
        renames: Dataset name -> prompt name (e.g. `diningtable` -> `table`), applied by :attr:`labels`.
        options: Inference options (threshold as in the original code, template, window...).
        background_threshold_paper: The threshold the paper reports, where it differs from the code's.
        description: Where the numbers come from.

    Example:
        ```python
        >>> voc = get_protocol("voc")
        >>> len(voc.labels), voc.labels[10], voc.options.background_threshold
        (20, 'table', 0.95)

        ```
    """

    name: str
    class_names: tuple[str, ...]
    renames: Mapping[str, str] = field(default_factory=dict)
    options: SegmentationOptions = field(default_factory=SegmentationOptions)
    background_threshold_paper: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"protocol name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "renames", dict(self.renames))
        if isinstance(self.options, Mapping):
            object.__setattr__(self, "options", SegmentationOptions.from_dict(self.options))
        unknown = set(self.renames) - set(self.class_names)
        if unknown:
            raise ValueError(f"protocol {self.name!r}: renames name classes it does not have: {sorted(unknown)}")
        if self.class_names:
            validate_labels(self.labels, self.options.with_background)

    @property
    def labels(self) -> list[str]:
        """The prompt names (renames applied), in label order."""
        return [self.renames.get(name, name) for name in self.class_names]

    def with_class_names(self, class_names: Sequence[str], **option_changes: Any) -> SegmentationProtocol:
        """A copy with other class names (and optionally other options), e.g. to fill the `synthetic` preset."""
        return dataclasses.replace(
            self,
            class_names=tuple(class_names),
            renames={k: v for k, v in self.renames.items() if k in class_names},
            options=self.options.replace(**option_changes),
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SegmentationProtocol:
        values = dict(values)
        values["options"] = SegmentationOptions.from_dict(values.get("options", {}))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "class_names": list(self.class_names),
            "renames": dict(self.renames),
            "background_threshold_paper": self.background_threshold_paper,
            "options": self.options.to_dict(),
        }


_PROTOCOLS: dict[str, SegmentationProtocol] = {}
_BUILTINS_LOADED = False


def _load_builtin_protocols() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    root = resources.files("groupvit").joinpath("resources", "protocols")
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            protocol = SegmentationProtocol.from_dict(json.loads(entry.read_text(encoding="utf-8")))
            _PROTOCOLS.setdefault(protocol.name, protocol)
    _BUILTINS_LOADED = True


def register_protocol(protocol: SegmentationProtocol, overwrite: bool = False) -> SegmentationProtocol:
    """Add `protocol` to the registry under `protocol.name` (replace an existing one only with `overwrite`)."""
    _load_builtin_protocols()
    if protocol.name in _PROTOCOLS and not overwrite:
        raise ValueError(f"protocol {protocol.name!r} is already registered; pass overwrite=True to replace it")
    _PROTOCOLS[protocol.name] = protocol
    return protocol


def get_protocol(name: str) -> SegmentationProtocol:
    """The registered protocol `name` (`voc`, `context`, `coco_object`, `synthetic`, or one registered later)."""
    _load_builtin_protocols()
    if name not in _PROTOCOLS:
        raise ValueError(f"unknown segmentation protocol {name!r}; available: {available_protocols()}")
    return _PROTOCOLS[name]


def available_protocols() -> list[str]:
    _load_builtin_protocols()
    return sorted(_PROTOCOLS)


def normalize_label(label: str) -> str:
    """The form under which two labels are the same prompt: whitespace runs collapsed, case folded.

    Example:
        ```python
        >>> normalize_label("  Dining   Table ")
        'dining table'

        ```
    """
    return " ".join(label.split()).casefold()


def validate_labels(
    labels: Any,
    with_background: bool = False,
    *,
    tokenizer: Any = None,
    templates: Sequence[str] | None = None,
    max_length: int | None = None,
) -> list[str]:
    """Return `labels` as a list of strings, or raise ValueError naming the offending label.

    Refused: an empty list, a non-string, an empty string, two labels that are the same after
    :func:`normalize_label` (`"Cat"` and `"cat "`: the CLIP tokenizer lower-cases, so they would be the same prompt),
    a label named `background` (in any case) when the background class is enabled, and, when a `tokenizer` is
    given, a label whose prompt in any of `templates` is longer than the text model's context (it would be cut, and
    two long labels could become the same prompt).

    Args:
        labels: The candidate labels.
        with_background: Whether the background class is enabled.
        tokenizer: Tokenizer of the text model (optional).
        templates: Prompt templates (default: the default template) for the length check.
        max_length: The text context in tokens (default: `tokenizer.model_max_length`).
    """
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise ValueError(f"candidate labels must be a list of strings, got {labels!r}")
    labels = list(labels)
    if not labels:
        raise ValueError("candidate labels are empty; pass at least one label")
    seen: dict[str, str] = {}
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"every candidate label must be a non-empty string, got {label!r}")
        key = normalize_label(label)
        if key in seen:
            same = "" if seen[key] == label else f" (the same prompt as {seen[key]!r} up to case and spaces)"
            raise ValueError(f"duplicate candidate label {label!r}{same}")
        seen[key] = label
    if with_background and normalize_label(BACKGROUND_LABEL) in seen:
        raise ValueError(
            f"candidate label {seen[normalize_label(BACKGROUND_LABEL)]!r} is reserved for the background class when "
            "a background threshold is set; rename it or disable the threshold"
        )
    if tokenizer is not None:
        limit = max_length if max_length is not None else getattr(tokenizer, "model_max_length", None)
        if limit is not None and limit < 10**6:  # "no limit" tokenizers report a huge number
            for template in templates or (DEFAULT_TEMPLATE,):
                prompts = [template.format(label) for label in labels]
                lengths = [len(ids) for ids in tokenizer(prompts, truncation=False)["input_ids"]]
                for label, prompt, length in zip(labels, prompts, lengths, strict=True):
                    if length > limit:
                        raise ValueError(
                            f"candidate label {label!r} is too long: its prompt {prompt!r} is {length} tokens, over "
                            f"the text model's context of {limit}; shorten the label"
                        )
    return labels
