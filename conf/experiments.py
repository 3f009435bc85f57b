"""Experiments: `python train.py experiment=NAME|FILE.py [key=value ...]`, then `python analysis.py experiment=...`.

An experiment is a preset of run settings; a list value sweeps that key, and several swept keys
form a Cartesian grid. An experiment may hold several grids (a tuple of presets): its runs are
their union, e.g. the demo's collapse runs and its warm-start runs. Command-line values replace the
preset's value for the same key in every grid. Runs of an experiment live under
`<out_dir>/<experiment>/runs/`. The papers' hyper-parameters are those of their published code's
READMEs (LearnPhase, AAAI 2024; IntermediateNC, TMLR 2023) and of the plasticity paper's appendix
(Berariu et al. 2021); where a paper is silent, the choice is ours and says so in `notes`.

`experiment=` takes three things (`read_experiment`):
- a preset's name (EXPERIMENTS below);
- a name of one's own (letters, digits, `_`, `-`, `.`; not starting with `.`): its own folder
  `<out_dir>/NAME/`, the grid from the command line alone, as the default experiment's;
- a preset file of one's own, `path/to/my_study.py` (relative to the working directory): a Python file
  that defines `EXPERIMENT = Experiment("my_study", "what it studies", {"depth": [2, 4], ...})`, an
  entry of the same shape as those below, named as the file's stem (its folder). It is imported (it runs
  as code), checked (keys and values as run settings) and carried in the Plan by value: a Slurm job
  never reads the file again. The experiment folder records the file's absolute path
  (folders.ExperimentFolder.check_preset): another file of the same stem is refused there.
"""

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from conf.errors import SettingsError
from conf.global_settings import SETTING_FIELDS
from conf.global_settings import _check_value as check_value  # one field's type and range, as the command line's
from conf.user_files import UserFileError, import_user_file

DEFAULT_EXPERIMENT = "default"

# LearnPhase's sample log: VGG-8 on CIFAR-10, SGD lr 0.002 momentum 0.9 batch 128, checkpoints at
# 0, 2, 4, ..., 65536 iterations. Their loop keeps the last partial batch (391 iterations per epoch);
# ours drops it (390), so 169 epochs = 65 910 iterations reach the power of two 65 536.
LEARNPHASE = {"dataset": "cifar10", "arch": "vgg", "depth": 8, "width": 32, "optimizer": "sgd", "lr": 0.002,
              "momentum": 0.9, "weight_decay": 0.0, "batch_size": 128, "lr_schedule": "constant", "epochs": 169,
              "augment": False}

# IntermediateNC's Fig. 1 recipe: CONV-L-400, batch 128, lr 0.1 x0.1 at epochs 60, 120, 160,
# momentum 0.9, weight decay 5e-4, 500 epochs; checkpoints also every 25 epochs for the late ones.
INTERMEDIATE_NC = {"dataset": "cifar10", "arch": "convnet", "depth": [3, 5, 8, 12, 16, 20], "width": 400,
                   "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "lr_schedule": "multistep",
                   "lr_milestones": (60, 120, 160), "lr_gamma": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                   "epochs": 500, "checkpoint_every_epochs": 25}

# Berariu et al. (2021), appendix A.4-A.5: the ResNet-18 family (blocks per stage d, base width w),
# pretrain on half the data for 350 epochs, tune on all of it for 500, resetting the last 0, 4 or 5 of
# the modules stem, stage1-4, head. The pages we have do not give the optimiser: SGD lr 0.01,
# momentum 0.9, weight decay 5e-4, constant lr, augmentation on (our choice).
PLASTICITY = {"dataset": "cifar10", "arch": "resnet", "depth": [1, 2, 3], "width": [32, 64], "augment": True,
              "batch_size": 128, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
              "lr_schedule": "constant", "pretrain_fraction": [0, 0.5], "pretrain_epochs": 350, "epochs": 500,
              "reset_last": [0, 4, 5], "checkpoint_every_epochs": 25}

# The demo: the three stories on the embedded synthetic data, small enough for a laptop CPU.
DEMO_COLLAPSE = {"dataset": "synthetic", "arch": "convnet", "depth": [2, 4], "width": 32, "label_noise": [0.0, 0.2],
                 "epochs": 12, "lr": 0.02, "lr_schedule": "multistep", "lr_milestones": (8,), "batch_size": 128}
# Warm start on synthetic data: with SGD the warm-started net always caught up (gap < 1 point over a
# dozen settings tried); with Adam, 16 px images and 2000 examples, pretraining 30 epochs on half then
# 20 on all ends ~17 points below scratch (3 seeds: 0.10-0.20), and resetting the last 2 modules
# (block02, head) recovers it all — Berariu et al.'s picture, in ~15 s of CPU per seed.
DEMO_WARM_START = {"dataset": "synthetic", "arch": "convnet", "depth": 3, "width": 16, "image_size": 16,
                   "synthetic_train_size": 2000, "optimizer": "adam", "lr": 0.001, "batch_size": 64,
                   "lr_schedule": "constant", "epochs": 20, "pretrain_fraction": [0, 0.5], "pretrain_epochs": 30,
                   "reset_last": [0, 2], "seed": [0, 1]}

