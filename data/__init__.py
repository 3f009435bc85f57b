"""Data: torchvision datasets, the embedded synthetic dataset, label noise, on-device batches.

    dataset = load_dataset(settings, data_root=Path("data"), download=True).to(device)
    labels, changed = apply_label_noise(dataset.train_labels, fraction=0.2, num_classes=10, seed=0)
    stream = TrainingStream(dataset.train_images, labels, batch_size=128, augment=True, seed=0,
                            mean=dataset.mean, std=dataset.std)
    images, targets = stream.batch(iteration)   # a pure function of (iteration, seed, data)

The whole dataset lives as uint8 tensors on the device (airbench style); see stream.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from data import torchvision_sets
from conf.errors import DataError
from conf.global_settings import read_normalization
from data.dataset import ImageDataset, channel_statistics, normalize
from data.noise import apply_label_noise
from data.stream import EpochPlan, TrainingStream, crop_and_flip
from data.subsets import stage_indices, stage_sizes
from data.synthetic import make_synthetic
from data.torchvision_sets import TORCHVISION_DATASETS, download
from utils import seeded_generator

DATASETS: tuple[str, ...] = ("synthetic",) + TORCHVISION_DATASETS

__all__ = [
    "DATASETS", "TORCHVISION_DATASETS", "DataError", "EpochPlan", "ImageDataset", "TrainingStream",
    "apply_label_noise", "channel_statistics", "crop_and_flip", "download",
    "load_dataset", "normalize", "stage_indices", "stage_sizes",
]


_LAST_LOADED: dict = {}  # the two datasets loaded last: a transfer grid alternates a parent's and its children's


def load_dataset(settings, *, data_root: Path, download: bool) -> ImageDataset:
    """The dataset `settings` names, on the CPU, with clean labels and the mean and std its images are
    normalised by: the training split's own statistics, or those `settings.normalization` names (a model
    trained elsewhere with other statistics, e.g. ImageNet's, is fed the inputs it was trained on).

    Uses settings.dataset, data_seed, train_subset, normalization and, for synthetic only, image_size,
    synthetic_classes, synthetic_train_size and synthetic_test_size (torchvision datasets keep their
    native size: 32 px, MNIST 28 px). Raises DataError (one line) when the data is unavailable.
    The last two datasets loaded are kept: a grid's runs, and an experiment's analysis, usually share them.
    Callers must not modify its tensors in place (`.to(device)` and label noise make new ones).
    """
    synthetic = ("image_size", "synthetic_classes", "synthetic_train_size", "synthetic_test_size")
    key = (settings.dataset, settings.data_seed, settings.train_subset, str(Path(data_root).resolve()),
           *(getattr(settings, name) for name in synthetic if settings.dataset == "synthetic"))
    if key not in _LAST_LOADED:
        loaded = _load(settings, data_root=data_root, download=download)
        while len(_LAST_LOADED) >= 2:
            _LAST_LOADED.pop(next(iter(_LAST_LOADED)))
        _LAST_LOADED[key] = loaded
    return normalized_as(_LAST_LOADED[key], settings.normalization)


def normalized_as(dataset: ImageDataset, normalization: str) -> ImageDataset:
    """`dataset` with the mean and std a run's `normalization` names (`[MEAN,...]/[STD,...]`, one per channel:
    conf checked them), as float32; as it is for `dataset` (the training split's own statistics)."""
    if normalization == "dataset":
        return dataset
    mean, std = (torch.tensor(numbers, dtype=torch.float32) for numbers in read_normalization(normalization))
    return dataclasses.replace(dataset, mean=mean, std=std)


def _load(settings, *, data_root: Path, download: bool) -> ImageDataset:
    name = settings.dataset
    if name == "synthetic":
        num_classes = settings.synthetic_classes
        train_images, train_labels, test_images, test_labels = make_synthetic(
            num_classes=num_classes, image_size=settings.image_size, seed=settings.data_seed,
            train_size=settings.synthetic_train_size, test_size=settings.synthetic_test_size)
    elif name in TORCHVISION_DATASETS:
        data_root = Path(data_root)
        num_classes = torchvision_sets.NUMBER_OF_CLASSES[name]
        try:
            train_images, train_labels, test_images, test_labels = torchvision_sets.read_splits(name, data_root)
        except DataError:
            if not download:
                raise
            torchvision_sets.download(name, data_root=data_root)  # DataError naming the fix when offline
            train_images, train_labels, test_images, test_labels = torchvision_sets.read_splits(name, data_root)
    else:
        raise DataError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}")
    train_images, train_labels = _train_subset(train_images, train_labels, settings.train_subset,
                                               settings.data_seed, name)
    mean, std = channel_statistics(train_images)
    return ImageDataset(name=name, train_images=train_images, train_labels=train_labels,
                        test_images=test_images, test_labels=test_labels, num_classes=num_classes,
                        mean=mean, std=std)


def _train_subset(images: torch.Tensor, labels: torch.Tensor, size: int, data_seed: int,
                  name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `size` examples after a seeded shuffle (0 = all).

    A uniform random subset keeps the class balance in expectation (a plain prefix of the files
    would not, for datasets stored sorted by class); seeding by data_seed alone makes subsets of
    different sizes nested, so a warm start (Berariu et al. 2021) sees a subset of the full data.
    """
    if size == 0:
        return images, labels
    if not 0 < size <= images.shape[0]:
        raise DataError(f"train_subset={size} exceeds the {images.shape[0]} training examples of {name}; "
                        f"accepted: 0..{images.shape[0]}")
    chosen = torch.randperm(images.shape[0], generator=seeded_generator(data_seed, "train_subset"))[:size]
    return images[chosen], labels[chosen]
