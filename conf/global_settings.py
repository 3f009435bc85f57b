"""python train.py --help — every run setting and execution option, its default and its doc.

Two frozen dataclasses, passed explicitly (never module globals):

- `Settings`: everything that changes what a run computes. Its hash is the run id, so the same
  settings always land in the same folder (resume, never duplicate).
- `Execution`: where and how runs execute (device, folders, launcher). Never part of the run id.

Validation lives here, so a bad value is refused before anything is written: `SettingsError`
carries one line naming the key and the accepted values.
"""

import ast
import dataclasses
import functools
import hashlib
import json
import math
import os
import types
import typing
import unicodedata
from dataclasses import dataclass, field

from conf.errors import SettingsError
from conf.plasticity import PLASTICITY_FIELDS, check_plasticity, pretrains, run_kind

DATASETS = ("synthetic", "cifar10", "cifar100", "mnist", "fashionmnist", "svhn")
VGG_DEPTHS = (8, 11, 13, 16)  # LearnPhase's VGG-8 and the standard VGG-11/13/16 plans
SYNTHETIC_ONLY = ("image_size", "synthetic_classes", "synthetic_train_size", "synthetic_test_size")
FAMILY_ONLY = {"patch_size": ("vit",), "heads": ("vit",)}  # sizes only these families read (null in the others')
# The model's sizes: null (None) where the arch does not take them — a torchvision builder has sizes of its own, a
# module class takes those its __init__ names, a built-in family all but the FAMILY_ONLY ones of other families.
# Left out of the run id, its readable prefix and every label.
MODEL_SIZES = ("depth", "width", "batch_norm", "patch_size", "heads")
# How a run was trained: what `analysis.py import` records as null (None, shown "unknown") unless the user typed it.
# A run trained here knows every one. The seed stays: it tells imported replicates apart and seeds the analysis's
# own draws; the data settings stay: they choose the images every metric is measured on.
TRAINING_FACTS = ("loss", "optimizer", "lr", "momentum", "weight_decay", "lr_schedule", "lr_milestones", "lr_gamma",
                  "warmup_iterations", "epochs", "batch_size", "augment", "label_noise")
