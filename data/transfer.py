"""Transfer tasks: labels the network never trained on, read through its features by a probe.

A transfer task is a registry entry (DESIGN contract 7), chosen by name with `transfer_task=`:

    task = TRANSFER_TASKS["brightness"]
    label = task.labeller(train_images, train_labels, mean, std)   # fitted on the training split
    labels = label(images, class_labels)                           # int64 [N] in 0..task.classes(...)-1

Each task says which datasets it applies to (`task.refusal(dataset, channels)`: None, or why not)
and how many classes it has. The tasks of LearnPhase (Schneider & Prabhushankar, AAAI 2024; its
code's `trainTask`): 0 = colour dominance (R, G or B) and 1 = the other dataset's classes
(FashionMNIST <-> MNIST, CIFAR-10 <-> CIFAR-100). A probe for such a task first gains, then loses
accuracy as the network discards what its own labels do not need. Grayscale images have no colour:
for them `brightness` (terciles of the mean pixel) plays the part of colour dominance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

COLOURS = ("red", "green", "blue")
# LearnPhase's trainTask=1 pairs (its mainMet.py): each dataset's probe reads the other one's classes.
# The synthetic dataset's partner is itself drawn with the next data seed (analysis.py).
PARTNERS = {"fashionmnist": "mnist", "mnist": "fashionmnist", "cifar10": "cifar100", "cifar100": "cifar10",
            "synthetic": "synthetic"}

Labels = Callable[[Tensor, Tensor], Tensor]  # (uint8 images [N, C, H, W], class labels [N]) -> int64 [N]


@dataclass(frozen=True)
class TransferTask:
    """One transfer task: what it labels, for which datasets, with how many classes."""

    name: str
    paper: str
    refusal: Callable[[str, int], str | None]  # (dataset, channels) -> None when it applies, else why not
    labeller: Callable[[Tensor, Tensor, Tensor, Tensor], Labels]  # (train images, labels, mean, std) -> rule
    classes: Callable[[int], int]  # the task's classes, from the number of classes of the dataset it reads
    reads_partner: bool = False  # reads the PARTNERS dataset's images instead of the run's own


TRANSFER_TASKS: dict[str, TransferTask] = {}


def register_task(task: TransferTask) -> TransferTask:
    if task.name in TRANSFER_TASKS:
        raise ValueError(f"transfer task {task.name!r} is registered twice")
    TRANSFER_TASKS[task.name] = task
    return task


def colour_dominance_labels(images: Tensor, mean: Tensor | None = None, std: Tensor | None = None) -> Tensor:
    """int64 [N] in {0: red, 1: green, 2: blue}: argmax over channels of the summed pixels of uint8 images.

    Without mean and std: the raw uint8 sums. With them: the sums of the normalised image
    (x / 255 - mean) / std, as the network sees it; LearnPhase sums its normalised float inputs
    (mainMet.py, trainTask=0). Both come from exact int64 raw sums (a float32 sum could tie-break
    differently on another device), normalised in float64; exact ties go to the first channel.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"colour dominance needs RGB [N, 3, H, W] images, got {tuple(images.shape)}")
    sums = images.to(torch.int64).sum(dim=(2, 3))
    if mean is None:
        return sums.argmax(dim=1)
    pixels = images.shape[2] * images.shape[3]
    mean, std = (value.to(device=images.device, dtype=torch.float64) for value in (mean, std))
    return ((sums.to(torch.float64) / 255.0 - pixels * mean) / std).argmax(dim=1)


def brightness_terciles(train_images: Tensor) -> Tensor:
    """float64 [2]: the 1/3 and 2/3 quantiles of the training images' summed pixels (all channels), so
    the three brightness classes hold a third of the training split each (ties aside)."""
    return torch.quantile(train_images.to(torch.int64).sum(dim=(1, 2, 3)).to(torch.float64),
                          torch.tensor([1 / 3, 2 / 3], dtype=torch.float64, device=train_images.device))


