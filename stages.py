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

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

import data
import devices
import models
from checkpointing import RunFolder, RunFolderError
from conf import Settings, SettingsError
from conf.plasticity import run_kind, stage1_settings
from utils import derive_seed



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
    record = {"pretrain_fraction": settings.pretrain_fraction, "pretrain_subset": settings.pretrain_subset,
              "size": len(indices), "indices": indices.tolist()}
    recorded = folder.read_subset()
    if recorded is None:
        folder.write_subset(record)
    elif recorded.get("indices") != record["indices"]:
        raise RunFolderError(f"{folder.subset_path} holds another subset than this run draws; refusing to mix data "
                             "(restore it, or delete the run folder)")


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
        devices.load_optimizer_state(optimizer, state["optimizer"])  # this device's kernel, not the saved one
    fresh = build_fresh()
    reset = models.reset_last_modules(model, fresh, optimizer, settings.reset_last)
    if settings.shrink != 1 or settings.perturb != 0:
        models.shrink_and_perturb(model, fresh, shrink=settings.shrink, perturb=settings.perturb, skip=reset)
    state_path = parent.resume_state_path(stage.first_iteration)
    lineage = {"parent_run_id": parent_id, "parent_iteration": stage.first_iteration,
               "parent_state": str(Path("..") / parent_id / state_path.relative_to(parent.path)),
               "parent_state_sha256": parent.resume_state_sha256(stage.first_iteration),
               "reset_modules": reset, "shrink": settings.shrink, "perturb": settings.perturb,
               "stage2_optimizer": settings.stage2_optimizer}
    folder.write_lineage({**folder.read_lineage(), **lineage})  # beside the environment record
    return lineage


def check_fits(settings: Settings, dataset: data.ImageDataset) -> None:
    """The pre-flight of train.py for one run: checks that need the dataset's size or the model's modules (known only once the data is read)."""
    try:
        models.check_builds(settings, input_shape=tuple(dataset.train_images.shape[1:]), num_classes=dataset.num_classes)
    except ValueError as error:
        raise SettingsError(str(error)) from None
    examples = len(dataset.train_labels)
    if settings.batch_size > examples:
        raise SettingsError(f"batch_size={settings.batch_size} exceeds the {examples} training examples of "
                            f"{settings.dataset}; accepted: 1..{examples}")
    check_stage_fits(settings, dataset.train_labels, tuple(dataset.train_images.shape[1:]), dataset.num_classes)
    if run_kind(settings) == "stage1":
        return  # checkpoint_extra is checked against its children's whole length; it keeps those in stage 1
    stage = plan_stage(settings, dataset.train_labels, dataset.num_classes)
    total = stage.first_iteration + settings.epochs * (examples // settings.batch_size)
    beyond = [iteration for iteration in settings.checkpoint_extra if iteration > total]
    if beyond:
        raise SettingsError(f"checkpoint_extra={list(settings.checkpoint_extra)} goes past the last iteration; "
                            f"accepted: iterations in 0..{total}")
