"""The shipped demo model: a small GroupViT trained on synthetic captions, embedded in the package.

`resolve_model("demo")` returns its directory and the inference settings chosen on the validation split (stored in
its `demo.json`). When the package carries no trained demo model (a development checkout before one was trained),
a randomly initialised model of the same architecture stands in, with a warning.
"""

import json
import logging
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEMO_NAME = "demo"
DEMO_PRESET = "groupvit-demo"
DEMO_SETTINGS = "demo.json"
DEFAULT_SETTINGS = {"background_threshold": 0.5}


def demo_directory() -> Path:
    """Where the trained demo model lives inside the package."""
    return Path(str(resources.files("groupvit") / "resources" / "demo" / "model"))


def run_config_path() -> Path:
    """The training run file of the demo model."""
    return Path(str(resources.files("groupvit") / "resources" / "demo" / "run.yaml"))


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
        return name_or_path, load_settings(name_or_path) if Path(name_or_path).is_dir() else {}
    directory = demo_directory()
    if (directory / "model.safetensors").exists():
        return str(directory), load_settings(directory)
    logger.warning("This checkout has no trained demo model; using a RANDOMLY INITIALISED one (segments are noise)")
    stand_in = Path(tempfile.gettempdir()) / "groupvit-random-demo"
    if not (stand_in / "model.safetensors").exists():
        random_demo_model(stand_in)
    return str(stand_in), dict(DEFAULT_SETTINGS)
