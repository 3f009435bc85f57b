"""The in-memory dataset record every loader returns, and input normalisation (the error type of missing data,
DataError, is conf/errors.py's: torch-free).

A dataset is a handful of tensors (airbench style): the whole training and test split as uint8
NCHW, moved to the device once. Everything downstream (batches, augmentation, probes) indexes them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ImageDataset:
    """Train and test splits as uint8 [N, C, H, W] images and int64 [N] clean labels."""

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    # float32 [C]: what the images are normalised by, (x / 255 - mean) / std: per-channel mean and population standard
    # deviation of train_images / 255 (channel_statistics), or the statistics the run's `normalization` names
    mean: Tensor
    std: Tensor

    def to(self, device: torch.device | str) -> ImageDataset:
        """The same dataset with every tensor on `device` (a no-op copy-free move if already there)."""
        return dataclasses.replace(
            self,
            train_images=self.train_images.to(device),
            train_labels=self.train_labels.to(device),
            test_images=self.test_images.to(device),
            test_labels=self.test_labels.to(device),
            mean=self.mean.to(device),
            std=self.std.to(device),
        )


def channel_statistics(images: Tensor, chunk_size: int = 4096) -> tuple[Tensor, Tensor]:
    """Per-channel mean and population std (no Bessel correction) of uint8 `images` / 255 over every pixel of
    the channel, as float32 [C]: the lab's one normalisation rule, which load_dataset gives every run that names
    no statistics of its own (`normalization=dataset`) and metrics.measure uses when no `normalization=` is
    given, so both feed a model the same float32 inputs.

    Sums of pixels and of squared pixels are accumulated as exact integers (chunked, so CIFAR's
    150 M pixels never become a 1.2 GB float64 copy); only the final division is floating point,
    in float64, which avoids the E[x^2] - E[x]^2 cancellation that float32 accumulation suffers.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 [N, C, H, W] images, got {images.dtype} {tuple(images.shape)}")
    channels = images.shape[1]
    pixel_sum = torch.zeros(channels, dtype=torch.int64, device=images.device)
    square_sum = torch.zeros(channels, dtype=torch.int64, device=images.device)
    for start in range(0, images.shape[0], chunk_size):
        chunk = images[start:start + chunk_size].to(torch.int64)
        pixel_sum += chunk.sum(dim=(0, 2, 3))
        square_sum += (chunk * chunk).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    means, stds = [], []
    for total, total_of_squares in zip(pixel_sum.tolist(), square_sum.tolist()):
        # Python integers are exact: count * sum(x^2) - sum(x)^2 is the variance numerator, no rounding.
        variance = (count * total_of_squares - total * total) / (count * count)
        means.append(total / count / 255.0)
        stds.append(variance**0.5 / 255.0)
    mean = torch.tensor(means, dtype=torch.float64).to(torch.float32)
    # A constant channel (std 0) would divide by zero in normalize; 1/255 (one grey level) is harmless (and
    # lifts a nearly constant one alike). metrics.measure refuses a constant channel rather than choose for it.
    std = torch.tensor(stds, dtype=torch.float64).clamp_min(1.0 / 255.0).to(torch.float32)
    return mean, std


def normalize(images_uint8: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """float32 (x / 255 - mean) / std for uint8 [..., C, H, W] images, on the images' device."""
    device = images_uint8.device
    mean = mean.to(device=device, dtype=torch.float32).view(-1, 1, 1)
    std = std.to(device=device, dtype=torch.float32).view(-1, 1, 1)
    return (images_uint8.to(torch.float32) / 255.0 - mean) / std
