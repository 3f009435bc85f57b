"""What measuring one run needs besides its checkpoints: its splits as it trained on them, its transfer
probe, and each checkpoint's model (verified, rebuilt from the checkpoint alone).

    run = RunFolder(run_dir).read_record()  # read once; every step below takes this value
    train, test, num_classes = splits_of(run, Path("datasets"), False, device)
    probe, description = transfer_probe(run.settings, plan, train, test, num_classes, device)
    checkpoint, model = load_model(run, 256, device)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

import data
import models
from conf import Plan, Settings, SettingsError
from folders import CorruptFile, RunFolderError, RunRecord
from metrics import transfer as transfer_metrics
from metrics.engine import SplitData
from models import user_module
from models.hooked import HookedModel, UnknownLayer
from utils import one_line

REMAKE = "launch the run's grid again to re-make it (training is deterministic)"


def splits_of(run: RunRecord, data_root: Path, download: bool, device):
    """(train, test, num_classes): the training split as the run trained on it — its labels (after
    label noise) and, for a stage-1 run of a warm start, only its subset — both normalised as its inputs were
    (its `normalization`: the dataset's own statistics, or those it names; data.load_dataset)."""
    dataset = data.load_dataset(run.settings, data_root=data_root, download=download).to(device)
    images, labels = dataset.train_images, dataset.train_labels.clone()
    noise, subset = run.data_records()
    if noise is not None:  # the run's own record of which labels it trained with (IntermediateNC's noisy runs)
        labels[torch.tensor(noise["indices"], dtype=torch.long, device=device)] = torch.tensor(noise["noisy"], device=device)
    if subset is not None:  # the run's own record of stage 1's examples (Berariu et al. 2021)
        chosen = torch.tensor(subset["indices"], dtype=torch.long, device=device)
        images, labels = images[chosen], labels[chosen]
    train = SplitData(images, labels, dataset.mean, dataset.std)
    test = SplitData(dataset.test_images, dataset.test_labels, dataset.mean, dataset.std)
    return train, test, dataset.num_classes


def transfer_probe(settings: Settings, plan: Plan, train: SplitData, test: SplitData, num_classes: int,
                   device) -> tuple[transfer_metrics.TransferProbe | None, str]:
    """(the run's transfer probe or None, what it is: the task and its images, or `none (why)`).
    `transfer_task` chooses the task (data/transfer.py); one that does not apply to the run's dataset,
    or whose other dataset is not on disk, gives no probe and the reason, never an error."""
    choice = transfer_metrics.choose_task(plan.analysis.transfer_task, settings.dataset, train.images.shape[1],
                                          plan.analysis.transfer_dataset)
    if choice.task is None:
        return None, choice.describe()
    if choice.source == "own":
        return transfer_metrics.bind(choice.task, train, test, num_classes), choice.describe()
    try:
        other_train, other_test, other_classes = transfer_splits(settings, plan, choice.source, train, device)
    except data.DataError as error:
        if plan.analysis.transfer_dataset != "own":
            raise  # a dataset the user named: missing is this run's error, as for its own dataset
        return None, f"none ({choice.task.name} needs {choice.source}: {one_line(error)})"
    probe = transfer_metrics.bind(choice.task, other_train, other_test, other_classes, source=choice.source)
    return probe, choice.describe()


def transfer_splits(settings: Settings, plan: Plan, name: str, reference: SplitData, device):
    """(train, test, num_classes) of the dataset `name` the transfer task reads instead of the run's
    own (`transfer_dataset`, or the other dataset of other_dataset_classes), normalised as the
    network's inputs (`reference`'s mean and std: the run's). The synthetic one is drawn with the next data seed."""
    source = dataclasses.replace(settings, dataset=name, train_subset=0, label_noise=0.0, normalization="dataset",
                                 data_seed=settings.data_seed + (name == "synthetic"))
    dataset = data.load_dataset(source, data_root=Path(plan.execution.data_root), download=plan.execution.download)
    if dataset.train_images.shape[1:] != reference.images.shape[1:]:
        raise SettingsError(f"transfer_dataset={name} has images of shape {tuple(dataset.train_images.shape[1:])}, the "
                            f"run's are {tuple(reference.images.shape[1:])}; accepted: own or a dataset of that shape")
    dataset = dataset.to(device)
    return (SplitData(dataset.train_images, dataset.train_labels, reference.mean, reference.std),
            SplitData(dataset.test_images, dataset.test_labels, reference.mean, reference.std), dataset.num_classes)


def layer_paths(text: str) -> list[str] | None:
    """`layers=` as module paths; None for '' (the family's own layers)."""
    return [name.strip() for name in text.split(",") if name.strip()] or None


def check_module_file(settings: Settings) -> None:
    """RunFolderError naming the run when its model is a user's module whose file is missing or changed
    since the run was made: its checkpoints would be rebuilt as another model (models/user_module.py)."""
    if settings.arch.startswith(user_module.PREFIX):
        try:
            user_module.load_class(settings.arch, settings.module_sha256)
        except ValueError as error:
            raise RunFolderError(f"run {settings.run_id}: {error}") from None


def hooked_layers_problem(run: RunRecord, layers: str) -> str | None:
    """Why the run's layers cannot be measured — a layer module that runs twice in one pass (one ReLU reused) —
    or None; SettingsError (bad input) for a `layers=` module the model does not have. The model is built
    fresh for the shapes its newest readable checkpoint holds (its weights do not matter: which modules run is
    the architecture's). Only hooked models (`layers=`, torchvision:, module:) are looked at."""
    settings = run.settings
    if not layers and ":" not in settings.arch:
        return None  # a built-in family's own walk: every layer is one block's output, once
    checkpoint = newest_checkpoint(run)
    if checkpoint is None:
        return None  # nothing to measure yet
    try:
        model = models.build(settings, input_shape=tuple(checkpoint["input_shape"]),
                             num_classes=checkpoint["num_classes"], layers=layer_paths(layers))
    except UnknownLayer as error:
        raise SettingsError(str(error)) from None
    return model.layers_problem(tuple(checkpoint["input_shape"])) if isinstance(model, HookedModel) else None


def newest_checkpoint(run: RunRecord) -> dict | None:
    """The newest checkpoint of the run that loads (verified); None when none does (the measuring reports why)."""
    for iteration in sorted(run.entries, reverse=True):
        try:
            return run.load_checkpoint(iteration)
        except RunFolderError:
            continue
    return None


def load_model(run: RunRecord, iteration: int, device, layers: str = "", features_at: str = "post_activation"
               ) -> tuple[dict, models.LayerwiseModel]:
    """The checkpoint (verified against its sha256) and the model it rebuilds alone, with the layers
    `layers=` names (SettingsError listing the model's modules when it has no such one); CorruptFile
    (naming the file) also for a file that hashes right and loads but is not a checkpoint of ours."""
    checkpoint = run.load_checkpoint(iteration, map_location=device)
    path = run.folder.checkpoint_path(iteration)
    if not isinstance(checkpoint, dict) or not {"iteration", "epoch", "stage"} <= checkpoint.keys():
        raise CorruptFile(f"{path} is not a checkpoint (no iteration, epoch and stage); {REMAKE}")
    try:
        model = models.from_checkpoint(checkpoint, layer_paths(layers))
    except UnknownLayer as error:
        raise SettingsError(str(error)) from None
    except Exception as error:  # whatever a foreign file trips on (missing keys, other shapes): name the file
        raise CorruptFile(f"{path} does not rebuild its model ({type(error).__name__}: {error}); {REMAKE}") from None
    if features_at != "post_activation" and isinstance(model, HookedModel):
        raise SettingsError(f"features_at={features_at} does not apply to {checkpoint['settings']['arch']}"
                            f"{' with layers=' + layers if layers else ''}: layers named by module path have no known "
                            "linear output before their activation; accepted: features_at=post_activation")
    return checkpoint, model
