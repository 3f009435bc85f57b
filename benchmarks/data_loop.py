"""python benchmarks/data_loop.py [iterations=60] [device=cpu] — training throughput, ours vs the seeds' loop.

Trains the same model with the same batch size, optimizer and augmentation (random crop with
padding 4 + horizontal flip) two ways, in one process:

- baseline: the seeds' approach (IntermediateNC, LearnPhase): a torchvision-style Dataset of PIL
  images, `transforms.Compose([RandomCrop, RandomHorizontalFlip, ToTensor, Normalize])`, a
  `DataLoader` with shuffling (worker processes: 0 and 2, both reported);
- ours: the whole dataset as a uint8 tensor on the device, `data.TrainingStream` (batched tensor ops).

Prints img/s for each and the ratio ours / best baseline (target: >= 3x for mlp and a small CONV-L-W).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as functional
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import data  # noqa: E402
import models  # noqa: E402
from conf import Settings  # noqa: E402

BATCH_SIZE = 128
MODELS = {  # (label, settings): the MLP and a small CONV-L-W, both IntermediateNC families
    "mlp (depth 3, width 256)": dict(arch="mlp", depth=3, width=256),
    "convnet (CONV-3-32)": dict(arch="convnet", depth=3, width=32),
}


class PillowImages(Dataset):
    """The seeds' dataset: one PIL image per example, transformed one at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(self.images[index]), self.labels[index]


def time_steps(model, optimizer, batches, iterations: int, device: torch.device) -> float:
    """Images per second over `iterations` steps, after 5 warm-up steps."""
    def step(images, labels):
        loss = functional.cross_entropy(model(images.to(device, non_blocking=True)), labels.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step(*next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        step(*next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return iterations * BATCH_SIZE / (time.perf_counter() - start)


def forever(loader):
    while True:
        yield from loader


def measure(model_settings: dict, dataset: data.ImageDataset, iterations: int, device: torch.device) -> dict:
    settings = Settings(**model_settings)
    results = {}
    mean, std = dataset.mean.tolist(), dataset.std.tolist()
    transform = transforms.Compose([transforms.RandomCrop(dataset.train_images.shape[-1], padding=4),
                                    transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                    transforms.Normalize(mean, std)])
    pillow = PillowImages(dataset.train_images, dataset.train_labels, transform)
    on_device = dataset.to(device)
    stream = data.TrainingStream(on_device.train_images, on_device.train_labels, batch_size=BATCH_SIZE, augment=True,
                                 seed=0, mean=on_device.mean, std=on_device.std)
    loops = {
        "DataLoader+PIL, 0 workers": lambda: forever(DataLoader(pillow, batch_size=BATCH_SIZE, shuffle=True, drop_last=True)),
        "DataLoader+PIL, 2 workers": lambda: forever(DataLoader(pillow, batch_size=BATCH_SIZE, shuffle=True, drop_last=True,
                                                                num_workers=2, persistent_workers=True)),
        "ours (device tensors)": lambda: (stream.batch(iteration) for iteration in range(10 ** 9)),
    }
    for name, make_batches in loops.items():
        torch.manual_seed(0)
        model = models.build(settings, input_shape=tuple(dataset.train_images.shape[1:]),
                             num_classes=dataset.num_classes).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        results[name] = time_steps(model, optimizer, make_batches(), iterations, device)
    return results


def main(arguments: list[str]) -> int:
    options = dict(argument.split("=", 1) for argument in arguments)
    iterations = int(options.get("iterations", 60))
    device = torch.device(options.get("device", "cpu"))
    dataset = data.load_dataset(Settings(), data_root=Path("datasets"), download=False)
    print(f"training throughput on {device} ({torch.get_num_threads()} threads), batch {BATCH_SIZE}, "
          f"{iterations} timed steps, synthetic 3x32x32, crop+flip augmentation")
    print(f"{'model':<28} {'loop':<28} {'img/s':>9} {'ratio':>7}")
    for label, model_settings in MODELS.items():
        results = measure(model_settings, dataset, iterations, device)
        best_baseline = max(value for name, value in results.items() if name.startswith("DataLoader"))
        for name, value in results.items():
            print(f"{label:<28} {name:<28} {value:>9.0f} {value / best_baseline:>6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
