"""The training examples of each stage of the staged protocols (Berariu et al. 2021).

    indices = stage_indices(labels, fraction=0.5, unit="examples", seed=0, num_classes=10)  # a warm start's stage 1
    indices = stage_indices(labels, fraction=0.5, unit="classes", seed=0, num_classes=10, stages=4, stage=2)

Drawn from the run's `seed` (so seeds differ in their subsets too) and returned sorted, as indices
into the training split; the run saves them (stage1_subset.json) and checks them on resume.

Growing data (App. A.3): with n = `stages`, stage i of n + 1 trains on D_i = D_{i-1} ∪ D_{u,i} ∪
{examples of the classes C_i}, and D_{n+1} is the whole set. Stage i holds the share
f + (1 - f)(i - 1)/n of the examples (unit=examples: D_u is the whole set, cut into n + 1 parts along
one random order; no class is held back) or of the classes (unit=classes: every example of a growing
set of classes along one random order of the classes; D_u is empty). Stage 1 is the two-stage
protocol's subset whatever n is, so every n shares it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from conf.errors import DataError
from utils import seeded_generator


def stage_sizes(total: int, fraction: float, stages: int) -> list[int]:
    """How many of the `total` examples (or classes) stages 1..stages + 1 hold: round(share · total)."""
    return [round((fraction + (1 - fraction) * (stage - 1) / stages) * total) for stage in range(1, stages + 1)] + [total]


def stage_indices(labels: Tensor, *, fraction: float, unit: str, seed: int, num_classes: int, stages: int = 1,
                  stage: int = 1) -> Tensor:
    """int64 [M] sorted indices of the training examples of stage `stage` (1..stages) of growing data
    (module docstring); unit=classes keeps the labels' numbers, so the head has all C outputs from the start.
    DataError (one line) when a stage would be empty, the whole set, or no larger than the one before."""
    generator = seeded_generator(seed, "stage 1 subset", unit)
    if unit not in ("examples", "classes"):
        raise ValueError(f"unknown pretrain_subset {unit!r}; accepted: examples, classes")
    total = len(labels) if unit == "examples" else num_classes
    sizes = stage_sizes(total, fraction, stages)
    if not 0 < sizes[0] < total:
        raise DataError(f"pretrain_fraction={fraction} selects {sizes[0]} of the {total} training {unit}; "
                        f"accepted: a fraction that selects 1..{total - 1} of them")
    if any(later <= earlier for earlier, later in zip(sizes, sizes[1:])):
        raise DataError(f"stages={stages} with pretrain_fraction={fraction} gives stages of {', '.join(map(str, sizes))} "
                        f"{unit} of {total}: a stage would add none; accepted: fewer stages, a smaller pretrain_fraction "
                        "or pretrain_subset=examples")
    order = torch.randperm(total, generator=generator)[:sizes[stage - 1]]
    if unit == "classes":
        order = torch.isin(labels.cpu(), order).nonzero().flatten()
    return order.sort().values
