"""python train.py pretrain_fraction=0.5 pretrain_epochs=350 epochs=500 reset_last=4 — the stage a run trains.

The plasticity protocols (Berariu et al. 2021; Ash & Adams 2020) as seen by `training.run`: which
examples a run trains on, from which global iteration, and — for a warm-started child — the state it
starts from: its parent's final state, after the interventions between the stages. The settings side
(run kinds, the parent's settings, the checks) is conf/plasticity.py.

    stage = plan_stage(settings, train_labels, num_classes)   # Stage(number, first_iteration, epochs, indices, stream_seed)
    lineage = start_from_parent(settings, folder, model, optimizer, build_fresh, stage)   # children only

Iterations count on through stage 2: a child's first iteration is its parent's last, so one
log-spaced checkpoint schedule covers both stages and each checkpoint records its stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

import data
import models
from checkpointing import RunFolder
from conf import Settings, SettingsError
from conf.plasticity import run_kind, stage1_settings
from utils import atomic_write_json, derive_seed

SUBSET_FILE = "stage1_subset.json"  # a stage-1 run's training examples (indices into the training split)
LINEAGE_FILE = "lineage.json"  # a child's parent, the state it started from, and what was done to it


class ParentNotReady(RuntimeError):
    """A child was started before its stage-1 run finished (or after that run lost its final state)."""


@dataclass(frozen=True)
class Stage:
    number: int  # 1: a scratch run's only stage, or stage 1 of the protocol; 2: a child's stage 2
    first_iteration: int  # the global iteration the stage starts at (a child: its parent's last)
    epochs: int  # passes over the stage's examples
    indices: Tensor | None  # the stage's training examples (None: the whole training split)
    stream_seed: int  # the data order's seed: stage 2 draws a new one, so it does not replay stage 1's
    epoch_offset: int  # epochs trained before this stage (a child: pretrain_epochs)


def plan_stage(settings: Settings, train_labels: Tensor, num_classes: int) -> Stage:
    """The stage this run trains. `train_labels`: the labels it trains on (after label noise), which
    choose the classes of a class subset. DataError when the subset is empty or everything."""
    kind = run_kind(settings)
    if kind == "scratch":
        return Stage(1, 0, settings.epochs, None, settings.seed, 0)
    subset = stage1_indices_of(settings, train_labels, num_classes)
    if kind == "stage1":
        return Stage(1, 0, settings.pretrain_epochs, subset, settings.seed, 0)
    stage1_iterations = settings.pretrain_epochs * (len(subset) // settings.batch_size)
    return Stage(2, stage1_iterations, settings.epochs, None, derive_seed(settings.seed, "stage 2"),
                 settings.pretrain_epochs)


def check_stage_fits(settings: Settings, train_labels: Tensor, input_shape, num_classes: int) -> None:
    """Checks that need the data and the model (SettingsError / DataError, one line each)."""
    if run_kind(settings) == "scratch":
        return
    subset_size = len(stage1_indices_of(settings, train_labels, num_classes))
    if subset_size < settings.batch_size:
        raise SettingsError(f"pretrain_fraction={settings.pretrain_fraction} leaves {subset_size} examples for "
                            f"stage 1, fewer than batch_size={settings.batch_size}; accepted: a larger fraction or "
                            f"batch_size <= {subset_size}")
    with torch.device("meta"):  # the module structure only: no memory, no initialisation
        groups = models.build(settings, input_shape=input_shape, num_classes=num_classes).module_groups()
    if settings.reset_last > len(groups):
        raise SettingsError(f"reset_last={settings.reset_last} but {settings.arch} has {len(groups)} modules "
                            f"({', '.join(name for name, _ in groups)}); accepted: 0..{len(groups)}")


def stage1_indices_of(settings: Settings, train_labels: Tensor, num_classes: int) -> Tensor:
    return data.stage1_indices(train_labels, fraction=settings.pretrain_fraction, kind=settings.pretrain_subset,
                               seed=settings.seed, num_classes=num_classes)


def record_subset(folder: RunFolder, settings: Settings, indices: Tensor) -> None:
    """Save stage 1's examples on the first start; on every later start require the same ones (a
    resumed stage 1 must not see other data)."""
    path = folder.path / SUBSET_FILE
    record = {"pretrain_fraction": settings.pretrain_fraction, "pretrain_subset": settings.pretrain_subset,
              "size": len(indices), "indices": indices.tolist()}
    if path.exists():
        if json.loads(path.read_text())["indices"] != record["indices"]:
            raise RuntimeError(f"{path} holds another subset than this run draws; refusing to mix data")
        return
    atomic_write_json(path, record)


def parent_folder(settings: Settings, folder: RunFolder) -> RunFolder:
    """The stage-1 run's folder: a sibling in the same experiment's runs/."""
    return RunFolder(folder.path.parent / stage1_settings(settings).run_id)


def start_from_parent(settings: Settings, folder: RunFolder, model: models.LayerwiseModel,
                      optimizer: torch.optim.Optimizer, build_fresh: Callable[[], models.LayerwiseModel],
                      stage: Stage) -> dict:
    """Load the parent's final model (and, with stage2_optimizer=kept, its optimizer state), then
    apply the interventions: reset the last `reset_last` modules to a fresh initialisation with their
    optimizer state cleared, and shrink-and-perturb the others towards it. Writes lineage.json."""
    parent = parent_folder(settings, folder)
    parent_id = parent.path.name
    state_name = parent.read_status().get("state", "new")
    if state_name != "done":
        raise ParentNotReady(f"its stage-1 run {parent_id} is {state_name}, not done; it runs first when the grid "
                             f"is launched (python train.py status ... shows why it stopped)")
    state = parent.load_resume_state(at_most=stage.first_iteration)
    if state is None or state["iteration"] != stage.first_iteration:
        raise ParentNotReady(f"its stage-1 run {parent_id} has no final state at iteration {stage.first_iteration}; "
                             f"delete that run's folder and launch again to retrain it")
    model.load_state_dict(state["model"])
    if settings.stage2_optimizer == "kept":
        optimizer.load_state_dict(state["optimizer"])
    fresh = build_fresh()
    reset = models.reset_last_modules(model, fresh, optimizer, settings.reset_last)
    if settings.shrink != 1 or settings.perturb != 0:
        models.shrink_and_perturb(model, fresh, shrink=settings.shrink, perturb=settings.perturb, skip=reset)
    state_path = parent.resume / f"state_{stage.first_iteration:08d}.pt"
    lineage = {"parent_run_id": parent_id, "parent_iteration": stage.first_iteration,
               "parent_state": str(Path("..") / parent_id / state_path.relative_to(parent.path)),
               "parent_state_sha256": state_path.with_suffix(".sha256").read_text().strip(),
               "reset_modules": reset, "shrink": settings.shrink, "perturb": settings.perturb,
               "stage2_optimizer": settings.stage2_optimizer}
    atomic_write_json(folder.path / LINEAGE_FILE, lineage)
    return lineage
