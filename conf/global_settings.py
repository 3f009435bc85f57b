"""python train.py --help — every run setting and execution option, its default and its doc.

Two frozen dataclasses, passed explicitly (never module globals):

- `Settings`: everything that changes what a run computes. Its hash is the run id, so the same
  settings always land in the same folder (resume, never duplicate).
- `Execution`: where and how runs execute (device, folders, launcher). Never part of the run id.

Validation lives here, so a bad value is refused before anything is written: `SettingsError`
carries one line naming the key and the accepted values.
"""

import dataclasses
import functools
import hashlib
import json
import math
import os
import typing
import unicodedata
from dataclasses import dataclass, field

from conf.errors import SettingsError
from conf.plasticity import PLASTICITY_FIELDS, TRANSFER_DEFAULTS, check_plasticity, pretrains, run_kind

DATASETS = ("synthetic", "cifar10", "cifar100", "mnist", "fashionmnist", "svhn")
VGG_DEPTHS = (8, 11, 13, 16)  # LearnPhase's VGG-8 and the standard VGG-11/13/16 plans
SYNTHETIC_ONLY = ("image_size", "synthetic_classes", "synthetic_train_size", "synthetic_test_size")
FAMILY_ONLY = {"patch_size": ("vit",), "heads": ("vit",)}  # sizes only these families read (not in others' ids)
ARCH_PREFIXES = ("torchvision:", "module:")  # models/torchvision_family.py, models/user_module.py
# Unicode categories refused in every text value: control characters (newline, carriage return, tab,
# NUL, escape, DEL, ...) and the line and paragraph separators. Text values are written into line-based
# files (sbatch headers, job shell lines, settings.json read by people, logs): one such character
# would silently end a line there.
CONTROL_CATEGORIES = ("Cc", "Zl", "Zp")


def setting(default, doc, *, choices=None, minimum=None, maximum=None, below=None, above=None, hint=None):
    """A dataclass field with its one-line doc and its accepted range (inclusive `minimum`/`maximum`,
    exclusive `above`/`below`); `hint` ends the error line of a refused value (the fix, when the
    accepted values alone do not say it)."""
    limits = {"choices": choices, "minimum": minimum, "maximum": maximum, "below": below, "above": above}
    return field(default=default, metadata={"doc": doc, "hint": hint, **limits})


