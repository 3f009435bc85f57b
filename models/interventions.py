"""What happens to a network between two stages: warm start (Berariu et al. 2021) and transfer.

    fresh = models.build(settings, ...)          # a new initialisation, drawn from its own seed
    reset = reset_last_modules(model, fresh, optimizer, k=4)     # the last 4 of model.module_groups()
    shrink_and_perturb(model, fresh, shrink=0.4, perturb=0.1, skip=reset)
    rebuilt = load_transferable(model, fresh, optimizer, parent_state)   # [(group, why)]: head for new classes
    frozen = freeze_all_but_head(model)          # stage2_train=head

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


def _group_keys(model: LayerwiseModel) -> list[tuple[str, set[str]]]:
    """Each module group's state_dict keys (parameters and buffers), in the model's own naming."""
    names = _qualified_names(model)
    return [(group, {f"{names[id(module)]}.{key}" if names[id(module)] else key
                     for module in modules for key in module.state_dict()})
            for group, modules in model.module_groups()]


@torch.no_grad()
def load_transferable(model: LayerwiseModel, fresh: LayerwiseModel, optimizer: torch.optim.Optimizer,
                      state: dict, new_task: bool = False) -> list[tuple[str, str]]:
    """Load a parent's `state` into `model` wherever it fits; a module group with a tensor the parent
    lacks or holds in another shape (a head for other classes, a stem for other channels, a position
    table for another image size) takes `fresh`'s instead, with its optimizer state dropped, and so
    does the head on a `new_task` (another dataset's classes mean other things, even as many). Returns
    those groups and why, as ('head', 'head.weight [10, 32] -> [100, 32]')."""
    own, names = model.state_dict(), _qualified_names(model)
    rebuilt, kept = [], {}
    groups = _group_keys(model)
    for position, (group, keys) in enumerate(groups):
        misfit = next((key for key in sorted(keys) if key not in state or state[key].shape != own[key].shape), None)
        if misfit is None and new_task and position == len(groups) - 1:
            rebuilt.append((group, "the classes of another dataset"))
        elif misfit is None:
            kept.update({key: state[key] for key in keys})
        else:
            before = list(state[misfit].shape) if misfit in state else "absent"
            rebuilt.append((group, f"{misfit} {before} -> {list(own[misfit].shape)}"))
    model.load_state_dict({**own, **kept})
    chosen = {group for group, _ in rebuilt}
    for name, modules in model.module_groups():
        for module in modules if name in chosen else ():
            module.load_state_dict(fresh.get_submodule(names[id(module)]).state_dict())
            for parameter in module.parameters():
                optimizer.state.pop(parameter, None)
    return rebuilt


def freeze_all_but_head(model: LayerwiseModel) -> list[nn.Module]:
    """stage2_train=head: every module group but the last (the head) stops learning — no gradients,
    and BatchNorm's running statistics fixed (the caller keeps the returned modules in eval mode),
    so the head is a linear probe trained by SGD on frozen features (LearnPhase's transfer reading)."""
    frozen = [module for _, modules in model.module_groups()[:-1] for module in modules]
    for module in frozen:
        module.requires_grad_(False)
    return frozen
