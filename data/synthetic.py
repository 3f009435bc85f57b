"""The embedded `synthetic` dataset: learnable classes plus class-irrelevant, reconstructable factors.

Every image is built from four factors, each there for a reason:

1. Class pattern (the signal the classifier must find). Class k owns a fixed prototype: a
   constellation of three Gabor patches (oriented gratings under Gaussian windows) at fixed offsets
   from a centre. A sample places it at a random offset (up to 1/5 of the side, +-6 px at 32 px),
   with a random contrast and a random grating phase, and adds it to the luminance. The phase
   jitter makes the class-mean image flat grey, so no linear template on pixels works (a linear
   classifier stays near chance), while orientation, frequency and layout survive: on 5000
   images of 32 px a small 3-layer CNN reaches ~100% test accuracy in ~100 SGD steps (seconds on
   a CPU) and a one-hidden-layer MLP ~94% in ~800 steps; not trivially linear, but learnable.
2. Colour cast: an independent random gain per channel (R, G, B), multiplying the whole image.
   It is the target of the colour-dominance transfer probe (argmax over R, G, B of the summed
   pixels): the gains are drawn identically for the three channels, so the three colours are
   balanced, and independently of the class, so the probe cannot be solved through the class.
3. Background texture: low-resolution Gaussian noise (4 x 4 per channel) upsampled bilinearly.
   A smooth, high-variance, class-irrelevant component that a linear decoder can reconstruct.
4. Per-pixel noise: small, irreducible; keeps reconstruction losses away from exactly zero.

Why class-irrelevant information at all: the learning phases of Schneider & Prabhushankar
(AAAI 2024) are read from a linear decoder's reconstruction loss back to the input (flat, falling,
then rising as layers discard what the labels do not need) and from the colour-dominance probe
(gaining, then losing accuracy). Both curves only move if the input carries variance the labels do
not explain; a dataset that is all class signal would leave them flat.

The prototypes are a fixed part of the task (their seed does not involve data_seed); data_seed
redraws the samples, and the training and test splits use separate streams, so changing the test
size does not change the training set. Generation is vectorised over samples: 6000 images of
32 x 32 take a fraction of a second.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as functional
from torch import Tensor

from utils import seeded_generator

COMPONENTS_PER_CLASS = 3  # Gabor patches per prototype: enough that classes differ in layout, not one orientation
FREQUENCY_RANGE = (2.5, 6.0)  # grating cycles per image side: periods of 5..13 px at 32 px
ENVELOPE_WIDTH = 0.16  # Gaussian window standard deviation, as a fraction of the side (about 1.5 periods)
COMPONENT_SPREAD = 0.22  # patch centres within +-22% of the side around the prototype centre
MAXIMUM_SHIFT = 0.2  # per-sample placement offset, fraction of the side (+-6 px at 32 px)
PATTERN_AMPLITUDE = 0.15  # luminance units (0..1) of a full-contrast grating
PHASE_JITTER = math.pi  # per-sample grating phase, +-radians: the class-mean image averages to flat grey
CONTRAST_RANGE = (0.5, 1.0)
GAIN_RANGE = (0.6, 1.25)  # per-channel colour gain: a clearly visible cast, rarely clipped
BACKGROUND_GRID = 4  # the background is 4 x 4 noise per channel, upsampled: smooth, not pixel noise
BACKGROUND_AMPLITUDE = 0.15
PIXEL_NOISE = 0.05


def _uniform(low: float, high: float, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    # float32 throughout: float64 made generation 3x slower for no visible difference after uint8 rounding.
    return low + (high - low) * torch.rand(shape, generator=generator)


def class_prototypes(num_classes: int) -> dict[str, Tensor]:
    """Per class and component: orientation, frequency, phase and patch offset (float32 [K, J])."""
    generator = seeded_generator("synthetic", "prototypes", num_classes)
    shape = (num_classes, COMPONENTS_PER_CLASS)
    return {
        "orientation": _uniform(0.0, math.pi, shape, generator),
        "frequency": _uniform(*FREQUENCY_RANGE, shape, generator),
        "phase": _uniform(0.0, 2 * math.pi, shape, generator),
        "offset_row": _uniform(-COMPONENT_SPREAD, COMPONENT_SPREAD, shape, generator),
        "offset_column": _uniform(-COMPONENT_SPREAD, COMPONENT_SPREAD, shape, generator),
    }


def generate_split(count: int, *, num_classes: int, image_size: int, seed: int, split: str) -> tuple[Tensor, Tensor]:
    """`count` balanced samples as (uint8 [count, 3, S, S] images, int64 [count] labels)."""
    generator = seeded_generator(seed, "synthetic", split)
    size = image_size
    # Balanced: labels cycle through the classes, then are shuffled.
    labels = (torch.arange(count) % num_classes)[torch.randperm(count, generator=generator)]
    # Per-sample factors, all drawn up front in a fixed order (the order is part of the seed contract).
    shift_row = _uniform(-MAXIMUM_SHIFT, MAXIMUM_SHIFT, (count, 1), generator)
    shift_column = _uniform(-MAXIMUM_SHIFT, MAXIMUM_SHIFT, (count, 1), generator)
    contrast = _uniform(*CONTRAST_RANGE, (count, 1, 1), generator)
    phase_jitter = _uniform(-PHASE_JITTER, PHASE_JITTER, (count, 1, 1), generator)
    gains = _uniform(*GAIN_RANGE, (count, 3, 1, 1), generator)
    background = torch.randn((count, 3, BACKGROUND_GRID, BACKGROUND_GRID), generator=generator)
    pixel_noise = torch.randn((count, 3, size, size), generator=generator)

    # Pixel-centre coordinates in units of the image side, relative to each sample's pattern centre.
    coordinates = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    rows = (coordinates[None, :] - shift_row)[:, None, :]  # [count, 1, S]
    columns = (coordinates[None, :] - shift_column)[:, None, :]
    prototype = {key: value[labels][:, :, None] for key, value in class_prototypes(num_classes).items()}  # [count, J, 1]
    # A Gabor patch is separable: cos(a + b) e^(-r^2) e^(-c^2) = (cos a e^(-r^2))(cos b e^(-c^2))
    # - (sin a e^(-r^2))(sin b e^(-c^2)), with a from the row and b from the column. So the pattern
    # is one batched [S, 2J] x [2J, S] matrix product per sample: no [count, S, S] temporaries per
    # component. The phase is measured from the sample centre, so a shift moves the pattern rigidly.
    angle, frequency = prototype["orientation"], 2 * math.pi * prototype["frequency"]
    row_phase = frequency * torch.sin(angle) * rows + prototype["phase"] + phase_jitter  # [count, J, S]
    column_phase = frequency * torch.cos(angle) * columns
    width = 2 * ENVELOPE_WIDTH**2
    row_window = torch.exp(-(rows - prototype["offset_row"]) ** 2 / width)
    column_window = torch.exp(-(columns - prototype["offset_column"]) ** 2 / width)
    row_factors = torch.cat([torch.cos(row_phase) * row_window, -torch.sin(row_phase) * row_window], dim=1)
    column_factors = torch.cat([torch.cos(column_phase) * column_window, torch.sin(column_phase) * column_window], dim=1)
    pattern = row_factors.transpose(1, 2) @ column_factors  # [count, S, S]

    # Bilinear upsampling is separable too: smooth = U @ background @ U^T with U [S, G].
    upsample = functional.interpolate(torch.eye(BACKGROUND_GRID)[None], size=size, mode="linear",
                                      align_corners=False)[0].T
    images = upsample @ background @ upsample.T  # [count, 3, S, S]
    images.mul_(BACKGROUND_AMPLITUDE).add_((0.5 + PATTERN_AMPLITUDE * contrast * pattern)[:, None])
    images.mul_(gains).add_(pixel_noise.mul_(PIXEL_NOISE))
    images = images.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
    return images, labels


def make_synthetic(*, num_classes: int, image_size: int, train_size: int, test_size: int,
                   seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train_images, train_labels, test_images, test_labels), deterministic from `seed`."""
    if num_classes < 2:
        raise ValueError(f"synthetic needs at least 2 classes, got {num_classes}")
    common = {"num_classes": num_classes, "image_size": image_size, "seed": seed}
    train_images, train_labels = generate_split(train_size, split="train", **common)
    test_images, test_labels = generate_split(test_size, split="test", **common)
    return train_images, train_labels, test_images, test_labels
