"""GroupViT ("Semantic Segmentation Emerges from Text Supervision") as a Hugging Face Transformers integration.

Importing `groupvit` registers our classes with transformers' Auto classes under `model_type="groupvit"` (replacing
the built-in GroupViT in `AutoConfig`/`AutoModel`/`AutoProcessor` for this process only; the weights are the same, see
the README) and registers the `zero-shot-image-segmentation` pipeline task.
"""

from .auto_registration import register_auto_classes
from .configuration_groupvit import GroupViTConfig, GroupViTTextConfig, GroupViTVisionConfig, available_presets
from .modeling_groupvit import (
    GroupViTModel,
    GroupViTModelOutput,
    GroupViTPreTrainedModel,
    GroupViTTextModel,
    GroupViTVisionModel,
)
from .processing_groupvit import GroupViTProcessor
from .segmentation.pipeline import ZeroShotImageSegmentationPipeline  # noqa: F401  (registers the task)

register_auto_classes()

__version__ = "0.1.0"

__all__ = [
    "GroupViTConfig",
    "GroupViTModel",
    "GroupViTModelOutput",
    "GroupViTPreTrainedModel",
    "GroupViTProcessor",
    "GroupViTTextConfig",
    "GroupViTTextModel",
    "GroupViTVisionConfig",
    "GroupViTVisionModel",
    "available_presets",
]
