"""Training augmentation: the paper's DeiT-style pipeline, built from PIL and torch ops (no torchvision or timm).

The original trains with timm 0.4.12's `create_transform` (`groupvit_facts.md`, section 3): random resized crop (scale
0.08-1), horizontal flip 0.5, RandAugment `rand-m9-mstd0.5-inc1`, ImageNet normalisation, RandomErasing p=0.25 in
pixel mode. Its config also lists ColorJitter 0.4, which that timm version skips whenever RandAugment is on, so the
paper's images never saw it; here colour jitter is its own setting (`color_jitter`) and runs whenever it is above 0.
The normalisation constants are read from the processor's image processor, so training and inference see the same
pixel statistics.
"""

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

MAX_LEVEL = 10.0  # RandAugment magnitudes run from 0 to 10


def _signed(value: float, rng: random.Random) -> float:
    return -value if rng.random() < 0.5 else value


def _affine(image: Image.Image, matrix: tuple[float, ...], fill: tuple[int, ...]) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR, fillcolor=fill)


def _solarize_add(image: Image.Image, add: int, threshold: int = 128) -> Image.Image:
    lut = [min(255, i + add) if i < threshold else i for i in range(256)]
    return image.point(lut * len(image.getbands()))


def _enhance(kind: type, increasing: bool) -> Callable[[Image.Image, float, random.Random, tuple], Image.Image]:
    # increasing: factor 1 +- 0.9 * level / 10 (stronger with the magnitude); else 0.1 + 1.8 * level / 10
    def op(image: Image.Image, level: float, rng: random.Random, fill: tuple) -> Image.Image:
        factor = 1.0 + _signed(level / MAX_LEVEL * 0.9, rng) if increasing else level / MAX_LEVEL * 1.8 + 0.1
        return kind(image).enhance(factor)

    return op


def _posterize(increasing: bool) -> Callable[[Image.Image, float, random.Random, tuple], Image.Image]:
    def op(image: Image.Image, level: float, rng: random.Random, fill: tuple) -> Image.Image:
        bits = int(level / MAX_LEVEL * 4)
        return ImageOps.posterize(image, 4 - bits if increasing else bits)

    return op


def _solarize(increasing: bool) -> Callable[[Image.Image, float, random.Random, tuple], Image.Image]:
    def op(image: Image.Image, level: float, rng: random.Random, fill: tuple) -> Image.Image:
        threshold = int(level / MAX_LEVEL * 256)
        return ImageOps.solarize(image, 256 - threshold if increasing else threshold)

    return op


def _rotate(image: Image.Image, level: float, rng: random.Random, fill: tuple) -> Image.Image:
    return image.rotate(_signed(level / MAX_LEVEL * 30.0, rng), Image.Resampling.BILINEAR, fillcolor=fill)


def _shear(axis: int) -> Callable[[Image.Image, float, random.Random, tuple], Image.Image]:
    def op(image: Image.Image, level: float, rng: random.Random, fill: tuple) -> Image.Image:
        shear = _signed(level / MAX_LEVEL * 0.3, rng)
        return _affine(image, (1, shear, 0, 0, 1, 0) if axis == 0 else (1, 0, 0, shear, 1, 0), fill)

    return op


def _translate(axis: int) -> Callable[[Image.Image, float, random.Random, tuple], Image.Image]:
    def op(image: Image.Image, level: float, rng: random.Random, fill: tuple) -> Image.Image:
        fraction = _signed(level / MAX_LEVEL * 0.45, rng)
        if axis == 0:
            return _affine(image, (1, 0, fraction * image.width, 0, 1, 0), fill)
        return _affine(image, (1, 0, 0, 0, 1, fraction * image.height), fill)

    return op


def _no_level(function: Callable[[Image.Image], Image.Image]):
    return lambda image, level, rng, fill: function(image)


def _ops(increasing: bool) -> dict[str, Callable[[Image.Image, float, random.Random, tuple], Image.Image]]:
    suffix = "Increasing" if increasing else ""
    return {
        "AutoContrast": _no_level(ImageOps.autocontrast),
        "Equalize": _no_level(ImageOps.equalize),
        "Invert": _no_level(ImageOps.invert),
        "Rotate": _rotate,
        f"Posterize{suffix}": _posterize(increasing),
        f"Solarize{suffix}": _solarize(increasing),
        "SolarizeAdd": lambda image, level, rng, fill: _solarize_add(image, int(level / MAX_LEVEL * 110)),
        f"Color{suffix}": _enhance(ImageEnhance.Color, increasing),
        f"Contrast{suffix}": _enhance(ImageEnhance.Contrast, increasing),
        f"Brightness{suffix}": _enhance(ImageEnhance.Brightness, increasing),
        f"Sharpness{suffix}": _enhance(ImageEnhance.Sharpness, increasing),
        "ShearX": _shear(0),
        "ShearY": _shear(1),
        "TranslateXRel": _translate(0),
        "TranslateYRel": _translate(1),
    }


