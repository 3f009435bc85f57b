"""The staged protocols' settings: which stage a run trains, the run it starts from, and their checks.

Berariu et al. (2021) warm-start a network on part of the data (stage 1), then train it on all of it
(stage 2), optionally resetting the last k modules in between; Ash & Adams (2020) shrink and perturb
the weights instead; their appendix A.3 grows the data over n + 1 stages (`stages=n`). LearnPhase
(AAAI 2024) says what transfers peaks before the classifier is best: a child may start from any
checkpoint of its parent (`start_from_iteration`), and its parent may train on another dataset
(`pretrain_dataset`). A run is one of four kinds, read from its settings:

    scratch   no pretraining (pretrain_fraction=0, pretrain_dataset=same): one stage on all the data
    stage1    pretraining, epochs=0, stage=0: `pretrain_epochs` on stage 1's data — the shared first run
    stage     pretraining, epochs=0, stage=j (2..stages): stage j of growing data, from stage j-1's end
    child     pretraining, epochs>0: the last stage, from its parent's checkpoint (`parent_settings`)

A transfer child's parent is the plain run of `pretrain_dataset` (a scratch run when
pretrain_fraction=0, else that dataset's stage-1 run). Runs whose earlier stages are the same share
them, so every stage trains once.
"""

import dataclasses

from conf.errors import SettingsError

# Between the stages; a stage-1 run has no earlier stage, so its copies of these keep the defaults.
STAGE2_DEFAULTS = {"reset_last": 0, "shrink": 1.0, "perturb": 0.0, "stage2_optimizer": "fresh"}
# Only the last stage (a child) reads these; every earlier run keeps the defaults.
CHILD_DEFAULTS = {"start_from_iteration": "final", "start_phase_layer": "", "stage2_train": "all",
                  "pretrain_checkpoint_extra": ()}
# What only pretraining uses (the subset, stage 1's length, the interventions, transfer and growing data); a
# scratch run keeps the defaults.
PRETRAINING_DEFAULTS = {"pretrain_subset": "examples", "pretrain_epochs": 0, **STAGE2_DEFAULTS,
                        "pretrain_dataset": "same", "stages": 1, "stage": 0, **CHILD_DEFAULTS}
PLASTICITY_FIELDS = ("pretrain_fraction", *PRETRAINING_DEFAULTS)
START_WORDS = ("final", "phase")  # besides an iteration number


def pretrains(settings) -> bool:
    """Whether the run belongs to a staged protocol (pretraining on a subset or on another dataset)."""
    return settings.pretrain_fraction > 0 or settings.pretrain_dataset != "same"


def run_kind(settings) -> str:
    """scratch, stage1, stage or child (module docstring)."""
    if not pretrains(settings):
        return "scratch"
    if settings.epochs > 0:
        return "child"
    return "stage1" if settings.stage == 0 else "stage"


def transfers(settings) -> bool:
    """Whether a child starts from a parent's checkpoint other than its end, or from another dataset's run: a
    transfer child (LearnPhase's transfer read, figures/transfer.py), measured at its ends only by default."""
    return run_kind(settings) == "child" and (settings.start_from_iteration != "final"
                                              or settings.pretrain_dataset != "same")


def start_iteration_number(settings) -> int | None:
    """The iteration a child names in `start_from_iteration` (None for final and phase)."""
    text = settings.start_from_iteration
    return None if text in START_WORDS else int(text)


def _changed(settings, defaults: dict) -> list[str]:
    return [f"{key}={getattr(settings, key)}" for key, default in defaults.items() if getattr(settings, key) != default]


def check_plasticity(settings) -> None:
    """SettingsError for combinations that mean nothing: an intervention without pretraining,
    pretraining without epochs, a first stage with interventions, a start that is not an iteration."""
    start = settings.start_from_iteration
    if start not in START_WORDS and not (start.isascii() and start.isdigit()):
        raise SettingsError(f"start_from_iteration={start!r} is not an iteration; accepted: final, phase or an "
                            "iteration number of the parent, e.g. 0,256,final")
    changed = _changed(settings, PRETRAINING_DEFAULTS)
    if not pretrains(settings):
        if changed:
            raise SettingsError(f"{', '.join(changed)} needs pretraining, but pretrain_fraction=0 and "
                                "pretrain_dataset=same (from scratch); accepted: pretrain_fraction in (0, 1) or "
                                "pretrain_dataset=NAME, with pretrain_epochs >= 1")
        if settings.epochs == 0:
            raise SettingsError("epochs=0 trains nothing without pretraining; accepted: epochs >= 1, or epochs=0 "
                                "with pretrain_fraction in (0, 1) (a stage-1 run alone)")
        return
    if settings.pretrain_epochs == 0:
        what = (f"pretrain_fraction={settings.pretrain_fraction}" if settings.pretrain_fraction
                else f"pretrain_dataset={settings.pretrain_dataset}")
        raise SettingsError(f"{what} needs stage 1's length; accepted: pretrain_epochs >= 1")
    check_stages(settings)
    check_child(settings)


