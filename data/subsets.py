"""Stage 1's training subset in the plasticity protocols (Berariu et al. 2021).

    indices = stage1_indices(labels, fraction=0.5, kind="examples", seed=0, num_classes=10)

Drawn from the run's `seed` (so seeds differ in their subset too) and returned sorted, as indices
into the training split; the run saves them (stage1_subset.json) and checks them on resume.
"""

from __future__ import annotations

import torch
from torch import Tensor

from data.dataset import DataError
from utils import seeded_generator


def stage1_indices(labels: Tensor, *, fraction: float, kind: str, seed: int, num_classes: int) -> Tensor:
    """int64 [M] sorted indices of the training examples stage 1 trains on.

    examples: round(fraction·N) examples, uniformly at random (the paper's warm start: half the data).
    classes: every example of round(fraction·C) classes chosen at random (its class-incremental
    variant); the labels keep their numbers, so the head has all C outputs from the start.
    DataError (one line) when the subset would be empty or the whole set.
    """
    generator = seeded_generator(seed, "stage 1 subset", kind)
    if kind == "examples":
        size, total = round(fraction * len(labels)), len(labels)
        chosen = torch.randperm(total, generator=generator)[:size]
    elif kind == "classes":
        size, total = round(fraction * num_classes), num_classes
        classes = torch.randperm(num_classes, generator=generator)[:size]
        chosen = torch.isin(labels.cpu(), classes).nonzero().flatten()
    else:
        raise ValueError(f"unknown pretrain_subset {kind!r}; accepted: examples, classes")
    if not 0 < size < total:
        raise DataError(f"pretrain_fraction={fraction} selects {size} of the {total} training {kind}; "
                        f"accepted: a fraction that selects 1..{total - 1} of them")
    return chosen.sort().values
