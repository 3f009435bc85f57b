"""The analysis from Python, on any model and tensors: what a notebook or one's own training loop calls.

    from metrics import measure
    table = measure(model, train=(images, labels), test=(images, labels), layers=["layer1", "layer2"],
                    metrics=["ncc_accuracy", "nc1", "cka_previous_layer"], device="cuda")

`table` holds the tidy rows analysis.py writes for one checkpoint (layer, metric, split, value, l2,
dimensions, layer_index), computed by the same engine (metrics/engine.py) in the same order and with
the same normalisation (data.channel_statistics), so a run's checkpoint measured here on the data it
trained on gives analysis.py's values bit for bit.
"""

from __future__ import annotations

import pandas as pd
import torch

from metrics import arguments, engine, registry
from models.base import LayerwiseModel
from models.hooked import HookedModel


def measure(model: torch.nn.Module, *, train, test, layers: list[str] | None = None, metrics="all",
            device: str | torch.device | None = None, num_classes: int | None = None, seed: int = 0,
            normalization: tuple | None = None, **options) -> pd.DataFrame:
    """Every layer's rows of `metrics` (names, or `all`: those that apply without a transfer task) on
    `train` and `test`, each (images, labels) tensors or a DataLoader of such batches.

    Images: uint8 [N, C, H, W] are scaled as the lab's datasets are, (x / 255 − mean) / std per channel in
    float32, with `normalization=(mean, std)` or by default the training images' own mean and population
    std (data.channel_statistics, the rule every run's dataset is normalised by, so a run's checkpoint on
    the images it trained on gives analysis.py's values bit for bit without `normalization=`); float images
    are taken as already normalised. `layers`: module paths read by forward hooks (models/hooked.py); None keeps a
    built-in model's own layers, and for any other module takes its top-level children but the last.
    `seed` draws the ridge probes' held-out part, as a run's seed does in analysis.py; `options` are
    analysis options (`probe_dimensions=256`, `heldout_fraction=0.2`, ...: `python analysis.py --help`).
    Refused before anything is computed, by one SettingsError whose line starts with the argument's name
    and says what was given and what is accepted (metrics/arguments.py):
    - `model` not an nn.Module;
    - `train`/`test` neither an (images, labels) pair of tensors nor an iterable of (images, labels[, ...])
      batches (a list of 3 tensors, a dict, a numpy array, None); batches of differing [C, H, W] or dtype;
    - images not a 4-D [N, C, H, W] tensor of uint8 or floating point, or float of another dtype than the
      model's parameters; labels not a 1-D integer tensor (float, one-hot, bool) or negative;
    - a split whose images and labels differ in number, or that is empty; test images of another [C, H, W];
    - labels >= `num_classes`; `num_classes` not an int or below 2 (counted: labels of one class only);
    - `normalization` not (mean, std) of one value or one per channel, a std <= 0, a constant training
      channel when it is counted, or none for uint8 test images beside float training ones;
    - `layers` not a list of module paths (a plain "layer1" too); `metrics` neither "all" nor names, or an
      unknown name; `device` not a CPU or available CUDA device; `seed` not an int;
    - an unknown option, or an option of the wrong type or range.
    UnknownLayer for a module `layers` names that the model does not have."""
    checked = arguments.checked(model, train=train, test=test, layers=layers, metrics=metrics, device=device,
                                num_classes=num_classes, seed=seed, normalization=normalization, options=options)
    model = layered(model, layers).to(checked.device).eval()
    train_split, test_split = (split_of(part, checked.device, checked.normalization)
                               for part in (checked.train, checked.test))
    analysis = checked.analysis
    names = engine.applicable(registry.select(analysis.metrics), None, analysis)
    rows, _ = engine.measure_layers(model, train_split, test_split, checked.num_classes, analysis, seed=checked.seed,
                                    metrics=names)
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


def split_of(part: tuple[torch.Tensor, torch.Tensor], device: torch.device,
             normalization: tuple | None) -> engine.SplitData:
    """Checked (images, labels) as the engine's split, on `device`; uint8 images are normalised by
    `normalization` (float32 mean, std) batch by batch."""
    images, labels = part
    images, labels = images.to(device), labels.to(device=device, dtype=torch.long)
    channels = images.shape[1]
    if images.is_floating_point():  # already normalised: the engine reads them as they are
        return engine.SplitData(images, labels, torch.zeros(channels), torch.ones(channels))
    return engine.SplitData(images, labels, *normalization)
