"""What happens to a network between the two stages of a warm start (Berariu et al. 2021).

    fresh = models.build(settings, ...)          # a new initialisation, drawn from its own seed
    reset = reset_last_modules(model, fresh, optimizer, k=4)     # the last 4 of model.module_groups()
    shrink_and_perturb(model, fresh, shrink=0.4, perturb=0.1, skip=reset)

Both act in place on `model` (and `optimizer`); `fresh` is only read.
"""

from __future__ import annotations

import torch
from torch import nn

from models.base import LayerwiseModel


def _qualified_names(model: nn.Module) -> dict[int, str]:
    return {id(module): name for name, module in model.named_modules()}


@torch.no_grad()
def reset_last_modules(model: LayerwiseModel, fresh: LayerwiseModel, optimizer: torch.optim.Optimizer,
                       k: int) -> list[str]:
    """Give the last k module groups (stem, blocks or stages, head: `module_groups()`) the parameters
    *and* buffers of `fresh`, and drop their optimizer state (momentum, Adam moments and step): a
    reset unit that kept stale momentum would not start like a new one (Berariu et al. 2021, Fig. 6).
    The other modules and their optimizer state are untouched. Returns the reset groups' names."""
    groups = model.module_groups()
    if not 0 <= k <= len(groups):
        raise ValueError(f"reset_last={k} but the model has {len(groups)} modules "
                         f"({', '.join(name for name, _ in groups)}); accepted: 0..{len(groups)}")
    names = _qualified_names(model)
    chosen = groups[len(groups) - k:]
    for _, modules in chosen:
        for module in modules:
            module.load_state_dict(fresh.get_submodule(names[id(module)]).state_dict())
            for parameter in module.parameters():
                optimizer.state.pop(parameter, None)
    return [name for name, _ in chosen]


@torch.no_grad()
def shrink_and_perturb(model: LayerwiseModel, fresh: LayerwiseModel, *, shrink: float, perturb: float,
                       skip: list[str] = ()) -> None:
    """θ ← shrink·θ + perturb·θ_fresh for every parameter outside the groups named in `skip` (Ash &
    Adams 2020: the noise is a fresh initialisation, so each layer's noise has its init's scale).
    Buffers (BatchNorm's running statistics) are left alone: training re-estimates them."""
    skipped = {id(parameter) for name, modules in model.module_groups() if name in skip
               for module in modules for parameter in module.parameters()}
    for parameter, fresh_parameter in zip(model.parameters(), fresh.parameters()):
        if id(parameter) not in skipped:
            parameter.mul_(shrink).add_(fresh_parameter, alpha=perturb)
