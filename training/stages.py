"""python train.py pretrain_fraction=0.5 pretrain_epochs=350 epochs=500 reset_last=4 — the stage a run trains.

The staged protocols (Berariu et al. 2021, with App. A.3's growing data; Ash & Adams 2020; transfer
after LearnPhase, AAAI 2024) as seen by `training.run`: which examples a run trains on, from which
global iteration, and — for a run with a parent — the state it starts from: a checkpoint of its
parent (its end, an iteration number, or where the parent's phases say), after the interventions.
The settings side (run kinds, the parent's settings, the checks) is conf/plasticity.py.

    start = resolve_start(settings, folder)                   # StartPoint(iteration, epoch, rule); runs with a parent
    stage = plan_stage(settings, train_labels, num_classes, start)   # Stage(number, first_iteration, ...)
    lineage = start_from_parent(settings, folder, model, optimizer, build_fresh, stage, start)

Iterations count on through every stage: a child's first iteration is the parent iteration it starts
from, so one log-spaced checkpoint schedule covers the lineage and each checkpoint records its stage.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

import data
import models
from conf import Settings, SettingsError
from conf.plasticity import Lineage, lineages, parent_settings, run_kind, start_iteration_number
from folders import ExperimentFolder, RunFolder, RunFolderError
from training import devices
from utils import derive_seed


class ParentNotReady(RuntimeError):
    """A run was started before its parent finished (or after the parent lost the state it starts from)."""


@dataclass(frozen=True)
class Stage:
    number: int  # 1: a scratch run's only stage, or the first stage; 2..stages+1: later ones (a child: the last)
    first_iteration: int  # the global iteration the stage starts at (its parent's start point)
    epochs: int  # passes over the stage's examples
    indices: Tensor | None  # the stage's training examples (None: the whole training split)
    stream_seed: int  # the data order's seed: each later stage draws a new one, so it does not replay the last
    epoch_offset: float  # epochs trained before this stage, along the lineage


@dataclass(frozen=True)
class StartPoint:
    """Where a run with a parent starts: the parent's iteration, its epoch there, and the rule that chose it."""

    iteration: int
    epoch: float
    rule: str


def checkpoint_schedule(*, total_iterations: int, iterations_per_epoch: int, every_epochs: int = 0,
                        extra: tuple[int, ...] = (), first_iteration: int = 0) -> list[int]:
    """The first iteration, first + every power of two, the final iteration, every `every_epochs`
    epochs from the first, and the `extra` iterations between first and final.

    Powers of two because the learning phases (LearnPhase, AAAI 2024) happen on a log time scale:
    their sample log checkpoints at 0, 2, 4, ..., 65536. A warm-started child's stage 2 starts at its
    parent's last iteration and is log-spaced from there, so what the switch does shows up at once."""
    points = {first_iteration, total_iterations,
              *(iteration for iteration in extra if first_iteration <= iteration <= total_iterations)}
    power = 1
    while first_iteration + power < total_iterations:
        points.add(first_iteration + power)
        power *= 2
    if every_epochs:
        step = every_epochs * iterations_per_epoch
        points.update(range(first_iteration + step, total_iterations + 1, step))
    return sorted(points)


def plan_stage(settings: Settings, train_labels: Tensor, num_classes: int, start: StartPoint | None = None) -> Stage:
    """The stage this run trains. `train_labels`: the labels it trains on (after label noise), which
    choose the classes of a class subset; `start`: resolve_start's, for a run with a parent. DataError
    when a subset is empty, everything, or no larger than the stage before."""
    kind = run_kind(settings)
    if kind == "scratch":
        return Stage(1, 0, settings.epochs, None, settings.seed, 0)
    if kind == "stage1":
        return Stage(1, 0, settings.pretrain_epochs, stage_subset(settings, train_labels, num_classes), settings.seed, 0)
    if kind == "stage":
        return Stage(settings.stage, start.iteration, settings.pretrain_epochs,
                     stage_subset(settings, train_labels, num_classes), derive_seed(settings.seed, f"stage {settings.stage}"),
                     start.epoch)
    number = settings.stages + 1
    return Stage(number, start.iteration, settings.epochs, None,
                 derive_seed(settings.seed, f"stage {number}"), start.epoch)


