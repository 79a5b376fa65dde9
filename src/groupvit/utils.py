"""Small helpers shared across the package's roles (inference, export, training validation)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with `model` in eval mode (BatchNorm running statistics, no dropout), then restore its mode.

    Gradients are untouched: combine with `torch.no_grad()` / `torch.inference_mode()` where needed.

    Example:
        ```python
        >>> model = nn.Dropout(0.5).train()
        >>> with eval_mode(model):
        ...     model.training
        False
        >>> model.training
        True

        ```
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
