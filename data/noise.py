"""Symmetric label noise, as in the intermediate neural collapse study (Galanti et al., TMLR 2023).

A fixed fraction of training labels is replaced by a *different* class drawn uniformly from the
other `num_classes - 1`. "Different" matters: drawing from all classes would leave about 1/K of the
chosen labels unchanged, so the true noise rate would silently be `fraction * (K - 1) / K`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from utils import seeded_generator


def apply_label_noise(labels: Tensor, *, fraction: float, num_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """Return (noisy_labels, changed_indices sorted ascending).

    Exactly round(fraction * N) labels change (Python's round: halves go to the even integer), each
    to a different class. Which indices and which new classes come from
    seeded_generator(seed, "label_noise") on the CPU, so the noise is the same on every device.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"label noise fraction must be in [0, 1], got {fraction}")
    count = round(fraction * labels.numel())
    if count and num_classes < 2:
        raise ValueError("label noise needs at least 2 classes (a changed label must differ)")
    generator = seeded_generator(seed, "label_noise")
    clean = labels.detach().to("cpu", torch.int64).reshape(-1)
    changed = torch.randperm(clean.numel(), generator=generator)[:count].sort().values
    # An offset in 1..K-1 added modulo K reaches each of the other K-1 classes exactly once,
    # so the new class is uniform over them and can never equal the old one.
    offsets = torch.randint(1, max(num_classes, 2), (count,), generator=generator)
    noisy = clean.clone()
    noisy[changed] = (clean[changed] + offsets) % num_classes
    return noisy.view_as(labels).to(labels.device), changed.to(labels.device)