def stage_subset(settings: Settings, train_labels: Tensor, num_classes: int) -> Tensor:
    """The examples of a first or shared earlier stage (data/subsets.py: App. A.3's D_i)."""
    return data.stage_indices(train_labels, fraction=settings.pretrain_fraction, unit=settings.pretrain_subset,
                              seed=settings.seed, num_classes=num_classes, stages=settings.stages,
                              stage=max(settings.stage, 1))


def trained_labels(settings: Settings, dataset: data.ImageDataset) -> tuple[Tensor, Tensor | None]:
    """(the labels the run trains on, the indices label noise changed or None): IntermediateNC's noisy runs."""
    if settings.label_noise == 0:
        return dataset.train_labels, None
    return data.apply_label_noise(dataset.train_labels, fraction=settings.label_noise,
                                  num_classes=dataset.num_classes, seed=settings.seed)


def labels_recorded(settings: Settings, dataset: data.ImageDataset, folder: RunFolder) -> Tensor:
    """The labels the run trains on; with label noise, which were changed and to what is written to the
    run folder (the analysis needs the trained-on labels)."""
    labels, changed = trained_labels(settings, dataset)
    if changed is not None:
        folder.write_label_noise({"fraction": settings.label_noise, "indices": changed.tolist(),
                                  "original": dataset.train_labels[changed].tolist(), "noisy": labels[changed].tolist()})
    return labels


def record_subset(folder: RunFolder, settings: Settings, indices: Tensor) -> None:
    """Save the stage's examples on the first start; on every later start require the same ones (a
    resumed stage must not see other data)."""
    record = {"pretrain_fraction": settings.pretrain_fraction, "pretrain_subset": settings.pretrain_subset,
              "stages": settings.stages, "stage": max(settings.stage, 1), "size": len(indices),
              "indices": indices.tolist()}
    recorded = folder.read_subset()
    if recorded is None:
        folder.write_subset(record)
    elif recorded.get("indices") != record["indices"]:
        raise RunFolderError(f"{folder.subset_path} holds another subset than this run draws; refusing to mix data "
                             "(restore it, or delete the run folder)")


def parent_folder(settings: Settings, folder: RunFolder) -> RunFolder:
    """The parent run's folder: a sibling in the same experiment's runs/."""
    return RunFolder(folder.path.parent / parent_settings(settings).run_id)


def resolve_start(settings: Settings, folder: RunFolder) -> StartPoint:
    """Where a run with a parent starts: what its lineage recorded at its first start (a resume keeps that start,
    though the parent's phases.csv may name another since), else the parent's checkpoint `start_from_iteration`
    names (ParentNotReady while the parent is not done). RunFolderError when the lineage holds part of a start."""
    recorded = folder.read_lineage()
    if "parent_iteration" in recorded:
        missing = [key for key in ("parent_epoch", "start_rule") if key not in recorded]
        if missing:
            raise RunFolderError(f"{folder.lineage_path} names a parent iteration but no {', '.join(missing)}; restore "
                                 "it or delete the run folder")
        return StartPoint(recorded["parent_iteration"], recorded["parent_epoch"], recorded["start_rule"])
    parent = parent_folder(settings, folder)
    status = parent.read_status()
    if status.get("state", "new") != "done":
        raise ParentNotReady(f"its parent run {parent.path.name} is {status.get('state', 'new')}, not done; it runs "
                             "first when the grid is launched (python train.py status ... shows why it stopped)")
    iteration, rule = chosen_iteration(settings, parent, status["total_iterations"])
    entry = parent.checkpoint_entries().get(iteration)
    if entry is None:
        raise ParentNotReady(f"its parent run {parent.path.name} has no checkpoint at iteration {iteration}; launch the "
                             "children with their parent in one grid (it adds their start iterations to its schedule)")
    return StartPoint(iteration, entry["epoch"], rule)


