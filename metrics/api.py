"""The analysis from Python, on any model and tensors: what a notebook or one's own training loop calls.

    from metrics import measure
    table = measure(model, train=(images, labels), test=(images, labels), layers=["layer1", "layer2"],
                    metrics=["ncc_accuracy", "nc1", "cka_previous_layer"], device="cuda")

`table` holds the tidy rows analysis.py writes for one checkpoint (layer, metric, split, value, l2,
dimensions, layer_index), computed by the same engine (metrics/engine.py) in the same order, so a run's
checkpoint measured here on the data it trained on gives analysis.py's values bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import torch

from conf.analysis import Analysis
from metrics import engine, registry
from models.base import LayerwiseModel
from models.hooked import HookedModel


def measure(model: torch.nn.Module, *, train, test, layers: list[str] | None = None, metrics="all",
            device: str | torch.device | None = None, num_classes: int | None = None, seed: int = 0,
            normalization: tuple | None = None, **options) -> pd.DataFrame:
    """Every layer's rows of `metrics` (names, or `all`: those that apply without a transfer task) on
    `train` and `test`, each (images, labels) tensors or a DataLoader of such batches.

    Images: uint8 [N, C, H, W] are scaled as the lab's datasets are, (x / 255 − mean) / std with
    `normalization=(mean, std)` per channel (default: the training images' own); float images are taken as
    already normalised. `layers`: module paths read by forward hooks (models/hooked.py); None keeps a
    built-in model's own layers, and for any other module takes its top-level children but the last.
    `seed` draws the ridge probes' held-out part, as a run's seed does in analysis.py; `options` are
    analysis options (`probe_dimensions=256`, `heldout_fraction=0.2`, ...: `python analysis.py --help`).
    SettingsError (one line) for an unknown metric or option; UnknownLayer for a module `layers` names
    that the model does not have."""
    analysis = Analysis(metrics=metrics if isinstance(metrics, str) else ",".join(metrics), **options)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = layered(model, layers).to(device).eval()
    train = train if isinstance(train, (tuple, list)) else concatenated(train)
    if normalization is None and not train[0].is_floating_point():  # the training images' own, in [0, 1] units
        scaled = train[0].to(torch.float64) / 255
        normalization = (scaled.mean(dim=(0, 2, 3)), scaled.std(dim=(0, 2, 3)))
    train_split, test_split = (split_of(part, device, normalization) for part in (train, test))
    classes = num_classes or int(max(train_split.labels.max(), test_split.labels.max())) + 1
    names = engine.applicable(registry.select(analysis.metrics), None, analysis)
    rows, _ = engine.measure_layers(model, train_split, test_split, classes, analysis, seed=seed, metrics=names)
    frame = pd.DataFrame(rows)
    index = {layer: position for position, layer in enumerate(model.layer_names())}
    frame["layer_index"] = frame["layer"].map(index).fillna(-1).astype(int)
    return frame


def layered(model: torch.nn.Module, layers: list[str] | None):
    """A model the engine can walk: a built-in one as it is, else (or with `layers`) a HookedModel."""
    if isinstance(model, HookedModel):
        return HookedModel(model.module, layers, token_streams=model.token_streams) if layers else model
    if isinstance(model, LayerwiseModel) and not layers:
        return model
    chosen = layers or [name for name, _ in model.named_children()][:-1]
    return HookedModel(model, chosen, token_streams=getattr(model, "token_streams", False))


def split_of(part, device: torch.device, normalization: tuple | None) -> engine.SplitData:
    """(images, labels) or a DataLoader of them as the engine's split, on `device`; uint8 images are
    normalised by `normalization` (mean, std) batch by batch."""
    images, labels = part if isinstance(part, (tuple, list)) else concatenated(part)
    images, labels = images.to(device), labels.to(device=device, dtype=torch.long)
    channels = images.shape[1]
    if images.is_floating_point():  # already normalised: the engine reads them as they are
        return engine.SplitData(images, labels, torch.zeros(channels), torch.ones(channels))
    mean, std = (torch.as_tensor(value, dtype=torch.float32) for value in normalization)
    return engine.SplitData(images, labels, mean, std)


def concatenated(loader: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
    """A DataLoader's (images, labels) batches as two tensors."""
    images, labels = zip(*((batch[0], batch[1]) for batch in loader))
    return torch.cat(images), torch.cat(labels)