@dataclass(frozen=True)
class Settings:
    """One training run. Grouped as the papers use them: data, model, optimisation, checkpoints."""

    # data
    dataset: str = setting("synthetic", "training data; synthetic is embedded, the others are read with torchvision", choices=DATASETS)
    data_seed: int = setting(0, "seed of the synthetic data and of the train_subset draw", minimum=0)
    train_subset: int = setting(0, "train on this many training examples (0 = all)", minimum=0)
    image_size: int = setting(32, "synthetic: image side in pixels", minimum=8, maximum=256)
    synthetic_classes: int = setting(10, "synthetic: number of classes", minimum=2, maximum=1000)
    synthetic_train_size: int = setting(5000, "synthetic: training examples", minimum=1)
    synthetic_test_size: int = setting(1000, "synthetic: test examples", minimum=1)
    label_noise: float = setting(0.0, "fraction of training labels replaced by a different class (IntermediateNC)", minimum=0.0, maximum=1.0)
    augment: bool = setting(False, "random crop (padding 4) and horizontal flip of training batches")
    # model
    arch: str = setting("convnet", "architecture family (models/): a built-in one, torchvision:NAME (any torchvision classification builder) or module:FILE:CLASS (your nn.Module)")
    depth: int = setting(4, "hidden layers (mlp, convnet, convresnet), VGG variant (8/11/13/16), blocks per stage (resnet) or transformer blocks (vit)", minimum=1)
    width: int = setting(32, "hidden units or channels (mlp, convnet, convresnet), base channels (vgg, resnet) or token dimensions (vit)", minimum=1)
    batch_norm: bool = setting(True, "batch normalisation after every hidden linear or conv layer")
    patch_size: int = setting(4, "vit: side of the square image patches, in pixels (must divide the image side)", minimum=1)
    heads: int = setting(4, "vit: attention heads per block (must divide width)", minimum=1)
    module_sha256: str = setting("", "module:FILE:CLASS: the file's sha256, filled in from the file when empty (a run whose file changed since is refused)")
    # optimisation
    loss: str = setting("ce", "training loss: cross-entropy or mean squared error to one-hot targets", choices=("ce", "mse"))
    optimizer: str = setting("sgd", "optimizer", choices=("sgd", "adam"))
    lr: float = setting(0.02, "peak learning rate", above=0.0)
    momentum: float = setting(0.9, "SGD momentum (adam: beta1)", minimum=0.0, below=1.0)
    weight_decay: float = setting(5e-4, "L2 weight decay (coupled, as torch.optim applies it)", minimum=0.0)
    lr_schedule: str = setting("multistep", "constant, multistep (x lr_gamma at each milestone) or cosine to 0", choices=("constant", "multistep", "cosine"))
    lr_milestones: tuple[int, ...] = setting((), "multistep: epochs at which the lr is multiplied by lr_gamma, e.g. [60,120,160]")
    lr_gamma: float = setting(0.1, "multistep: factor applied at each milestone", above=0.0, maximum=1.0)
    warmup_iterations: int = setting(0, "linear warm-up from 0 to lr over this many iterations", minimum=0)
    epochs: int = setting(20, "passes over the whole training set (stage 2's, after pretraining; 0 = a stage-1 run alone)", minimum=0)
    batch_size: int = setting(128, "examples per iteration (the last partial batch of an epoch is dropped)", minimum=1)
    seed: int = setting(0, "seed of initialisation, data order, augmentation and label noise", minimum=0)
    # plasticity (Berariu et al. 2021; Ash & Adams 2020): stage 1 on a subset, then stage 2 on all the data
    pretrain_fraction: float = setting(0.0, "stage 1 trains on this fraction of the training set, then `epochs` on all of it (0 = from scratch)", minimum=0.0, below=1.0)
    pretrain_subset: str = setting("examples", "stage 1's subset, drawn from `seed`: a fraction of the examples (warm start) or of the classes (class-incremental)", choices=("examples", "classes"))
    pretrain_epochs: int = setting(0, "stage 1's passes over its subset", minimum=0)
    reset_last: int = setting(0, "between the stages, reinitialise the last k modules (resnet: stem, stage1-4, head) and clear their optimizer state", minimum=0)
    shrink: float = setting(1.0, "between the stages, weights <- shrink * weights + perturb * a fresh init (Ash & Adams 2020; 1 = keep)", minimum=0.0, maximum=1.0)
    perturb: float = setting(0.0, "the fresh init's scale in shrink-and-perturb (0 = no noise)", minimum=0.0)
    stage2_optimizer: str = setting("fresh", "stage 2 starts a fresh optimizer, or keeps stage 1's state (momentum, Adam moments; reset modules' cleared)", choices=("fresh", "kept"))
    # transfer (LearnPhase, AAAI 2024: stop pre-training where the phases say) and growing data (Berariu et al. 2021, App. A.3)
    pretrain_dataset: str = setting("same", "the parent trains on this dataset, the child on `dataset` (transfer; same = the run's own); its head is rebuilt for the new classes", choices=("same", *DATASETS))
    start_from_iteration: str = setting("final", "the parent's checkpoint a child starts from: final, an iteration number, or phase (the parent's analysed 'stop pre-training here')")
    start_phase_layer: str = setting("", "start_from_iteration=phase: the layer whose phases choose the start ('' = the last hidden layer)")
    stage2_train: str = setting("all", "the last stage trains every module, or only the head (a linear probe trained by SGD on frozen features)", choices=("all", "head"))
    stages: int = setting(1, "growing data over stages + 1 stages (Berariu et al. 2021, App. A.3): stage 1 on pretrain_fraction of the data, each next one on more, the last on all (1 = warm start)", minimum=1)
    stage: int = setting(0, "which shared earlier stage (2..stages) this run is; the grid fills it in (0 = the run's own stage)", minimum=0)
    pretrain_checkpoint_extra: tuple[int, ...] = setting((), "the parent's extra checkpoints: the grid adds every child's start iteration off the log schedule")
    # checkpoints: iteration 0, every power of two, the final iteration, plus these
    checkpoint_every_epochs: int = setting(0, "also checkpoint every this many epochs (0 = off)", minimum=0)
    checkpoint_extra: tuple[int, ...] = setting((), "also checkpoint at these iterations, e.g. [100,300]")
    imported_from: str = setting("", "analysis.py import: the sha256 of the imported checkpoints, filled in by the import ('' = trained here)")

    def __post_init__(self):
        check_fields(self)
        check_arch(self)
        if self.arch == "vit" and self.width % self.heads:
            raise SettingsError(f"heads={self.heads} does not divide width={self.width}; accepted with arch=vit: a divisor of the width")
        if self.arch == "vgg" and self.depth not in VGG_DEPTHS:
            raise SettingsError(f"depth={self.depth} is not a VGG variant; accepted with arch=vgg: {', '.join(map(str, VGG_DEPTHS))}")
        check_plasticity(self)
        longest = max(self.epochs, self.pretrain_epochs)  # each stage runs the schedule over its own epochs
        if list(self.lr_milestones) != sorted(set(self.lr_milestones)) or any(not 0 < m <= longest for m in self.lr_milestones):
            bound = f"epochs={self.epochs}" if self.epochs >= self.pretrain_epochs else f"pretrain_epochs={longest}"
            raise SettingsError(f"lr_milestones={list(self.lr_milestones)} must be increasing epochs in [1, {bound}]")
        if any(iteration < 0 for iteration in self.checkpoint_extra):
            raise SettingsError(f"checkpoint_extra={list(self.checkpoint_extra)}: iterations must be >= 0")
        if self.dataset == "synthetic":
            available = self.train_subset or self.synthetic_train_size
            if self.batch_size > available:
                raise SettingsError(f"batch_size={self.batch_size} exceeds the {available} training examples; accepted: 1..{available}")
            if self.train_subset > self.synthetic_train_size:
                raise SettingsError(f"train_subset={self.train_subset} exceeds synthetic_train_size={self.synthetic_train_size}")

    def to_record(self) -> dict:
        """JSON-ready values (tuples as lists): what settings.json and every checkpoint hold."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_record(cls, values: dict) -> "Settings":
        """The inverse of `to_record`, validated: a checkpoint alone rebuilds its settings."""
        return cls(**{name: tuple(value) if isinstance(value, list) else value for name, value in values.items()})

    def identity(self) -> dict:
        """The settings that define the run: synthetic-only ones are dropped for real datasets, the
        plasticity ones for scratch runs (so a scratch run keeps the id it had before they existed)."""
        values = dataclasses.asdict(self)
        if not pretrains(self):
            for name in PLASTICITY_FIELDS:
                values.pop(name)
        for name, default in TRANSFER_DEFAULTS.items():  # added later: the runs before them keep their ids
            if values.get(name, default) == default:
                values.pop(name, None)
        if self.dataset != "synthetic":
            for name in SYNTHETIC_ONLY:
                values.pop(name)
        for name, families in FAMILY_ONLY.items():  # a family's own sizes: the other families' ids stay as they were
            if self.arch not in families:
                values.pop(name)
        if not self.arch.startswith("module:"):
            values.pop("module_sha256")
        if not self.imported_from:
            values.pop("imported_from")
        return values

    @functools.cached_property  # frozen: computed once (a 1000-run grid asks for each id several times)
    def run_id(self) -> str:
        """Readable prefix + hash of every setting, e.g. `convnet4-w32-synthetic-s0-1a2b3c4d5e`; a
        stage-1 run's prefix ends in `-stage1` (a later shared stage's in `-stageJ`), a warm-started child's
        in `-warm`, a child of another dataset's run in `-transfer`."""
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:10]
        kind = run_kind(self)
        stage = {"scratch": "", "stage1": "-stage1", "stage": f"-stage{self.stage}",
                 "child": "-warm" if self.pretrain_dataset == "same" else "-transfer"}[kind]
        if ":" not in self.arch:  # a registered family
            model = f"{self.arch}{self.depth}-w{self.width}"
        else:  # torchvision:NAME -> NAME, module:FILE:CLASS -> class; a folder name holds no ':' or '/'
            model = self.arch.rpartition(":")[2].lower() + ("" if self.arch.startswith("torchvision:") else
                                                           f"{self.depth}-w{self.width}")
        return f"{model}-{self.dataset}-s{self.seed}{stage}-{digest}"


