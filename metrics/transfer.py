"""Transfer-task labels for the probe of LearnPhase (Schneider & Prabhushankar, AAAI 2024).

The colour-dominance task (which of R, G, B has the largest summed pixel value) is defined once, in
data/transfer.py; this module re-exports it and extends it to float images.
"""

from __future__ import annotations

from torch import Tensor
import torch

from data.transfer import COLOURS, colour_dominance_labels

__all__ = ["COLOURS", "colour_dominance", "colour_dominance_labels"]


def colour_dominance(images: Tensor) -> Tensor:
    """int64 [B] in {0: red, 1: green, 2: blue}: argmax over channels of the summed UNnormalised pixels.

    images [B, 3, H, W], uint8 or float. Integer images go to data.transfer.colour_dominance_labels
    (exact int64 sums); float images are summed in float64, because its int64 cast would truncate
    pixels in [0, 1] to 0. Exact ties go to the first channel either way.
    """
    if not images.is_floating_point():
        return colour_dominance_labels(images)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"colour dominance needs RGB [B, 3, H, W] images, got {tuple(images.shape)}")
    return images.to(torch.float64).sum(dim=(2, 3)).argmax(dim=1)
