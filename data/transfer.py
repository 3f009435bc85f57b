"""Transfer tasks: labels computed from the images themselves, never used to train the network.

Colour dominance (Schneider & Prabhushankar, AAAI 2024): which of R, G, B has the largest summed
pixel value. A probe on a layer's features for this task first gains, then loses accuracy as the
network discards class-irrelevant colour information; the synthetic dataset's per-image colour cast
makes the three colours balanced and independent of the class.
"""

from __future__ import annotations

import torch
from torch import Tensor

COLOURS = ("red", "green", "blue")


def colour_dominance_labels(images: Tensor) -> Tensor:
    """int64 [N] in {0: red, 1: green, 2: blue}: argmax over channels of the summed uint8 pixels.

    Sums are exact int64 (a float32 sum could tie-break differently on another device); exact ties
    go to the first channel.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"colour dominance needs RGB [N, 3, H, W] images, got {tuple(images.shape)}")
    return images.to(torch.int64).sum(dim=(2, 3)).argmax(dim=1)