# Transfer from the parent's checkpoints (LearnPhase's "leveraging" claim), on the embedded data: a parent
# learns 5 of the 10 synthetic classes (pretrain_subset=classes); children learn all 10 from its
# checkpoints at 0, 16, 64, 256 and its end, fine-tuning everything or only the head on frozen features.
# The head-only children read how well the parent's features at that iteration serve classes it never saw.
DEMO_TRANSFER = {**DEMO_WARM_START, "pretrain_subset": "classes", "pretrain_epochs": 20, "epochs": 3, "reset_last": 0,
                 "pretrain_fraction": 0.5, "start_from_iteration": ["0", "16", "64", "256", "final"],
                 "stage2_train": ["all", "head"], "seed": 0}

# LearnPhase's own pair: VGG-8 pre-trained on CIFAR-10 with their recipe, children on CIFAR-100 from its
# checkpoints (the parent trains once for all of them); 30 epochs of fine-tuning is our choice.
LEARNPHASE_TRANSFER = {**LEARNPHASE, "dataset": "cifar100", "pretrain_dataset": "cifar10", "pretrain_epochs": 169,
                       "epochs": 30, "stage2_train": ["all", "head"],
                       "start_from_iteration": ["0", "256", "1024", "4096", "16384", "65536", "final"]}


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    settings: dict | tuple = field(default_factory=dict)  # key -> value or list to sweep; or a tuple of such grids
    notes: str = ""
    source: str = ""  # a preset file's absolute path (experiment=FILE.py); "" for the presets below

    def grids(self) -> tuple[dict, ...]:
        return self.settings if isinstance(self.settings, tuple) else (self.settings,)


EXPERIMENTS = {
    experiment.name: experiment
    for experiment in (
        Experiment(DEFAULT_EXPERIMENT, "one run of the defaults (what a plain `python train.py` runs)"),
        Experiment("demo", "the three stories on synthetic data, on a CPU in minutes: CONV-L-32 of two depths with "
                   "clean and 20% noisy labels (phases, collapse), scratch vs warm start vs reset (plasticity), and "
                   "children learning all classes from checkpoints of a parent that saw half of them (transfer)",
                   (DEMO_COLLAPSE, DEMO_WARM_START, DEMO_TRANSFER)),
        Experiment("learnphase", "LearnPhase (AAAI 2024): VGG-8 on CIFAR-10, SGD lr 0.002, checkpoints 0, 2, 4, ..., "
                   "65536; reconstruction and colour-dominance probes (python analysis.py ... transfer_dataset=cifar100 "
                   "for their README's CIFAR-100 transfer images)", LEARNPHASE,
                   "weight decay, augmentation and schedule are not in their README: 0, none, constant"),
        Experiment("learnphase_transfer", "LearnPhase's claim acted on: VGG-8 pre-trained on CIFAR-10 once (their "
                   "recipe), children fine-tuned (all, or the head on frozen features) on CIFAR-100 from its checkpoints "
                   "at 0, 256, 1024, 4096, 16384, 65536 and its end", LEARNPHASE_TRANSFER,
                   "the children's 30 epochs and their recipe (the parent's) are ours"),
        Experiment("intermediate_nc", "IntermediateNC (TMLR 2023) Fig. 1: CONV-L-400, L in 3..20, on CIFAR-10, "
                   "lr 0.1 x0.1 at 60/120/160, WD 5e-4, 500 epochs", INTERMEDIATE_NC),
        Experiment("intermediate_nc_mlp", "IntermediateNC with MLP-L-400 (the fully connected variant), same recipe",
                   {**INTERMEDIATE_NC, "arch": "mlp"}, "the MLP's width is ours: 400, as the CONV nets"),
        Experiment("intermediate_nc_noise", "IntermediateNC with noisy labels: CONV-8-400 at 0-50% label noise "
                   "(effective depth grows with noise)", {**INTERMEDIATE_NC, "depth": 8,
                                                          "label_noise": [0.0, 0.1, 0.2, 0.3, 0.5]}),
        Experiment("plasticity", "Berariu et al. (2021): ResNet-18 family on CIFAR-10, scratch vs pretrain on half "
                   "(350 epochs) then tune on all (500), resetting the last 0/4/5 modules", PLASTICITY,
                   "optimiser not in the appendix pages we have: SGD lr 0.01, momentum 0.9, WD 5e-4, constant"),
    )
}