UNKNOWN = "unknown"  # how a training fact an import was not told is shown (the record holds null)
DATASET_CHANNELS = {"synthetic": 3, "cifar10": 3, "cifar100": 3, "mnist": 1, "fashionmnist": 1, "svhn": 3}
NORMALIZATION_FORMAT = "dataset, or [MEAN,...]/[STD,...] with one number per channel and every std > 0"
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
    """One training run. Grouped as the papers use them: data, model, optimisation, checkpoints. None (null in the
    record) says what is not a fact of the run: a model size its arch does not take (MODEL_SIZES), a training
    setting an imported run was not told (TRAINING_FACTS: unknown)."""

    # data
    dataset: str = setting("synthetic", "training data; synthetic is embedded, the others are read with torchvision", choices=DATASETS)
    data_seed: int = setting(0, "seed of the synthetic data and of the train_subset draw", minimum=0)
    train_subset: int = setting(0, "train on this many training examples (0 = all)", minimum=0)
    image_size: int = setting(32, "synthetic: image side in pixels", minimum=8, maximum=256)
    synthetic_classes: int = setting(10, "synthetic: number of classes", minimum=2, maximum=1000)
    synthetic_train_size: int = setting(5000, "synthetic: training examples", minimum=1)
    synthetic_test_size: int = setting(1000, "synthetic: test examples", minimum=1)
    label_noise: float | None = setting(0.0, "fraction of training labels replaced by a different class (IntermediateNC)", minimum=0.0, maximum=1.0)
    augment: bool | None = setting(False, "random crop (padding 4) and horizontal flip of training batches")
    normalization: str = setting("dataset", "the inputs' per-channel mean and std: dataset = the training images' own (data.channel_statistics), or [MEAN,...]/[STD,...] as the model was trained with, e.g. ImageNet's [0.485,0.456,0.406]/[0.229,0.224,0.225]")
    # model
    arch: str = setting("convnet", "architecture family (models/): a built-in one, torchvision:NAME (any torchvision classification builder) or module:FILE:CLASS (your nn.Module)")
    depth: int | None = setting(4, "hidden layers (mlp, convnet, convresnet), VGG variant (8/11/13/16), blocks per stage (resnet) or transformer blocks (vit)", minimum=1)
    width: int | None = setting(32, "hidden units or channels (mlp, convnet, convresnet), base channels (vgg, resnet) or token dimensions (vit)", minimum=1)
    batch_norm: bool | None = setting(True, "batch normalisation after every hidden linear or conv layer")
    patch_size: int | None = setting(4, "vit: side of the square image patches, in pixels (must divide the image side)", minimum=1)
    heads: int | None = setting(4, "vit: attention heads per block (must divide width)", minimum=1)
    module_sha256: str = setting("", "module:FILE:CLASS: the file's sha256, filled in from the file when empty (a run whose file changed since is refused)")
    # optimisation
    loss: str | None = setting("ce", "training loss: cross-entropy or mean squared error to one-hot targets", choices=("ce", "mse"))
    optimizer: str | None = setting("sgd", "optimizer", choices=("sgd", "adam"))
    lr: float | None = setting(0.02, "peak learning rate", above=0.0)
    momentum: float | None = setting(0.9, "SGD momentum (adam: beta1)", minimum=0.0, below=1.0)
    weight_decay: float | None = setting(5e-4, "L2 weight decay (coupled, as torch.optim applies it)", minimum=0.0)
    lr_schedule: str | None = setting("multistep", "constant, multistep (x lr_gamma at each milestone) or cosine to 0", choices=("constant", "multistep", "cosine"))
    lr_milestones: tuple[int, ...] | None = setting((), "multistep: epochs at which the lr is multiplied by lr_gamma, e.g. [60,120,160]")
    lr_gamma: float | None = setting(0.1, "multistep: factor applied at each milestone", above=0.0, maximum=1.0)
    warmup_iterations: int | None = setting(0, "linear warm-up from 0 to lr over this many iterations", minimum=0)
    epochs: int | None = setting(20, "passes over the whole training set (stage 2's, after pretraining; 0 = a stage-1 run alone)", minimum=0)
    batch_size: int | None = setting(128, "examples per iteration (the last partial batch of an epoch is dropped)", minimum=1)
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
        check_sizes(self, check_arch(self))
        check_unknown(self)
        check_normalization(self)
        if self.arch == "vit" and self.width % self.heads:
            raise SettingsError(f"heads={self.heads} does not divide width={self.width}; accepted with arch=vit: a divisor of the width")
        if self.arch == "vgg" and self.depth not in VGG_DEPTHS:
            raise SettingsError(f"depth={self.depth} is not a VGG variant; accepted with arch=vgg: {', '.join(map(str, VGG_DEPTHS))}")
        check_plasticity(self)
        if self.lr_milestones is not None and self.epochs is not None:  # an import told one but not the other: no bound
            longest = max(self.epochs, self.pretrain_epochs)  # each stage runs the schedule over its own epochs
            if list(self.lr_milestones) != sorted(set(self.lr_milestones)) or any(not 0 < m <= longest for m in self.lr_milestones):
                bound = f"epochs={self.epochs}" if self.epochs >= self.pretrain_epochs else f"pretrain_epochs={longest}"
                raise SettingsError(f"lr_milestones={list(self.lr_milestones)} must be increasing epochs in [1, {bound}]")
        if any(iteration < 0 for iteration in self.checkpoint_extra):
            raise SettingsError(f"checkpoint_extra={list(self.checkpoint_extra)}: iterations must be >= 0")
        if self.dataset == "synthetic":
            available = self.train_subset or self.synthetic_train_size
            if self.batch_size is not None and self.batch_size > available:
                raise SettingsError(f"batch_size={self.batch_size} exceeds the {available} training examples; accepted: 1..{available}")
            if self.train_subset > self.synthetic_train_size:
                raise SettingsError(f"train_subset={self.train_subset} exceeds synthetic_train_size={self.synthetic_train_size}")

    def to_record(self) -> dict:
        """JSON-ready values (tuples as lists): what settings.json and every checkpoint hold. Read back from their
        JSON text, so that a checkpoint's bytes depend on the values alone: pickle writes a string it has seen as a
        reference to it by object identity, and a value equal to a key (normalization='dataset') is the key's own
        object in one process and a copy in a Slurm job that unpickled its settings."""
        return json.loads(json.dumps({name: list(value) if isinstance(value, tuple) else value
                                      for name, value in dataclasses.asdict(self).items()}))

    @classmethod
    def from_record(cls, values: dict) -> "Settings":
        """The inverse of `to_record`, validated: a checkpoint alone rebuilds its settings."""
        return cls(**{name: tuple(value) if isinstance(value, list) else value for name, value in values.items()})

    def unknown(self) -> tuple[str, ...]:
        """The training facts this run was not told (an import's: null in its record), in settings order."""
        return tuple(name for name in TRAINING_FACTS if getattr(self, name) is None)

    def identity(self) -> dict:
        """The settings that define the run, without those that do not apply to it: the plasticity ones for a
        scratch run (it has no stage 1), the synthetic-only ones for a real dataset, the model sizes its arch does
        not take (null), the module file's sha256 for an arch that is no module, the import's sha256 for a run
        trained here. A training fact an import was not told stays, as null: typed and unknown are two runs."""
        values = dataclasses.asdict(self)
        if not pretrains(self):
            for name in PLASTICITY_FIELDS:
                values.pop(name)
        if self.dataset != "synthetic":
            for name in SYNTHETIC_ONLY:
                values.pop(name)
        for name in MODEL_SIZES:  # sizes the arch does not take: a family's own, a torchvision builder's, a class's
            if values[name] is None:
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
        # a registered family: arch; torchvision:NAME -> NAME, module:FILE:CLASS -> class (a folder name holds no ':'
        # or '/'); then the depth and width it takes (a torchvision builder none, a class those its __init__ names)
        model = (self.arch.rpartition(":")[2].lower() + ("" if self.depth is None else str(self.depth))
                 + ("" if self.width is None else f"-w{self.width}"))
        return f"{model}-{self.dataset}-s{self.seed}{stage}-{digest}"


