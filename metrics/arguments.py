"""metrics.measure's arguments, checked before anything is computed: a bad one is one SettingsError whose line
starts with the argument's name and says what was given and what is accepted.

    checked = arguments.checked(model, train=train, test=test, layers=layers, metrics=metrics, device=device,
                                num_classes=num_classes, seed=seed, normalization=normalization, options=options)
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
from collections.abc import Iterable, Mapping

import torch

from conf.analysis import Analysis
from conf.errors import SettingsError
from data import channel_statistics
from metrics import registry

SPLIT = "an (images, labels) pair of tensors, or a DataLoader (any iterable) of (images, labels[, ...]) batches"
IMAGES = ("a 4-D tensor [N, C, H, W] of uint8 (0 to 255, normalised here) or floating point (taken as "
          "normalised)")
LABELS = "a 1-D integer tensor [N] of class indices (one-hot labels: labels.argmax(1); float ones: labels.long())"
NORMALIZATION = ("(mean, std), each one number or one per image channel, std > 0; or None (the training images' own "
                 "mean and population std, data.channel_statistics)")
DEVICES = "'cpu', 'cuda' or 'cuda:N' (with CUDA available), a torch.device of them, or None (cuda when available)"
MEASURE_OWN = ("metrics", "layers")  # Analysis fields that are measure's own arguments, not options


@dataclasses.dataclass(frozen=True)
class Checked:
    """measure's arguments, checked: splits as (images, labels) tensors, normalization as float32 (mean, std)
    (None: both splits' images are float), the number of classes given or counted."""

    analysis: Analysis
    device: torch.device
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    num_classes: int
    seed: int
    normalization: tuple[torch.Tensor, torch.Tensor] | None


def checked(model, *, train, test, layers, metrics, device, num_classes, seed, normalization, options) -> Checked:
    """Every argument of measure checked, cheap ones first, then the splits (a loader is read once, here)."""
    check_model(model)
    check_layers(layers)
    seed, num_classes = whole_number("seed", seed, "an integer, e.g. the run's seed"), checked_num_classes(num_classes)
    analysis, device = checked_analysis(metrics, options), checked_device(device)
    train, test = checked_split("train", train), checked_split("test", test)
    check_same_image_shape(train[0], test[0])
    for name, (images, _) in (("train", train), ("test", test)):
        check_model_dtype(name, images, model)
    classes = counted_classes(num_classes, train[1], test[1])
    normalization = checked_normalization(normalization, train[0], test[0])
    return Checked(analysis, device, train, test, classes, seed, normalization)


def described(value) -> str:
    """What was given, in a few words: a tensor's dtype and shape, an array's shape, a container's length."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of {str(value.dtype).removeprefix('torch.')}, shape {list(value.shape)}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"a {type(value).__module__.split('.')[0]}.{type(value).__name__} of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple, Mapping)):
        return f"a {type(value).__name__} of {len(value)} item{'' if len(value) == 1 else 's'}"
    if value is None or isinstance(value, (str, numbers.Number)):
        return repr(value) if len(repr(value)) <= 40 else f"a {type(value).__name__}"
    return f"a {type(value).__name__}"


def whole_number(argument: str, value, accepted: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise SettingsError(f"{argument}={value!r} is not an integer; accepted: {accepted}")
    return int(value)


def check_model(model) -> None:
    if not isinstance(model, torch.nn.Module):
        raise SettingsError(f"model: {described(model)}; accepted: a torch.nn.Module whose forward maps images to "
                            "logits")


def check_layers(layers) -> None:
    if isinstance(layers, str):
        paths = [path.strip() for path in layers.split(",") if path.strip()]
        raise SettingsError(f"layers={layers!r} is one text; accepted: a list of module paths, e.g. {paths!r}, "
                            "or None (the model's own layers)")
    if layers is not None and not (isinstance(layers, (list, tuple))
                                   and all(isinstance(layer, str) and layer for layer in layers)):
        raise SettingsError(f"layers={layers!r} is not a list of module paths; accepted: a list of module paths, "
                            "e.g. ['layer1', 'layer2'], or None (the model's own layers)")


def checked_num_classes(num_classes) -> int | None:
    accepted = "an integer >= 2, or None (the largest label + 1)"
    if num_classes is not None and whole_number("num_classes", num_classes, accepted) < 2:
        raise SettingsError(f"num_classes={num_classes!r} is below 2; accepted: {accepted}")
    return None if num_classes is None else int(num_classes)


def checked_analysis(metrics, options: dict) -> Analysis:
    """The Analysis of `metrics` ('all', names separated by commas, or a list of names) and `options`."""
    if isinstance(metrics, (list, tuple)) and all(isinstance(name, str) for name in metrics):
        metrics = ",".join(metrics)
    if not isinstance(metrics, str):
        raise SettingsError(f"metrics={metrics!r} is neither 'all' nor a list of names; accepted: 'all', or a list "
                            "of metric names such as ['ncc_accuracy', 'nc1'] (metrics/registry.py)")
    registry.select(metrics)  # SettingsError naming the unknown ones
    known = [item.name for item in dataclasses.fields(Analysis) if item.name not in MEASURE_OWN]
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            guess = f" (did you mean {close[0]}?)" if close else ""
            raise SettingsError(f"{name} is not an analysis option{guess}; accepted: {', '.join(known)} "
                                "(python analysis.py --help)")
    return Analysis(metrics=metrics, **options)  # SettingsError for an option's wrong type or range


def checked_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device) if isinstance(device, (str, torch.device)) else None
    except RuntimeError:
        chosen = None
    if chosen is None or chosen.type not in ("cpu", "cuda"):
        raise SettingsError(f"device={device!r} is not a CPU or CUDA device; accepted: {DEVICES}")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"device={device!r}: CUDA is not available here; accepted: {DEVICES}")
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise SettingsError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA devices; "
                            f"accepted: {DEVICES}")
    return chosen


def checked_split(name: str, part) -> tuple[torch.Tensor, torch.Tensor]:
    """`part` as (images, labels) tensors: a pair as it is, a loader's batches concatenated."""
    sequence = isinstance(part, (list, tuple))
    of_batches = sequence and all(isinstance(item, (list, tuple)) for item in part)
    if sequence and len(part) == 2 and not of_batches:
        images, labels = part
        check_pair(name, images, labels)
    elif of_batches or (not sequence and is_loader(part)):
        images, labels = concatenated(name, part)
    else:
        raise SettingsError(f"{name}: {described(part)}; accepted: {SPLIT}")
    if len(labels) == 0:
        raise SettingsError(f"{name}: no images; accepted: {SPLIT} of at least one image")
    return images, labels


def is_loader(part) -> bool:
    """Iterable as a DataLoader is: not a tensor, an array, a text or a mapping (which iterate otherwise)."""
    return isinstance(part, Iterable) and not isinstance(part, (torch.Tensor, str, bytes, Mapping)) \
        and not hasattr(part, "__array__")


def concatenated(name: str, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader's (images, labels[, ...]) batches as two tensors, each batch checked as a pair and like the first."""
    images, labels = [], []
    for number, batch in enumerate(loader, start=1):
        where = f"{name} batch {number}"
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise SettingsError(f"{where}: {described(batch)}; accepted: batches (images, labels[, ...]) of tensors")
        check_pair(where, batch[0], batch[1])
        if images and (batch[0].shape[1:], batch[0].dtype) != (images[0].shape[1:], images[0].dtype):
            raise SettingsError(f"{where}: images are {described(batch[0])}, batch 1's {described(images[0])}; "
                                "accepted: batches of images of one [C, H, W] and one dtype")
        images.append(batch[0])
        labels.append(batch[1])
    if not images:
        raise SettingsError(f"{name}: no batches; accepted: {SPLIT} of at least one image")
    return torch.cat(images), torch.cat(labels)


def check_pair(where: str, images, labels) -> None:
    """Images [N, C, H, W] uint8 or float, labels [N] integer and >= 0, as many of each."""
    if not (isinstance(images, torch.Tensor) and images.dim() == 4
            and (images.dtype == torch.uint8 or images.is_floating_point())):
        raise SettingsError(f"{where}: images are {described(images)}; accepted: {IMAGES}")
    integer = isinstance(labels, torch.Tensor) and not (labels.is_floating_point() or labels.is_complex()) \
        and labels.dtype != torch.bool
    if not (integer and labels.dim() == 1):
        raise SettingsError(f"{where}: labels are {described(labels)}; accepted: {LABELS}")
    if len(images) != len(labels):
        raise SettingsError(f"{where}: {len(images)} images but {len(labels)} labels; accepted: one label per image")
    if len(labels) and int(labels.min()) < 0:
        raise SettingsError(f"{where}: labels hold {int(labels.min())}; accepted: class indices >= 0")


def check_same_image_shape(train_images: torch.Tensor, test_images: torch.Tensor) -> None:
    if train_images.shape[1:] != test_images.shape[1:]:
        raise SettingsError(f"test: images are {list(test_images.shape[1:])} each, the train images "
                            f"{list(train_images.shape[1:])}; accepted: test images of the train images' [C, H, W]")


def check_model_dtype(name: str, images: torch.Tensor, model: torch.nn.Module) -> None:
    """Float images of the model's parameters' dtype (uint8 ones are normalised to float32)."""
    fed = images.dtype if images.is_floating_point() else torch.float32
    expected = next((parameter.dtype for parameter in model.parameters() if parameter.is_floating_point()), fed)
    if fed != expected:
        raise SettingsError(f"{name}: images reach the model as {fed}, its parameters are {expected}; accepted: "
                            f"uint8 images for a float32 model, or float images of the model's dtype "
                            f"(images.to({expected}))")


def counted_classes(num_classes: int | None, train_labels: torch.Tensor, test_labels: torch.Tensor) -> int:
    """`num_classes`, above every label, or the largest label + 1 (at least 2)."""
    largest = max(int(train_labels.max()), int(test_labels.max()))
    if num_classes is not None and largest >= num_classes:
        raise SettingsError(f"num_classes={num_classes}: the labels reach {largest}; accepted: an integer above "
                            f"the largest label ({largest + 1} or more), or None (the largest label + 1)")
    if num_classes is None and largest < 1:
        raise SettingsError("num_classes=None: the labels hold class 0 only; accepted: labels of at least 2 "
                            "classes, or num_classes >= 2")
    return num_classes or largest + 1


def checked_normalization(normalization, train_images: torch.Tensor, test_images: torch.Tensor):
    """float32 (mean, std): the given ones, else the uint8 training images' own by the lab's one rule
    (data.channel_statistics, as every run's dataset is normalised); None when both splits are float (taken
    as normalised)."""
    if normalization is not None:
        return given_normalization(normalization, train_images.shape[1])
    if train_images.dtype == torch.uint8:
        check_no_constant_channel(train_images)
        return channel_statistics(train_images)
    if test_images.dtype == torch.uint8:
        raise SettingsError("normalization=None: the test images are uint8 but the train images float, which give "
                            f"no mean and std; accepted: {NORMALIZATION}, or both splits uint8 or both float")
    return None


def check_no_constant_channel(train_images: torch.Tensor) -> None:
    """Refuse a constant training channel: its std is 0, which the lab's datasets raise to 1/255, a scale
    the caller never chose, so measure asks for one instead."""
    lowest, highest = train_images.amin(dim=(0, 2, 3)), train_images.amax(dim=(0, 2, 3))
    if (lowest == highest).any():
        constant = int((lowest == highest).nonzero()[0])
        raise SettingsError(f"normalization=None: channel {constant} of the train images is constant (every pixel "
                            f"{int(lowest[constant])}), so its std is 0; accepted: {NORMALIZATION}")


def given_normalization(normalization, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(normalization, (list, tuple)) and len(normalization) == 2):
        raise SettingsError(f"normalization: {described(normalization)}; accepted: {NORMALIZATION}")
    mean, std = (channel_values(part, value, channels) for part, value in zip(("mean", "std"), normalization))
    if not (std > 0).all():
        shown = ", ".join(f"{value:g}" for value in std.flatten().tolist())
        raise SettingsError(f"normalization: std [{shown}] is not > 0 in every channel; accepted: "
                            f"{NORMALIZATION}")
    return mean, std


def channel_values(part: str, value, channels: int) -> torch.Tensor:
    """One of normalization's (mean, std) as a float32 tensor of 1 or `channels` finite values."""
    try:
        values = torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        values = None
    if values is None or values.numel() not in (1, channels) or not values.isfinite().all():
        raise SettingsError(f"normalization: its {part} is {described(value)}, for images of {channels} channels; "
                            f"accepted: {NORMALIZATION}")
    return values