def chosen_iteration(settings: Settings, parent: RunFolder, parent_total: int) -> tuple[int, str]:
    """(the parent iteration `start_from_iteration` names, the rule in words)."""
    number = start_iteration_number(settings)
    if number is not None:
        return number, f"start_from_iteration={number}"
    if settings.start_from_iteration == "final":
        return parent_total, "the parent's final iteration"
    return phase_start(settings, ExperimentFolder(parent.path.parent.parent), parent.path.name)


def phase_start(settings: Settings, experiment: ExperimentFolder, parent_id: str) -> tuple[int, str]:
    """start_from_iteration=phase: the parent's 'stop pre-training here' (its condition's transfer-probe peak on
    the seed-mean curve, LearnPhase) at `start_phase_layer` or its last hidden layer, from the analysis's
    phases.csv: the same iteration the report states for that condition.
    SettingsError (one line, with the command to run) when the parent's phases are not measured."""
    fix = (f"train the parent, then run `python analysis.py experiment={experiment.path.name} ...` (it writes "
           f"{experiment.phases_path.name}), or start from final or an iteration number")
    rows = []
    if experiment.phases_path.exists():
        with open(experiment.phases_path, newline="") as handle:
            # one row per condition and layer, on the seed-mean curves (findings/phases.py): the parent's condition's
            rows = [row for row in csv.DictReader(handle) if parent_id in row.get("runs", "").split(", ")]
    hidden = [row for row in rows if row["layer"] not in ("input", "logits")]
    if settings.start_phase_layer:
        hidden = [row for row in rows if row["layer"] == settings.start_phase_layer]
        if rows and not hidden:
            raise SettingsError(f"start_phase_layer={settings.start_phase_layer} is not a layer of {parent_id}'s phase "
                                f"table; accepted: {', '.join(row['layer'] for row in rows)}")
    chosen = max(hidden, key=lambda row: int(row["layer_index"]), default=None)
    peak = float(chosen["transfer_peak"]) if chosen and chosen["transfer_peak"] else math.nan
    if not math.isfinite(peak):
        what = "has no phase table yet" if not rows else "has no transfer-probe peak in its phase table"
        raise SettingsError(f"start_from_iteration=phase: the parent run {parent_id} {what}; {fix}")
    layer = chosen["layer"]
    return int(peak), f"phase: the transfer-probe peak of {layer} in {experiment.phases_path.name} (stop pre-training here)"


def start_from_parent(settings: Settings, folder: RunFolder, model: models.LayerwiseModel,
                      optimizer: torch.optim.Optimizer, build_fresh: Callable[[], models.LayerwiseModel],
                      stage: Stage, start: StartPoint) -> dict:
    """Load the parent's model at the start point (its end: the resume state, with stage2_optimizer=kept
    its optimizer state too; another iteration: that checkpoint), rebuild the modules that do not fit
    (a head for other classes), then the interventions: reset the last `reset_last` modules to a fresh
    initialisation with their optimizer state cleared, and shrink-and-perturb the others towards it.
    Writes lineage.json."""
    parent = parent_folder(settings, folder)
    state, state_path, state_sha256 = parent_state(parent, start.iteration)
    fresh = build_fresh()
    if settings.stage2_optimizer == "kept":
        devices.load_optimizer_state(optimizer, state["optimizer"])  # this device's kernel, not the saved one
    rebuilt = models.load_transferable(model, fresh, optimizer, state["model"], new_task=settings.pretrain_dataset != "same")
    reset = models.reset_last_modules(model, fresh, optimizer, settings.reset_last)
    if settings.shrink != 1 or settings.perturb != 0:
        models.shrink_and_perturb(model, fresh, shrink=settings.shrink, perturb=settings.perturb,
                                  skip=[*reset, *(group for group, _ in rebuilt)])
    lineage = {"parent_run_id": parent.path.name, "parent_iteration": start.iteration, "parent_epoch": start.epoch,
               "start_rule": start.rule, "parent_state": str(Path("..") / parent.path.name / state_path.relative_to(parent.path)),
               "parent_state_sha256": state_sha256, "rebuilt_modules": [f"{group}: {why}" for group, why in rebuilt],
               "reset_modules": reset, "shrink": settings.shrink, "perturb": settings.perturb,
               "stage2_optimizer": settings.stage2_optimizer, "stage2_train": settings.stage2_train}
    folder.write_lineage({**folder.read_lineage(), **lineage})  # beside the environment record
    return lineage