OWN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # a folder name on any file system, never hidden
PRESET_FILE_SUFFIX = ".py"
PRESET_FILE_EXAMPLE = 'EXPERIMENT = Experiment("{stem}", "what it studies", {{"depth": [2, 4]}})'
ACCEPTED = (f"accepted: a preset ({', '.join(EXPERIMENTS)}), a name of your own (letters, digits, _ - ., not "
            "starting with '.', at most 100 characters) or a preset file path/to/study.py")


def read_experiment(text: str) -> tuple[str, Experiment | None]:
    """`experiment=TEXT` -> (the experiment's folder name, its preset): a preset's name, a preset file (its stem,
    its EXPERIMENT) or a name of one's own (the name, None: the grid is the command line's). SettingsError (one
    line) for a name that is no folder name or a preset file that cannot be used."""
    if text in EXPERIMENTS:
        return text, EXPERIMENTS[text]
    if text.endswith(PRESET_FILE_SUFFIX):
        preset = load_preset_file(text)
        return preset.name, preset
    if not OWN_NAME.fullmatch(text):
        raise SettingsError(f"experiment={text!r} is no folder name; {ACCEPTED}")
    return text, None


def close_preset(name: str) -> str:
    """The preset whose name `name` is close to (a typo: `learnphse`), or ""."""
    close = difflib.get_close_matches(name, EXPERIMENTS, n=1, cutoff=0.8)
    return close[0] if close else ""


def load_preset_file(text: str) -> Experiment:
    """The EXPERIMENT that the file `text` defines, checked, with its absolute path as its source."""
    path = Path(text).expanduser().resolve()  # relative to the caller's working directory (train.sh keeps it)
    if not path.is_file():
        raise SettingsError(f"experiment={text}: {path} does not exist; accepted: a Python file that defines "
                            f"{PRESET_FILE_EXAMPLE.format(stem=path.stem)} (docs/experiments.md)")
    stem = path.stem
    if not OWN_NAME.fullmatch(stem) or stem in EXPERIMENTS:
        why = "is a preset's name" if stem in EXPERIMENTS else "is no folder name"
        raise SettingsError(f"experiment={text}: the file's stem {stem!r}, the experiment's folder name, {why}; "
                            "rename the file (letters, digits, _ - ., not starting with '.', not a preset's name)")
    experiment = getattr(import_preset_file(text, path), "EXPERIMENT", None)
    check_preset(text, path, experiment)
    return dataclasses.replace(experiment, source=str(path))


def import_preset_file(text: str, path: Path) -> ModuleType:
    """The file run as a module, once per content (grid_size and parse_arguments both read the command line)."""
    try:  # SystemExit too: a preset file that calls exit() is refused in one line, not a silent stop
        return import_user_file(path, "lab_experiment", catching=(Exception, SystemExit))
    except UserFileError as error:
        reason = " ".join(str(error).split())[:300]
        raise SettingsError(f"experiment={text}: {path} fails to import ({reason}); fix that file") from None


def check_preset(text: str, path: Path, experiment) -> None:
    """SettingsError (one line, naming the file and the fix) unless `experiment` is an Experiment named as the
    file's stem whose grids are dicts of run settings with valid values (a list sweeps, as in the presets)."""
    prefix, example = f"experiment={text}: {path}", PRESET_FILE_EXAMPLE.format(stem=path.stem)
    if not isinstance(experiment, Experiment):
        found = "defines no EXPERIMENT" if experiment is None else f"has EXPERIMENT = a {type(experiment).__name__}"
        raise SettingsError(f"{prefix} {found}; write {example} in it (from conf.experiments import Experiment)")
    if experiment.name != path.stem:
        raise SettingsError(f"{prefix}: EXPERIMENT is named {experiment.name!r}, not {path.stem!r} (the file's stem, "
                            f"its folder); name it {path.stem!r}")
    if not isinstance(experiment.description, str) or not isinstance(experiment.notes, str):
        raise SettingsError(f"{prefix}: EXPERIMENT's description and notes must be text; write {example}")
    grids = experiment.settings if isinstance(experiment.settings, tuple) else (experiment.settings,)
    if not grids or not all(isinstance(grid, dict) for grid in grids):
        raise SettingsError(f"{prefix}: EXPERIMENT's settings must be a dict of run settings (or a tuple of such "
                            f"dicts, one per grid); write {example}")
    for grid in grids:
        for key, value in grid.items():
            check_preset_value(prefix, key, value)


def check_preset_value(prefix: str, key, value) -> None:
    """One key of a preset file's grid: a run setting, its value (or each swept value) valid."""
    if key not in SETTING_FIELDS:
        close = difflib.get_close_matches(str(key), SETTING_FIELDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SettingsError(f"{prefix}: {key!r} is no run setting; {hint}see `python train.py --help`")
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SettingsError(f"{prefix}: {key} sweeps no value ([]); give it one value or a list of some")
    for one in values:
        try:
            check_value(SETTING_FIELDS[key], one)
        except SettingsError as error:
            raise SettingsError(f"{prefix}: {error}") from None