def check_arch(settings: "Settings") -> None:
    """arch: a family's name (the registry in models/ has the list: conf reads no code of its own, and
    train.py's pre-flight refuses a name no family registered), `torchvision:NAME` or `module:FILE:CLASS`
    (SettingsError for anything else). A module file is read here: its path made absolute (a job starts
    elsewhere) and its sha256 recorded when the settings do not hold one yet."""
    arch = settings.arch
    accepted = "accepted: a built-in family (models/), torchvision:NAME or module:FILE:CLASS"
    if arch.isidentifier() or (arch.startswith("torchvision:") and arch[len("torchvision:"):].isidentifier()):
        return
    if not arch.startswith("module:"):
        raise SettingsError(f"arch={arch!r} is not known; {accepted}")
    path, _, class_name = arch[len("module:"):].rpartition(":")
    if not path or not class_name.isidentifier():
        raise SettingsError(f"arch={arch!r} is not module:FILE:CLASS; {accepted}, e.g. module:my_models.py:TinyNet")
    if not path.endswith(".py"):  # Python's importer reads only .py files as source: refuse others by name
        raise SettingsError(f"arch={arch}: {path} is not a Python file; accepted: module:FILE.py:CLASS")
    if not os.path.isabs(path):
        object.__setattr__(settings, "arch", f"module:{os.path.abspath(path)}:{class_name}")
    if not settings.module_sha256:
        try:
            with open(os.path.abspath(path), "rb") as handle:
                object.__setattr__(settings, "module_sha256", hashlib.sha256(handle.read()).hexdigest())
        except OSError as error:
            raise SettingsError(f"arch={arch}: {path} cannot be read ({error.strerror}); accepted: module:FILE:CLASS "
                                "with FILE an existing Python file") from None