def check_stages(settings) -> None:
    """Growing data (Berariu et al. 2021, App. A.3): `stages` and the filled-in `stage` of an earlier run."""
    if settings.stages > 1 and (settings.pretrain_fraction == 0 or settings.pretrain_dataset != "same"):
        raise SettingsError(f"stages={settings.stages} grows one dataset from pretrain_fraction to all of it; "
                            "accepted: pretrain_fraction in (0, 1) with pretrain_dataset=same")
    if settings.stage and not (settings.epochs == 0 and 2 <= settings.stage <= settings.stages):
        raise SettingsError(f"stage={settings.stage} names one of the shared earlier stages 2..stages of a run with "
                            f"stages={settings.stages} and epochs=0 (the grid fills it in); accepted: stage=0")
    if settings.epochs > 0:
        return
    if settings.pretrain_dataset != "same":
        raise SettingsError(f"pretrain_dataset={settings.pretrain_dataset} with epochs=0 trains nothing on "
                            f"{settings.dataset}; the parent is that dataset's own run: accepted: epochs >= 1")
    between = STAGE2_DEFAULTS if settings.stage == 0 else {}
    ignored = _changed(settings, {**between, **CHILD_DEFAULTS})
    if ignored:
        raise SettingsError(f"{', '.join(ignored)} acts between the stages, but epochs=0 has no stage 2 (an earlier "
                            "stage alone); accepted: epochs >= 1")


def check_child(settings) -> None:
    """What a child's start allows: an optimizer state exists only at a warm-start parent's end."""
    if settings.start_phase_layer and settings.start_from_iteration != "phase":
        raise SettingsError(f"start_phase_layer={settings.start_phase_layer} names the layer whose phases choose the "
                            f"start, but start_from_iteration={settings.start_from_iteration}; accepted: "
                            "start_from_iteration=phase")
    if settings.stages > 1 and settings.start_from_iteration != "final":
        raise SettingsError(f"stages={settings.stages}: each stage starts from the previous one's end; accepted: "
                            "start_from_iteration=final")
    if settings.stage2_optimizer == "kept" and (settings.start_from_iteration != "final"
                                                or settings.pretrain_dataset != "same"):
        raise SettingsError("stage2_optimizer=kept needs the optimizer state of the parent's end on the same data; "
                            "accepted with start_from_iteration other than final or another pretrain_dataset: "
                            "stage2_optimizer=fresh")


def _stage1_milestones(settings) -> tuple:
    return tuple(milestone for milestone in settings.lr_milestones if milestone < settings.pretrain_epochs)


def parent_settings(settings):
    """The run a child or a later stage starts from (module docstring). Every run with the same
    earlier stages names the same parent: the stage-2 keys of a first stage are at their defaults,
    and only the lr milestones that fall inside its epochs are kept."""
    kind = run_kind(settings)
    if kind == "stage":
        if settings.stage > 2:
            return dataclasses.replace(settings, stage=settings.stage - 1)
        return dataclasses.replace(settings, stage=0, stages=1, **STAGE2_DEFAULTS)  # D_1 does not depend on n
    if kind != "child":
        raise ValueError(f"{settings.run_id} is a {kind} run and has no parent")
    first_stage = {**STAGE2_DEFAULTS, **CHILD_DEFAULTS, "epochs": 0, "lr_milestones": _stage1_milestones(settings)}
    if settings.stages > 1:
        return dataclasses.replace(settings, **{**CHILD_DEFAULTS, "epochs": 0, "stage": settings.stages,
                                                "lr_milestones": first_stage["lr_milestones"]})
    extra = settings.checkpoint_extra
    if settings.pretrain_checkpoint_extra:  # the children's start iterations off the log schedule
        extra = tuple(sorted({*extra, *settings.pretrain_checkpoint_extra}))
    if settings.pretrain_dataset == "same":
        return dataclasses.replace(settings, **first_stage, checkpoint_extra=extra)
    own = {**first_stage, "dataset": settings.pretrain_dataset, "pretrain_dataset": "same",
           "checkpoint_extra": extra}
    if settings.pretrain_fraction > 0:  # that dataset's stage-1 run
        return dataclasses.replace(settings, **own)
    # the plain from-scratch run of the other dataset: any grid that trains it shares it
    return dataclasses.replace(settings, **{**own, **PRETRAINING_DEFAULTS, "epochs": settings.pretrain_epochs})


