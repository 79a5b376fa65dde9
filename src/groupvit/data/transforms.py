"""Training augmentation: random resized crop, horizontal flip, colour jitter, normalisation.

The paper used DeiT-style augmentation from timm (RandomResizedCrop 224 with scale (0.08, 1), h-flip 0.5, ColorJitter
0.4, RandAugment m9, RandomErasing 0.25). This module builds the crop, flip and jitter from PIL and torch ops (no
torchvision); RandAugment and RandomErasing are not implemented. The normalisation constants are read from the
processor's image processor, so training and inference see the same pixel statistics.
"""

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance


@dataclass
class TrainTransform:
    """Augment a PIL image and return a normalised `(3, size, size)` float tensor.

    Args:
        image_size: Output side length.
        mean: Per-channel mean (0-1 scale).
        std: Per-channel std (0-1 scale).
        scale: Range of the crop area as a fraction of the image area (paper: (0.08, 1.0)).
        ratio: Range of the crop aspect ratio.
        hflip: Probability of a horizontal flip.
        color_jitter: Strength of brightness/contrast/saturation jitter (0 disables it).

    Example:
        ```python
        >>> import random
        >>> from PIL import Image
        >>> t = TrainTransform(32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        >>> t(Image.new("RGB", (50, 40)), random.Random(0)).shape
        torch.Size([3, 32, 32])
        ```
    """

    image_size: int
    mean: Sequence[float]
    std: Sequence[float]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    color_jitter: float = 0.4

    def crop_box(self, width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
        """A random (left, top, right, bottom) box, torchvision's RandomResizedCrop sampling rule."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                left, top = rng.randint(0, width - w), rng.randint(0, height - h)
                return left, top, left + w, top + h
        # fallback: the largest centred crop with a ratio inside the range
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def __call__(self, image: Image.Image, rng: random.Random) -> torch.Tensor:
        image = image.convert("RGB")
        box = self.crop_box(image.width, image.height, rng)
        image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC, box=box)
        if rng.random() < self.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.color_jitter > 0:
            for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                factor = rng.uniform(max(0.0, 1 - self.color_jitter), 1 + self.color_jitter)
                image = enhance(image).enhance(factor)
        # (H, W, 3) uint8 -> (3, H, W) float
        array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return (array - mean) / std


def transform_from_processor(processor, image_size: int | None = None, **kwargs) -> TrainTransform:
    """A `TrainTransform` using the processor's normalisation and crop size."""
    image_processor = processor.image_processor
    size = image_size or image_processor.crop_size["height"]
    return TrainTransform(size, mean=image_processor.image_mean, std=image_processor.image_std, **kwargs)