@dataclass(frozen=True)
class RandAugment:
    """RandAugment as timm's `rand-m{M}-n{N}-mstd{S}-inc{0|1}` policy strings define it.

    `num_ops` operations are drawn with replacement from the 15 below; each runs with probability `prob` at a
    magnitude drawn from N(`magnitude`, `magnitude_std`) and clipped to [0, 10]. `increasing=True` uses the variants
    whose strength grows with the magnitude (posterize keeps fewer bits, solarize a lower threshold, enhancements move
    further from 1 in a random direction). Geometric operations fill with `fill` (the normalisation mean, 0-255).

    Example:
        >>> RandAugment.from_policy("rand-m9-mstd0.5-inc1")
        RandAugment(magnitude=9.0, num_ops=2, magnitude_std=0.5, increasing=True, prob=0.5, fill=(128, 128, 128))
    """

    magnitude: float
    num_ops: int = 2
    magnitude_std: float = 0.0
    increasing: bool = False
    prob: float = 0.5
    fill: tuple[int, ...] = (128, 128, 128)
    ops: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.magnitude <= MAX_LEVEL:
            raise ValueError(f"RandAugment magnitude must be in [0, {MAX_LEVEL:g}], got {self.magnitude!r}")
        if self.num_ops < 1 or self.magnitude_std < 0 or not 0 <= self.prob <= 1:
            raise ValueError(
                f"RandAugment needs num_ops >= 1, magnitude_std >= 0 and prob in [0, 1]; got "
                f"num_ops={self.num_ops!r}, "
                f"magnitude_std={self.magnitude_std!r}, prob={self.prob!r}"
            )
        object.__setattr__(self, "ops", _ops(self.increasing))

    @classmethod
    def from_policy(cls, policy: str, fill: Sequence[int] = (128, 128, 128)) -> "RandAugment":
        """Parse a timm policy string: `rand` then `-`-separated `m<float>`, `n<int>`, `mstd<float>`, `inc<0|1>`."""
        parts = policy.split("-") if isinstance(policy, str) else []
        if not parts or parts[0] != "rand":
            raise ValueError(f"a RandAugment policy looks like 'rand-m9-mstd0.5-inc1', got {policy!r}")
        values: dict = {}
        for part in parts[1:]:
            key = next((k for k in ("mstd", "inc", "m", "n") if part.startswith(k)), None)
            try:
                value = float(part[len(key) :]) if key else None
            except ValueError:
                value = None
            if value is None:
                raise ValueError(f"unknown RandAugment policy part {part!r} in {policy!r} (m, n, mstd or inc)")
            values[key] = value
        if "m" not in values:
            raise ValueError(f"RandAugment policy {policy!r} has no magnitude (m<float>)")
        return cls(
            magnitude=values["m"],
            num_ops=int(values.get("n", 2)),
            magnitude_std=values.get("mstd", 0.0),
            increasing=bool(values.get("inc", 0)),
            fill=tuple(int(v) for v in fill),
        )

    def __call__(self, image: Image.Image, rng: random.Random) -> Image.Image:
        names = list(self.ops)
        for name in [rng.choice(names) for _ in range(self.num_ops)]:
            if rng.random() > self.prob:
                continue
            level = self.magnitude
            if self.magnitude_std > 0:
                level = min(MAX_LEVEL, max(0.0, rng.gauss(level, self.magnitude_std)))
            image = self.ops[name](image, level, rng, self.fill)
        return image


def random_erase(
    pixels: torch.Tensor,
    rng: random.Random,
    area: tuple[float, float] = (0.02, 1 / 3),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
) -> torch.Tensor:
    """Replace one random rectangle of a normalised `(C, H, W)` image with standard normal noise (timm's `pixel`
    mode, one box, up to 10 tries to fit it); the image is returned unchanged when no try fits."""
    channels, height, width = pixels.shape
    for _ in range(10):
        target = rng.uniform(*area) * height * width
        ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
        h, w = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w < width and 0 < h < height:
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            noise = np.random.default_rng(rng.getrandbits(64)).standard_normal((channels, h, w), dtype=np.float32)
            pixels = pixels.clone()
            pixels[:, top : top + h, left : left + w] = torch.from_numpy(noise)
            return pixels
    return pixels


@dataclass
class TrainTransform:
    """Augment a PIL image and return a normalised `(3, size, size)` float tensor.

    Order (timm's): random resized crop, horizontal flip, RandAugment, colour jitter, normalisation, random erasing.

    Args:
        image_size: Output side length.
        mean: Per-channel mean (0-1 scale).
        std: Per-channel std (0-1 scale).
        scale: Range of the crop area as a fraction of the image area (paper: (0.08, 1.0)).
        ratio: Range of the crop aspect ratio.
        hflip: Probability of a horizontal flip.
        color_jitter: Strength of brightness/contrast/saturation jitter (0 disables it).
        rand_augment: A timm RandAugment policy (paper: `"rand-m9-mstd0.5-inc1"`), or None.
        random_erasing: Probability of erasing one random box with noise (paper: 0.25).

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
    rand_augment: str | None = None
    random_erasing: float = 0.0

    def __post_init__(self) -> None:
        fill = tuple(min(255, round(255 * m)) for m in self.mean)
        self._rand_augment = RandAugment.from_policy(self.rand_augment, fill) if self.rand_augment else None
        if not 0 <= self.random_erasing <= 1:
            raise ValueError(f"random_erasing is a probability in [0, 1], got {self.random_erasing!r}")

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
        if self._rand_augment is not None:
            image = self._rand_augment(image, rng)
        if self.color_jitter > 0:
            for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                factor = rng.uniform(max(0.0, 1 - self.color_jitter), 1 + self.color_jitter)
                image = enhance(image).enhance(factor)
        # (H, W, 3) uint8 -> (3, H, W) float
        array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        pixels = (array - mean) / std
        if self.random_erasing > 0 and rng.random() < self.random_erasing:
            pixels = random_erase(pixels, rng)
        return pixels


def transform_from_processor(processor, image_size: int | None = None, **kwargs) -> TrainTransform:
    """A `TrainTransform` using the processor's normalisation and crop size."""
    image_processor = processor.image_processor
    size = image_size or image_processor.crop_size["height"]
    return TrainTransform(size, mean=image_processor.image_mean, std=image_processor.image_std, **kwargs)
