"""Torchvision datasets, read with torchvision's own classes from `data_root` in their standard layout.

data_root is passed straight to torchvision, so the files sit exactly where torchvision expects
them (`cifar-10-batches-py/`, `cifar-100-python/`, `MNIST/raw/`, `FashionMNIST/raw/`,
`train_32x32.mat` and `test_32x32.mat`) and `python -m data download NAME` on a login node fills
the same folder a compute node later reads offline.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from conf.errors import DataError

logger = logging.getLogger(__name__)

TORCHVISION_DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "mnist", "fashionmnist", "svhn")
NUMBER_OF_CLASSES = {"cifar10": 10, "cifar100": 100, "mnist": 10, "fashionmnist": 10, "svhn": 10}
# A compute node without internet must fail in seconds, not hang on a TCP connect for minutes.
DOWNLOAD_TIMEOUT_SECONDS = 20.0


def _dataset_class(name: str) -> type:
    import torchvision.datasets  # here, not at the top: only runs that use a real dataset pay for it

    return {
        "cifar10": torchvision.datasets.CIFAR10,
        "cifar100": torchvision.datasets.CIFAR100,
        "mnist": torchvision.datasets.MNIST,
        "fashionmnist": torchvision.datasets.FashionMNIST,
        "svhn": torchvision.datasets.SVHN,
    }[name]


def _open_split(name: str, root: Path, *, train: bool, download: bool):
    """One torchvision dataset object; SVHN names its splits, the others take train=True/False."""
    dataset_class = _dataset_class(name)
    if name == "svhn":
        return dataset_class(str(root), split="train" if train else "test", download=download)
    return dataset_class(str(root), train=train, download=download)


def _to_tensors(name: str, split) -> tuple[Tensor, Tensor]:
    """uint8 [N, C, H, W] images and int64 [N] labels from a torchvision dataset object."""
    if name in ("mnist", "fashionmnist"):
        images = split.data.unsqueeze(1)  # uint8 [N, 28, 28] -> [N, 1, 28, 28]
        labels = split.targets
    elif name == "svhn":
        images = torch.from_numpy(np.ascontiguousarray(split.data))  # torchvision already made it NCHW
        labels = torch.from_numpy(np.asarray(split.labels))
    else:
        images = torch.from_numpy(np.ascontiguousarray(split.data.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
        labels = torch.tensor(split.targets)
    return images.to(torch.uint8).contiguous(), labels.to(torch.int64)


def _prefetch_hint(name: str, data_root: Path) -> str:
    return (f"run `python -m data download {name} data_root={data_root}` on a machine with internet, "
            "or pass data_root=PATH")


def _cause(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:160]


def _require_optional_packages(name: str) -> None:
    """SVHN's .mat files need scipy, which torchvision imports lazily: say so before any download."""
    if name == "svhn":
        try:
            import scipy.io  # noqa: F401
        except ImportError as error:
            raise DataError("svhn needs scipy to read its .mat files: install scipy (pip install scipy)") from error


def read_splits(name: str, data_root: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train_images, train_labels, test_images, test_labels) from files already under data_root.

    Raises DataError when files are missing or fail torchvision's checks (CIFAR and SVHN files are
    verified against their md5, so a truncated or foreign file never reads as valid), and when
    parsing fails for any other reason (a corrupt MNIST file, say).
    """
    _require_optional_packages(name)
    try:
        train = _to_tensors(name, _open_split(name, data_root, train=True, download=False))
        test = _to_tensors(name, _open_split(name, data_root, train=False, download=False))
    except Exception as error:  # torchvision raises RuntimeError; a corrupt pickle anything else
        raise DataError(f"{name} not found (or corrupted) under {data_root} ({_cause(error)}): "
                        f"{_prefetch_hint(name, data_root)}") from error
    return train + test


def download(name: str, *, data_root: Path) -> None:
    """Fetch the train and test splits of a torchvision dataset into data_root; DataError if it fails.

    Files are downloaded into a hidden staging folder inside data_root and moved into place one by
    one with an atomic rename only after both splits downloaded and verified. So a download killed
    or failing midway leaves nothing that looks valid (torchvision only md5-checks CIFAR and SVHN
    files; MNIST's extracted files are checked for existence alone, so staging is what protects them).
    """
    if name not in TORCHVISION_DATASETS:
        raise DataError(f"unknown dataset {name!r}; accepted: {', '.join(TORCHVISION_DATASETS)}")
    data_root = Path(data_root)
    _require_optional_packages(name)
    try:
        read_splits(name, data_root)
        logger.info("%s already present under %s", name, data_root)
        return
    except DataError:
        pass
    created_root = not data_root.exists()
    data_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".download-{name}-", dir=data_root))
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)
    try:
        for train in (True, False):
            _open_split(name, staging, train=train, download=True)
        _move_files(staging, data_root)
    except Exception as error:  # URLError, socket.timeout, torchvision's RuntimeError, a full disk ...
        shutil.rmtree(staging, ignore_errors=True)
        if created_root and not any(data_root.iterdir()):
            data_root.rmdir()  # a failed download leaves nothing behind
        raise DataError(f"{name} not found under {data_root} and it could not be downloaded (offline?) "
                        f"({_cause(error)}): {_prefetch_hint(name, data_root)}") from error
    finally:
        socket.setdefaulttimeout(previous_timeout)
        shutil.rmtree(staging, ignore_errors=True)
    read_splits(name, data_root)  # what was moved must read back, or the user hears it now
    logger.info("%s downloaded into %s", name, data_root)


def _move_files(staging: Path, data_root: Path) -> None:
    """Move every file from staging to the same relative path under data_root (rename: atomic per file)."""
    for source in sorted(path for path in staging.rglob("*") if path.is_file()):
        target = data_root / source.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