def check_arch(settings: "Settings") -> bytes | None:
    """arch: a family's name (the registry in models/ has the list: conf reads no code of its own, and
    train.py's pre-flight refuses a name no family registered), `torchvision:NAME` or `module:FILE:CLASS`
    (SettingsError for anything else). A module file is read here: its path made absolute (a job starts
    elsewhere) and its sha256 recorded when the settings do not hold one yet; its contents are returned then
    (None otherwise: settings that hold a sha256 came from a record, which says which sizes the class takes)."""
    arch = settings.arch
    accepted = "accepted: a built-in family (models/), torchvision:NAME or module:FILE:CLASS"
    if arch.isidentifier() or (arch.startswith("torchvision:") and arch[len("torchvision:"):].isidentifier()):
        return None
    if not arch.startswith("module:"):
        raise SettingsError(f"arch={arch!r} is not known; {accepted}")
    path, _, class_name = arch[len("module:"):].rpartition(":")
    if not path or not class_name.isidentifier():
        raise SettingsError(f"arch={arch!r} is not module:FILE:CLASS; {accepted}, e.g. module:my_models.py:TinyNet")
    if not path.endswith(".py"):  # Python's importer reads only .py files as source: refuse others by name
        raise SettingsError(f"arch={arch}: {path} is not a Python file; accepted: module:FILE.py:CLASS")
    if not os.path.isabs(path):
        object.__setattr__(settings, "arch", f"module:{os.path.abspath(path)}:{class_name}")
    if settings.module_sha256:
        return None
    try:
        with open(os.path.abspath(path), "rb") as handle:
            source = handle.read()
    except OSError as error:
        raise SettingsError(f"arch={arch}: {path} cannot be read ({error.strerror}); accepted: module:FILE:CLASS "
                            "with FILE an existing Python file") from None
    object.__setattr__(settings, "module_sha256", hashlib.sha256(source).hexdigest())
    return source