def brightness_labels(images: Tensor, terciles: Tensor) -> Tensor:
    """int64 [N] in {0: dark, 1: medium, 2: bright}: which tercile of the training split the image's
    mean pixel (raw uint8, all channels; compared as exact sums) falls in; a value on a threshold
    goes to the darker class."""
    sums = images.to(torch.int64).sum(dim=(1, 2, 3)).to(torch.float64)
    return torch.bucketize(sums, terciles.to(sums.device), right=False)


def _needs_colour(dataset: str, channels: int) -> str | None:
    return None if channels == 3 else f"it needs 3 colour channels (R, G, B) and {dataset} has {channels}"


def _needs_partner(dataset: str, channels: int) -> str | None:
    return None if dataset in PARTNERS else (
        f"{dataset} has no other dataset to read (LearnPhase pairs FashionMNIST with MNIST and CIFAR-10 "
        "with CIFAR-100)")


def _normalised_colour(train_images: Tensor, train_labels: Tensor, mean: Tensor, std: Tensor) -> Labels:
    return lambda images, labels: colour_dominance_labels(images, mean, std)


def _raw_colour(train_images: Tensor, train_labels: Tensor, mean: Tensor, std: Tensor) -> Labels:
    return lambda images, labels: colour_dominance_labels(images)


def _brightness(train_images: Tensor, train_labels: Tensor, mean: Tensor, std: Tensor) -> Labels:
    terciles = brightness_terciles(train_images)  # from the training split only: its classes are balanced
    return lambda images, labels: brightness_labels(images, terciles)


def _class_labels(train_images: Tensor, train_labels: Tensor, mean: Tensor, std: Tensor) -> Labels:
    return lambda images, labels: labels


LEARNPHASE = "Schneider & Prabhushankar, AAAI 2024 (LearnPhase)"
register_task(TransferTask("colour_dominance", f"{LEARNPHASE}: colour dominance of the normalised image",
                           _needs_colour, _normalised_colour, lambda dataset_classes: len(COLOURS)))
register_task(TransferTask("colour_dominance_raw", f"{LEARNPHASE}: colour dominance of the raw uint8 image "
                           "(the pixels as stored, whatever the normalisation)", _needs_colour, _raw_colour,
                           lambda dataset_classes: len(COLOURS)))
register_task(TransferTask("brightness", "terciles of the mean pixel: colour dominance's stand-in for grayscale "
                           "images (this lab)", lambda dataset, channels: None, _brightness, lambda dataset_classes: 3))
register_task(TransferTask("other_dataset_classes", f"{LEARNPHASE}: trainTask=1, the other dataset's classes",
                           _needs_partner, _class_labels, lambda dataset_classes: dataset_classes, reads_partner=True))


@dataclass(frozen=True)
class TaskChoice:
    """The task chosen for one run, the dataset whose images it reads ("own" = the run's), or why none."""

    task: TransferTask | None
    source: str = "own"
    reason: str = ""

    def describe(self) -> str:
        if self.task is None:
            return f"none ({self.reason})"
        return self.task.name + ("" if self.source == "own" else f" on {self.source} images")


def choose_task(option: str, dataset: str, channels: int, transfer_dataset: str = "own") -> TaskChoice:
    """`transfer_task=option` for a run on `dataset`: auto = colour_dominance for RGB images,
    brightness otherwise; none; or a registered name. A task that does not apply gives no task and
    the reason (the metric is skipped, never a crash). `transfer_dataset` names the images read
    (own = the run's; for other_dataset_classes, own = its partner dataset)."""
    if option == "none":
        return TaskChoice(None, reason="transfer_task=none")
    name = ("colour_dominance" if channels == 3 else "brightness") if option == "auto" else option
    if name not in TRANSFER_TASKS:
        raise ValueError(f"unknown transfer task {name!r}; accepted: auto, none, {', '.join(TRANSFER_TASKS)}")
    task = TRANSFER_TASKS[name]
    refusal = task.refusal(dataset, channels) if not (task.reads_partner and transfer_dataset != "own") else None
    if refusal:
        return TaskChoice(None, reason=f"{name} does not apply to {dataset}: {refusal}")
    source = PARTNERS[dataset] if task.reads_partner and transfer_dataset == "own" else transfer_dataset
    return TaskChoice(task, source)
