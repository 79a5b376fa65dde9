"""Registration of our classes with transformers' Auto classes.

`model_type="groupvit"` is the built-in GroupViT's type too, and the Hub checkpoints declare it. Registering with
`exist_ok=True` makes `AutoConfig`/`AutoModel`/`AutoProcessor` return our classes in this process. That is safe: our
config reads the same fields with the same defaults, and our model has the same parameter names and shapes, so every
checkpoint loads identically; `transformers.GroupViTModel` itself is untouched and can still be used directly.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoProcessor

from .configuration_groupvit import GroupViTConfig, GroupViTTextConfig, GroupViTVisionConfig
from .modeling_groupvit import GroupViTModel, GroupViTTextModel, GroupViTVisionModel
from .processing_groupvit import GroupViTProcessor


def register_auto_classes() -> None:
    """Make the Auto classes resolve `groupvit` (and its text/vision sub-types) to this package's classes."""
    AutoConfig.register("groupvit", GroupViTConfig, exist_ok=True)
    AutoConfig.register("groupvit_text_model", GroupViTTextConfig, exist_ok=True)
    AutoConfig.register("groupvit_vision_model", GroupViTVisionConfig, exist_ok=True)
    AutoModel.register(GroupViTConfig, GroupViTModel, exist_ok=True)
    AutoModel.register(GroupViTTextConfig, GroupViTTextModel, exist_ok=True)
    AutoModel.register(GroupViTVisionConfig, GroupViTVisionModel, exist_ok=True)
    AutoProcessor.register(GroupViTConfig, GroupViTProcessor, exist_ok=True)