def taken_sizes(settings: "Settings", source: bytes | None) -> tuple[str, ...] | None:
    """The MODEL_SIZES the arch takes: a built-in family all but other families' FAMILY_ONLY ones, a torchvision
    builder none, a module class those its __init__ names (`source`: its file, just read); None when that cannot
    be told here (a record's module settings, which hold null for the sizes their class does not take)."""
    arch = settings.arch
    if arch.startswith("torchvision:"):
        return ()
    if not arch.startswith("module:"):
        return tuple(name for name in MODEL_SIZES if arch in FAMILY_ONLY.get(name, (arch,)))
    if source is None:
        return None
    keywords = init_keywords(source, arch.rpartition(":")[2])
    return MODEL_SIZES if keywords is None else tuple(name for name in MODEL_SIZES if name in keywords)


def init_keywords(source: bytes, class_name: str) -> frozenset[str] | None:
    """The argument names of CLASS's __init__ in a module file (read with ast: conf imports no torch and runs
    no code of the user's), following its first base class while that is defined in the same file; None when the
    file does not tell — it does not parse, has no such class or __init__ here, or the __init__ takes **keywords
    — and then the class is given every size, as models/user_module.py gives a class with **keywords."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    seen: set[str] = set()
    while class_name in classes and class_name not in seen:
        seen.add(class_name)
        node = classes[class_name]
        init = next((item for item in node.body if isinstance(item, ast.FunctionDef) and item.name == "__init__"), None)
        if init is not None:
            arguments = init.args
            if arguments.kwarg is not None:
                return None
            return frozenset(argument.arg for argument in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs))
        first = node.bases[0] if node.bases else None
        class_name = first.id if isinstance(first, ast.Name) else ""
    return None


def check_sizes(settings: "Settings", source: bytes | None) -> None:
    """Null (None) the MODEL_SIZES the arch does not take, whatever was given (a value typed for a torchvision
    builder is none of its model's: ignored; analysis.py import says so); SettingsError for a size the arch
    takes but the settings hold none of."""
    taken = taken_sizes(settings, source)
    if taken is None:
        return
    for name in MODEL_SIZES:
        if name not in taken:
            object.__setattr__(settings, name, None)
        elif getattr(settings, name) is None:
            item = next(item for item in dataclasses.fields(settings) if item.name == name)
            raise SettingsError(f"{name} is null but arch={settings.arch} takes it; accepted: {describe_accepted(item)}")


def check_unknown(settings: "Settings") -> None:
    """SettingsError when a training fact is null (unknown) in a run that is not a single-stage import: a run
    trained here knows how it trained, and a staged protocol's stages are trained here."""
    unknown = settings.unknown()
    if not unknown:
        return
    if not settings.imported_from:
        raise SettingsError(f"{', '.join(unknown)} unknown (null) in a run trained here; accepted: null only in an "
                            "imported run's settings (analysis.py import), every training setting given otherwise")
    if pretrains(settings):
        raise SettingsError(f"an imported run is one stage: pretrain_fraction={settings.pretrain_fraction}, "
                            f"pretrain_dataset={settings.pretrain_dataset} do not apply; accepted: import each stage's "
                            "checkpoints as a run of its own")


def read_normalization(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """`[0.5,0.5,0.5]/[0.25,0.25,0.25]` -> ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)); SettingsError (one line) for
    anything else, for a number that is not finite, a std <= 0 or lists of different lengths."""
    def refuse(reason: str) -> SettingsError:
        return SettingsError(f"normalization={text!r} {reason}; accepted: {NORMALIZATION_FORMAT}, e.g. "
                             "[0.485,0.456,0.406]/[0.229,0.224,0.225]")

    parts = text.split("/")
    if len(parts) != 2 or not all(part.startswith("[") and part.endswith("]") for part in parts):
        raise refuse("cannot be read")
    try:
        means, stds = (tuple(float(number) for number in part[1:-1].split(",")) for part in parts)
    except ValueError:
        raise refuse("holds something that is no number") from None
    if not all(math.isfinite(number) for number in (*means, *stds)):
        raise refuse("holds a number that is not finite")
    if len(means) != len(stds):
        raise refuse(f"has {len(means)} means but {len(stds)} stds")
    if min(stds) <= 0:
        raise refuse("has a std <= 0")
    return means, stds


def check_normalization(settings: "Settings") -> None:
    """`normalization` read (SettingsError naming the fix), one value per channel of the dataset, and written in
    one canonical form (`[0.485,0.456,0.406]/[0.229,0.224,0.225]`): the same numbers typed twice are one run."""
    if settings.normalization == "dataset":
        return
    means, stds = read_normalization(settings.normalization)
    channels = DATASET_CHANNELS[settings.dataset]
    if len(means) != channels:
        raise SettingsError(f"normalization={settings.normalization} has {len(means)} value(s) per list, but "
                            f"dataset={settings.dataset} has {channels} channel(s); accepted: one mean and one std per "
                            "channel, or normalization=dataset")
    canonical = "/".join("[" + ",".join(map(repr, numbers)) + "]" for numbers in (means, stds))
    object.__setattr__(settings, "normalization", canonical)


# name -> field of every run setting, in the dataclass's order: the one list of them (the command line, the presets,
# the store's column types and the read-out all read it).
SETTING_FIELDS = {item.name: item for item in dataclasses.fields(Settings)}


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

    def torch_device(self):
        """The torch device `device` names (auto: cuda when there is one); SettingsError (bad input: exit 2) when
        cuda is asked for on a machine without it, as train.py and analysis.py say."""
        import torch  # here: conf is read by commands that never load torch (analysis.py figures)

        if self.device == "cuda" and not torch.cuda.is_available():
            raise SettingsError("device='cuda' but no CUDA device is visible; accepted here: auto, cpu")
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def _type_of(item: dataclasses.Field) -> type:
    """The field's type, `int` of `int | None` (a real type: this package never uses `from __future__ import
    annotations`)."""
    if isinstance(item.type, types.UnionType):
        return next(member for member in typing.get_args(item.type) if member is not type(None))
    return item.type


def nullable(item: dataclasses.Field) -> bool:
    """Whether the field may hold None: a model size an arch does not take, a training fact an import was not told."""
    return isinstance(item.type, types.UnionType) and type(None) in typing.get_args(item.type)


def check_fields(instance) -> None:
    """Validate every field of a settings dataclass against its type and range (SettingsError); None passes in a
    nullable field (what it means is checked with the other fields: check_sizes, check_unknown)."""
    for item in dataclasses.fields(instance):
        value = getattr(instance, item.name)
        if not (value is None and nullable(item)):
            _check_value(item, value)


def describe_accepted(item: dataclasses.Field) -> str:
    """The accepted values of a field, in words (used in every error line and in --help)."""
    meta, value_type = item.metadata, _type_of(item)
    if meta.get("choices"):
        return ", ".join(meta["choices"])
    if value_type is bool:
        return "true or false"
    if typing.get_origin(value_type) is tuple:
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
    noun = {int: "an integer", float: "a finite number", str: "text"}[value_type]
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
    meta, value_type = item.metadata, _type_of(item)

    def refuse(reason: str):
        hint = f" ({meta['hint']})" if meta.get("hint") else ""
        raise SettingsError(f"{item.name}={value!r} {reason}; accepted: {describe_accepted(item)}{hint}")

    if typing.get_origin(value_type) is tuple:
        if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            refuse("is not a list of integers")
        return
    if value_type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, value_type) or (value_type is int and isinstance(value, bool)):
        refuse(f"has the wrong type ({type(value).__name__})")
    if value_type is float and not math.isfinite(value):
        refuse("is not finite")
    if value_type is str and (character := first_control_character(value)) is not None:
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
    value_type = _type_of(item)
    try:
        if value_type is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if typing.get_origin(value_type) is tuple:
            inner = text.strip()
            if not (inner.startswith("[") and inner.endswith("]")):
                raise ValueError(text)
            return tuple(int(part) for part in inner[1:-1].split(",") if part.strip())
        if value_type is int:
            return int(text)
        if value_type is float:
            return float(text)
        return text
    except ValueError:
        raise SettingsError(f"{item.name}={text!r} cannot be read; accepted: {describe_accepted(item)}") from None