@dataclass(frozen=True)
class Execution:
    """Where and how runs execute. Never part of the run id: the same run on a laptop or a cluster
    lands in the same folder."""

    out_dir: str = setting("outputs", "results root: <out_dir>/<experiment>/runs/<run_id>/")
    data_root: str = setting("datasets", "torchvision datasets' root folder (standard layout)")
    download: bool = setting(True, "download a missing torchvision dataset (fails clearly when offline)")
    # No cuda:N: one name for the GPU in both stages (training and analysis resolve "cuda" alike), chosen
    # by CUDA_VISIBLE_DEVICES, which Slurm sets per job; an index would not follow a job to its node.
    device: str = setting("auto", "auto = cuda when available, else cpu", choices=("auto", "cpu", "cuda"),
                          hint="choose the GPU with CUDA_VISIBLE_DEVICES=N, not cuda:N")
    # auto/on/off rather than a bool: what `auto` turns on is decided in one place, devices.AUTO_ON_CUDA,
    # so a GPU measurement can change the default without touching a user's command line.
    bf16: str = setting("auto", "CUDA only: bfloat16 autocast for forward and loss (auto = on for conv nets)",
                        choices=("auto", "on", "off"))
    channels_last: str = setting("auto", "CUDA only: channels_last memory format (auto = on for conv nets)",
                                 choices=("auto", "on", "off"))
    deterministic: bool = setting(True, "CUDA only: deterministic kernels (cuDNN deterministic, no autotuning, torch deterministic algorithms), so a resumed run ends bitwise equal; false = fastest kernels")
    threads: int = setting(0, "CPU threads for torch (0 = the CPUs the run was given at its first start: Slurm allocation, CPU affinity, worker share; a resume keeps its run's count, and a number typed here changes it, recorded)", minimum=0)
    resume_every_seconds: float = setting(60.0, "save the resumable state at least this often (0 = every iteration)", minimum=0.0)
    progress: str = setting("auto", "progress bar: auto = only on a terminal", choices=("auto", "on", "off"))
    tensorboard: bool = setting(True, "live curves: TensorBoard event files of training's loss, accuracy and lr (at each log flush) and of the analysis's per-layer metrics, in <out_dir>/<experiment>/tensorboard/<run_id>/ (tensorboard --logdir <out_dir>/<experiment>)")
    log_level: str = setting("INFO", "logging level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    def __post_init__(self):
        check_fields(self)


def _type_of(item: dataclasses.Field) -> type:
    return item.type  # a real type: this package never uses `from __future__ import annotations`


def check_fields(instance) -> None:
    """Validate every field of a settings dataclass against its type and range (SettingsError)."""
    for item in dataclasses.fields(instance):
        _check_value(item, getattr(instance, item.name))


def describe_accepted(item: dataclasses.Field) -> str:
    """The accepted values of a field, in words (used in every error line and in --help)."""
    meta, kind = item.metadata, _type_of(item)
    if meta.get("choices"):
        return ", ".join(meta["choices"])
    if kind is bool:
        return "true or false"
    if typing.get_origin(kind) is tuple:
        return "a list of non-negative integers like [60,120,160] or []"
    bounds = []
    if meta.get("minimum") is not None:
        bounds.append(f">= {meta['minimum']}")
    if meta.get("above") is not None:
        bounds.append(f"> {meta['above']}")
    if meta.get("maximum") is not None:
        bounds.append(f"<= {meta['maximum']}")
    if meta.get("below") is not None:
        bounds.append(f"< {meta['below']}")
    noun = {int: "an integer", float: "a finite number", str: "text"}[kind]
    return noun + (" " + " and ".join(bounds) if bounds else "")


def show_default(item: dataclasses.Field) -> str:
    """A field's default as one writes it on the command line: [60,120], true, 0.0005."""
    value = item.default
    if isinstance(value, tuple):
        return f"[{','.join(map(str, value))}]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def first_control_character(text: str) -> str | None:
    """The first character of `text` in CONTROL_CATEGORIES, or None."""
    return next((character for character in text if unicodedata.category(character) in CONTROL_CATEGORIES), None)


def _check_value(item: dataclasses.Field, value) -> None:
    meta, kind = item.metadata, _type_of(item)

    def refuse(reason: str):
        hint = f" ({meta['hint']})" if meta.get("hint") else ""
        raise SettingsError(f"{item.name}={value!r} {reason}; accepted: {describe_accepted(item)}{hint}")

    if typing.get_origin(kind) is tuple:
        if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            refuse("is not a list of integers")
        return
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        refuse(f"has the wrong type ({type(value).__name__})")
    if kind is float and not math.isfinite(value):
        refuse("is not finite")
    if kind is str and (character := first_control_character(value)) is not None:
        # repr() escapes the character, so the error stays one line
        raise SettingsError(f"{item.name}={value!r} contains the control character {character!r}; accepted: "
                            "text on one line, without newline, carriage return, tab, NUL or other control characters")
    if meta.get("choices") and value not in meta["choices"]:
        refuse("is not known")
    out_of_range = (
        (meta.get("minimum") is not None and value < meta["minimum"])
        or (meta.get("maximum") is not None and value > meta["maximum"])
        or (meta.get("above") is not None and value <= meta["above"])
        or (meta.get("below") is not None and value >= meta["below"])
    )
    if out_of_range:
        refuse("is out of range")


def parse_value(item: dataclasses.Field, text: str):
    """Turn the command-line text of one value into the field's type and check it against the field's
    type and range (SettingsError if it can't be read or is refused): a bad swept value is refused as
    it is read, before any grid point is built. Checks across fields wait for the dataclass."""
    value = _read_value(item, text)
    _check_value(item, value)
    return value


def _read_value(item: dataclasses.Field, text: str):
    kind = _type_of(item)
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if typing.get_origin(kind) is tuple:
            inner = text.strip()
            if not (inner.startswith("[") and inner.endswith("]")):
                raise ValueError(text)
            return tuple(int(part) for part in inner[1:-1].split(",") if part.strip())
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        return text
    except ValueError:
        raise SettingsError(f"{item.name}={text!r} cannot be read; accepted: {describe_accepted(item)}") from None
