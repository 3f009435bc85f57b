"""The plasticity protocols' settings: which stage a run trains, its shared parent, and their checks.

Berariu et al. (2021) warm-start a network on part of the data (stage 1), then train it on all of it
(stage 2), optionally resetting the last k modules in between; Ash & Adams (2020) shrink and perturb
the weights instead. A run is one of three kinds, read from its settings:

    scratch   pretrain_fraction=0: one stage on all the data (every run without pretraining)
    stage1    pretrain_fraction>0, epochs=0: `pretrain_epochs` on the subset — the shared parent
    child     pretrain_fraction>0, epochs>0: starts from its parent's final state (stage1_settings)

Children whose stage 1 is the same share one parent run, so stage 1 is trained once.
"""

import dataclasses

from conf.errors import SettingsError

# Between the stages; a stage-1 run has no stage 2, so its copies of these keep the defaults.
STAGE2_DEFAULTS = {"reset_last": 0, "shrink": 1.0, "perturb": 0.0, "stage2_optimizer": "fresh"}
# What only pretraining uses; a scratch run keeps the defaults.
PRETRAINING_DEFAULTS = {"pretrain_subset": "examples", "pretrain_epochs": 0, **STAGE2_DEFAULTS}
PLASTICITY_FIELDS = ("pretrain_fraction", *PRETRAINING_DEFAULTS)


def run_kind(settings) -> str:
    """scratch, stage1 or child (module docstring)."""
    if settings.pretrain_fraction == 0:
        return "scratch"
    return "stage1" if settings.epochs == 0 else "child"


def check_plasticity(settings) -> None:
    """SettingsError for combinations that mean nothing: an intervention without pretraining,
    pretraining without epochs, a stage-1 run with stage-2 interventions."""
    changed = [f"{key}={getattr(settings, key)}" for key, default in PRETRAINING_DEFAULTS.items()
               if getattr(settings, key) != default]
    if settings.pretrain_fraction == 0:
        if changed:
            raise SettingsError(f"{', '.join(changed)} needs pretraining, but pretrain_fraction=0 (from scratch); "
                                "accepted: pretrain_fraction in (0, 1) with pretrain_epochs >= 1")
        if settings.epochs == 0:
            raise SettingsError("epochs=0 trains nothing without pretraining; accepted: epochs >= 1, or epochs=0 "
                                "with pretrain_fraction in (0, 1) (a stage-1 run alone)")
        return
    if settings.pretrain_epochs == 0:
        raise SettingsError(f"pretrain_fraction={settings.pretrain_fraction} needs stage 1's length; "
                            "accepted: pretrain_epochs >= 1")
    stage2 = [f"{key}={getattr(settings, key)}" for key, default in STAGE2_DEFAULTS.items()
              if getattr(settings, key) != default]
    if settings.epochs == 0 and stage2:
        raise SettingsError(f"{', '.join(stage2)} acts between the stages, but epochs=0 has no stage 2; "
                            "accepted: epochs >= 1")


def stage1_settings(settings):
    """The parent run of a child: the same settings with no stage 2 (epochs=0, the stage-2 keys at
    their defaults, and only the lr milestones that fall inside stage 1), so every child with the
    same stage 1 names the same parent."""
    if run_kind(settings) != "child":
        raise ValueError(f"{settings.run_id} is a {run_kind(settings)} run and has no parent")
    milestones = tuple(milestone for milestone in settings.lr_milestones if milestone < settings.pretrain_epochs)
    return dataclasses.replace(settings, epochs=0, lr_milestones=milestones, **STAGE2_DEFAULTS)


def canonical_scratch(values: dict) -> dict:
    """A grid point with pretrain_fraction=0 (keyword values), with the pretraining keys at their
    defaults: a grid sweeping pretrain_fraction over 0 and other values, e.g.
    `pretrain_fraction=0,0.5 reset_last=0,4`, then holds one scratch baseline, not one per reset."""
    if values.get("pretrain_fraction", 0) != 0:
        return values
    return {**values, **{key: default for key, default in PRETRAINING_DEFAULTS.items() if key in values}}