def parent_state(parent: RunFolder, iteration: int) -> tuple[dict, Path, str]:
    """(state with "model" and, at a staged parent's end, "optimizer"; its file; its sha256), verified."""
    kind = run_kind(parent.read_settings())
    if kind in ("stage1", "stage") and parent.read_status().get("total_iterations") == iteration:
        state = parent.load_resume_state(at_most=iteration)
        if state is None or state["iteration"] != iteration:
            raise ParentNotReady(f"its parent run {parent.path.name} has no final state at iteration {iteration}; "
                                 "delete that run's folder and launch again to retrain it")
        return state, parent.resume_state_path(iteration), parent.resume_state_sha256(iteration)
    checkpoint = parent.load_checkpoint(iteration)  # checked against the manifest's sha256
    return checkpoint, parent.checkpoint_path(iteration), parent.checkpoint_entries()[iteration]["sha256"]


DatasetOf = Callable[[Settings], data.ImageDataset]


def run_length(run: Lineage, dataset_of: DatasetOf, experiment: ExperimentFolder) -> int:
    """The run's last iteration, from its settings and data alone (train.py's pre-flight: nothing trained yet)."""
    return planned_first(run, dataset_of, experiment) + own_iterations(run, dataset_of(run.settings))


def own_examples(run: Lineage, dataset: data.ImageDataset) -> int:
    """How many examples the run's own stage trains on (a first or earlier stage: its subset)."""
    labels, _ = trained_labels(run.settings, dataset)
    if run.kind in ("stage1", "stage"):
        return len(stage_subset(run.settings, labels, dataset.num_classes))
    return len(labels)