def has_parent(settings) -> bool:
    return run_kind(settings) in ("stage", "child")


@dataclasses.dataclass(frozen=True)
class Lineage:
    """A run and the runs it starts from, each with its kind and the start it names, worked out once
    (`lineage_of`): train.py's pre-flight reads this value down the lineage instead of asking these rules again
    at every step of the parent's length."""

    settings: object  # conf.Settings
    kind: str  # run_kind
    start_number: int | None  # start_iteration_number of a child; None otherwise, or for final and phase
    parent: "Lineage | None"  # the run it starts from (parent_settings), with its own lineage


def lineage_of(settings) -> Lineage:
    """The run's Lineage: its kind, and its parent's lineage for a stage or child."""
    kind = run_kind(settings)
    if kind not in ("stage", "child"):
        return Lineage(settings, kind, None, None)
    number = start_iteration_number(settings) if kind == "child" else None
    return Lineage(settings, kind, number, lineage_of(parent_settings(settings)))


def lineages(grid: tuple, *, parents: bool = True) -> tuple:
    """Each run of the grid as its Lineage, worked out once for every reader downstream (the pre-flight, the
    launcher's waves, the status table); `parents=True` adds the runs they start from first (with_parents)."""
    return tuple(lineage_of(settings) for settings in (with_parents(grid) if parents else grid))


def with_parents(grid: tuple) -> tuple:
    """The grid with every run's parent (and its parent's, down to the first stage) before its first
    child, once: runs that share earlier stages share their runs (module docstring)."""
    runs: dict = {}

    def add(settings) -> None:
        if settings.run_id in runs:
            return
        if has_parent(settings):
            add(parent_settings(settings))
        runs[settings.run_id] = settings

    for settings in grid:
        add(settings)
    return tuple(runs.values())


def off_schedule(iteration: int) -> bool:
    """An iteration the log-spaced schedule (0 and the powers of two) does not checkpoint."""
    return iteration != 0 and iteration & (iteration - 1) != 0


def with_start_checkpoints(grid: tuple) -> tuple:
    """The grid with each child's `pretrain_checkpoint_extra` holding every start iteration off the log
    schedule that a child of the same parent asks for: added to the parent's checkpoint schedule, so
    one parent trains once for all of them."""
    wanted: dict[str, set] = {}
    for settings in grid:
        number = start_iteration_number(settings) if run_kind(settings) == "child" else None
        if number is not None and off_schedule(number):
            wanted.setdefault(_parent_key(settings), set()).add(number)
    if not wanted:
        return grid
    filled = []
    for settings in grid:
        extra = wanted.get(_parent_key(settings)) if run_kind(settings) == "child" else None
        if extra:
            settings = dataclasses.replace(settings, pretrain_checkpoint_extra=tuple(
                sorted(extra | set(settings.pretrain_checkpoint_extra))))
        filled.append(settings)
    return tuple(filled)


def _parent_key(settings) -> str:
    return parent_settings(dataclasses.replace(settings, pretrain_checkpoint_extra=())).run_id


def canonical_scratch(values: dict) -> dict:
    """A grid point without pretraining (keyword values), with the pretraining keys at their defaults:
    a grid sweeping pretrain_fraction over 0 and other values, e.g. `pretrain_fraction=0,0.5
    reset_last=0,4`, then holds one scratch baseline, not one per reset."""
    if values.get("pretrain_fraction", 0) != 0 or values.get("pretrain_dataset", "same") != "same":
        return values
    return {**values, **{key: default for key, default in PRETRAINING_DEFAULTS.items() if key in values}}
