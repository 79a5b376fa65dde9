"""The shipped demo model (a small GroupViT trained on synthetic captions, embedded in the package) and how to run it.

The one owner of the demo's inference defaults, used by `groupvit demo`, `groupvit segment`, `groupvit evaluate` and
`groupvit app`:

* :func:`resolve_model` maps `"demo"` to the shipped model's directory and returns the settings chosen on the
  validation split (stored in its `demo.json`: the background threshold). When the package carries no trained demo
  model (a development checkout before one was trained), a randomly initialised model of the same architecture
  stands in, with a warning.
* :func:`inference_options` turns a model's training resolution and those settings into segmentation options for
  user images: a model trained below 224 px (the demo model: 64 px) sees the whole image resized to its training
  size.
"""

import json
import logging
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEMO_NAME = "demo"
DEMO_PRESET = "groupvit-demo"
DEMO_SETTINGS = "demo.json"
DEFAULT_SETTINGS = {"background_threshold": 0.5}
# models trained below this resolution (px) see the whole image at their training size instead of 448/224 windows
LOW_RESOLUTION = 224


def demo_directory() -> Path:
    """Where the trained demo model lives inside the package."""
    return Path(str(resources.files("groupvit") / "resources" / "demo" / "model"))


QUICK_RECIPE = ("run.yaml", "run_quick.yaml")
"""The run files of `groupvit demo --train` (`make demo-train`), in order: stage 1 of the shipped recipe, then a
short region-term stage from it (under 10 CPU minutes in all; the shipped recipe's stages 2-4 alone take about 37)."""


def run_config_path(name: str = "run.yaml") -> Path:
    """A training run file of the demo recipe (default: stage 1)."""
    return Path(str(resources.files("groupvit") / "resources" / "demo" / name))


def random_demo_model(directory: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised model with the demo architecture (and the processor) to `directory`."""
    import torch

    from groupvit.configuration_groupvit import GroupViTConfig
    from groupvit.modeling_groupvit import GroupViTModel
    from groupvit.processing_groupvit import GroupViTProcessor

    torch.manual_seed(seed)
    config = GroupViTConfig.from_preset(DEMO_PRESET)
    GroupViTModel(config).save_pretrained(directory)
    GroupViTProcessor.from_bundled(image_size=config.vision_config.image_size).save_pretrained(directory)
    return Path(directory)


def load_settings(directory: str | Path) -> dict[str, Any]:
    """Inference settings saved next to a model by the demo (`demo.json`), or the defaults."""
    path = Path(directory) / DEMO_SETTINGS
    if path.exists():
        return {**DEFAULT_SETTINGS, **json.loads(path.read_text()).get("options", {})}
    return dict(DEFAULT_SETTINGS)


def resolve_model(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """Map `"demo"` to the shipped model (or a random stand-in); other names pass through.

    Returns:
        The directory or Hub id, and segmentation option defaults (e.g. the validated background threshold).
    """
    if name_or_path != DEMO_NAME:
        if Path(name_or_path).is_dir():
            return name_or_path, load_settings(name_or_path)
        check_hub_id(name_or_path)
        return name_or_path, {}
    directory = demo_directory()
    if (directory / "model.safetensors").exists():
        return str(directory), load_settings(directory)
    logger.warning("This checkout has no trained demo model; using a RANDOMLY INITIALISED one (segments are noise)")
    stand_in = Path(tempfile.gettempdir()) / "groupvit-random-demo"
    if not (stand_in / "model.safetensors").exists():
        random_demo_model(stand_in)
    return str(stand_in), dict(DEFAULT_SETTINGS)


def check_hub_id(name: str) -> None:
    """Fail early, naming `name`, when a model that is not a local folder cannot be a loadable Hub id.

    A path (absolute, relative, or with more than one `/`), a regular file, or a malformed id is refused; so is a
    well-formed id that is not in the local Hub cache while the Hub is offline (`HF_HUB_OFFLINE=1`). A well-formed id
    online is left to `from_pretrained`, whose errors (unknown repository, unreachable Hub) the CLI reports.

    Raises:
        ValueError: With the model name and what is wrong with it.
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if Path(name).exists():
        raise ValueError(f"model {name!r} is a file, not a model folder (config.json, model.safetensors)")
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
    try:
        validate_repo_id(name)
    except HFValidationError:
        looks_like_path = True
    if looks_like_path:
        raise ValueError(f"model folder {name!r} does not exist")
    cached = try_to_load_from_cache(name, "config.json")
    if not isinstance(cached, str) and constants.HF_HUB_OFFLINE:
        raise ValueError(
            f"model {name!r} is neither a local folder nor in the Hub cache, and the Hub is offline (HF_HUB_OFFLINE)"
        )


def inference_options(image_size: int, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Segmentation option changes for user images of a model trained at `image_size` px, plus its `settings`.

    Models trained below :data:`LOW_RESOLUTION` (like the 64 px demo model) see the whole image with its short side
    resized to `image_size`, as in their training; others keep the original protocol (short side 448, 448/224
    windows).

    Args:
        image_size: The model's `vision_config.image_size`.
        settings: The model's settings from :func:`resolve_model` (e.g. the validated background threshold).

    Returns:
        Keyword changes for :class:`groupvit.segmentation.SegmentationOptions` (or the pipeline).

    Example:
        >>> inference_options(64, {"background_threshold": 0.9})
        {'mode': 'whole', 'short_side': 64, 'background_threshold': 0.9}
    """
    options: dict[str, Any] = {"mode": "whole", "short_side": int(image_size)} if image_size < LOW_RESOLUTION else {}
    return {**options, **(settings or {})}