def own_iterations(run: Lineage, dataset: data.ImageDataset) -> int:
    epochs = run.settings.pretrain_epochs if run.kind in ("stage1", "stage") else run.settings.epochs
    return epochs * (own_examples(run, dataset) // run.settings.batch_size)


def planned_first(run: Lineage, dataset_of: DatasetOf, experiment: ExperimentFolder) -> int:
    """The run's first iteration as its first start will choose it (SettingsError for a start the parent lacks)."""
    if run.parent is None:
        return 0
    parent, settings = run.parent, run.settings
    parent_total = run_length(parent, dataset_of, experiment)
    number = run.start_number
    if number is None:
        return (parent_total if settings.start_from_iteration == "final"
                else phase_start(settings, experiment, parent.settings.run_id)[0])
    schedule = checkpoint_schedule(total_iterations=parent_total, first_iteration=planned_first(parent, dataset_of, experiment),
                                   iterations_per_epoch=own_examples(parent, dataset_of(parent.settings)) // parent.settings.batch_size,
                                   every_epochs=parent.settings.checkpoint_every_epochs, extra=parent.settings.checkpoint_extra)
    if number not in schedule:
        raise SettingsError(f"start_from_iteration={number} is not an iteration of the parent run {parent.settings.run_id} "
                            f"(its last is {parent_total}); accepted: 0..{parent_total} (launch the children with their "
                            "parent in one grid: off-schedule ones are added to its checkpoints), final or phase")
    return number


def check_stage_fits(run: Lineage, dataset: data.ImageDataset) -> None:
    """Checks of a staged run that need its data and model (SettingsError / DataError, one line each)."""
    settings, kind = run.settings, run.kind
    if kind == "scratch":
        return
    if kind in ("stage1", "stage") or settings.pretrain_dataset == "same":
        first_stage = settings if kind != "child" else run.parent.settings
        labels, _ = trained_labels(first_stage, dataset)
        subset_size = len(stage_subset(first_stage, labels, dataset.num_classes))
        if subset_size < settings.batch_size:
            raise SettingsError(f"pretrain_fraction={settings.pretrain_fraction} leaves {subset_size} examples for "
                                f"stage {max(first_stage.stage, 1)}, fewer than batch_size={settings.batch_size}; "
                                f"accepted: a larger fraction or batch_size <= {subset_size}")
    input_shape = tuple(dataset.train_images.shape[1:])
    with torch.device("meta"):  # the module structure only: no memory, no initialisation
        groups = models.build(settings, input_shape=input_shape, num_classes=dataset.num_classes).module_groups()
    if settings.reset_last > len(groups):
        raise SettingsError(f"reset_last={settings.reset_last} but {settings.arch} has {len(groups)} modules "
                            f"({', '.join(name for name, _ in groups)}); accepted: 0..{len(groups)}")
    if settings.stage2_train == "head" and settings.reset_last == len(groups):
        raise SettingsError(f"stage2_train=head trains the head on frozen features, but reset_last={settings.reset_last} "
                            f"resets all {len(groups)} modules (random features); accepted: reset_last <= {len(groups) - 1}"
                            " or stage2_train=all")


def check_grid_fits(grid: tuple[Settings, ...], execution, experiment: ExperimentFolder) -> None:
    """train.py's pre-flight of a grid: every dataset readable, every subset, reset and start possible, for each run
    and the runs it starts from (children first: a start is checked against its parent's length before the
    parent's own checks). SettingsError / DataError (one line) before anything is written."""
    def dataset_of(settings: Settings) -> data.ImageDataset:
        return data.load_dataset(settings, data_root=Path(execution.data_root), download=execution.download)

    for run in reversed(lineages(grid)):  # the kinds and parents along each lineage, worked out once
        check_fits(run, dataset_of(run.settings), dataset_of, experiment)


def check_fits(run: Lineage, dataset: data.ImageDataset, dataset_of: DatasetOf | None = None,
               experiment: ExperimentFolder | None = None) -> None:
    """The pre-flight of train.py for one run: checks that need the dataset's size, the model's modules or
    the parent's length (known only once the data is read). `dataset_of` loads another run's data (the
    parent's); `experiment`: where the parent's phase table is."""
    settings = run.settings
    try:
        models.check_builds(settings, input_shape=tuple(dataset.train_images.shape[1:]), num_classes=dataset.num_classes)
    except ValueError as error:
        raise SettingsError(str(error)) from None
    examples = len(dataset.train_labels)
    if settings.batch_size > examples:
        raise SettingsError(f"batch_size={settings.batch_size} exceeds the {examples} training examples of "
                            f"{settings.dataset}; accepted: 1..{examples}")
    check_stage_fits(run, dataset)
    if run.kind in ("stage1", "stage"):
        return  # checkpoint_extra is checked against its children's whole length; it keeps those in earlier stages
    dataset_of = dataset_of or (lambda other: dataset)
    total = run_length(run, dataset_of, experiment or ExperimentFolder("."))
    beyond = [iteration for iteration in settings.checkpoint_extra if iteration > total]
    if beyond:
        raise SettingsError(f"checkpoint_extra={list(settings.checkpoint_extra)} goes past the last iteration; "
                            f"accepted: iterations in 0..{total}")
