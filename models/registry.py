"""Architecture registry: `@register("name")` on a class, `build(settings, ...)` to construct one."""

from collections.abc import Callable
from inspect import signature

from conf import Settings
from models.base import LayerwiseModel

REGISTRY: dict[str, type[LayerwiseModel]] = {}
FAMILY_SIZES = ("patch_size", "heads")  # settings only some families read (conf: FAMILY_ONLY)


def _prefixed_families() -> dict:
    from models import torchvision_family, user_module

    return {torchvision_family.PREFIX: torchvision_family, user_module.PREFIX: user_module}


class UnknownArchitecture(KeyError, ValueError):
    """Raised by `build` for an arch that is not registered: a KeyError (a failed registry lookup) and a
    ValueError (a bad setting); the message names every accepted value."""

    def __str__(self) -> str:
        # KeyError would show repr(message) in quotes; the CLI prints this line as is.
        return str(self.args[0])


def register(name: str) -> Callable[[type[LayerwiseModel]], type[LayerwiseModel]]:
    """Class decorator: `@register("mlp")` makes the class buildable as `arch=mlp`."""

    def decorator(model_class: type[LayerwiseModel]) -> type[LayerwiseModel]:
        if not (isinstance(model_class, type) and issubclass(model_class, LayerwiseModel)):
            raise TypeError(f"@register({name!r}) needs a LayerwiseModel subclass, got {model_class!r}")
        if name in REGISTRY:
            raise ValueError(f"architecture {name!r} is already registered by {REGISTRY[name].__qualname__}")
        REGISTRY[name] = model_class
        return model_class

    return decorator


def build(settings, *, input_shape: tuple[int, int, int], num_classes: int, layers: list[str] | None = None):
    """The model `settings` describes (reads settings.arch, .depth, .width, .batch_norm; duck-typed): a
    registered family's LayerwiseModel, or for `torchvision:NAME` and `module:FILE:CLASS` a HookedModel.
    `layers` (module paths) makes any of them a HookedModel with those layers; None keeps the family's own.

    input_shape is (channels, height, width) of one example; num_classes is the logit count.
    """
    for prefix, family in _prefixed_families().items():
        if settings.arch.startswith(prefix):
            return family.build(settings, input_shape=tuple(input_shape), num_classes=num_classes, layers=layers)
    model = _build_registered(settings, input_shape, num_classes)
    if layers:
        from models.hooked import HookedModel

        return HookedModel(model, layers, token_streams=getattr(model, "token_streams", False))
    return model


def _build_registered(settings, input_shape, num_classes: int) -> LayerwiseModel:
    try:
        model_class = REGISTRY[settings.arch]
    except KeyError:
        accepted = ", ".join(sorted(REGISTRY))
        raise UnknownArchitecture(f"arch={settings.arch!r} is unknown; accepted values: {accepted}, torchvision:NAME "
                                  "or module:FILE:CLASS") from None
    # a family's own sizes (the ViT's patch_size and heads), for the families that take them
    extra = {name: getattr(settings, name) for name in FAMILY_SIZES if name in signature(model_class).parameters}
    return model_class(
        depth=settings.depth,
        width=settings.width,
        batch_norm=settings.batch_norm,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        **extra,
    )


def from_checkpoint(checkpoint: dict, layers: list[str] | None = None):
    """The model of a checkpoint (as `RunFolder.load_checkpoint` returns it) with its weights, in eval
    mode on the checkpoint's device: it holds the settings, input shape and number of classes, so
    nothing else (no dataset) is needed (nanoGPT's habit)."""
    model = build(Settings.from_record(checkpoint["settings"]), input_shape=tuple(checkpoint["input_shape"]),
                  num_classes=checkpoint["num_classes"])
    model.load_state_dict(checkpoint["model"])
    if layers:  # the weights loaded under the family's own names, then the layers chosen by module path
        from models.hooked import HookedModel

        model = HookedModel(getattr(model, "module", model), layers, token_streams=getattr(model, "token_streams", False))
    first = next(iter(checkpoint["model"].values()), None)
    return model.to(first.device if first is not None else "cpu").eval()


def check_builds(settings, *, input_shape: tuple[int, int, int], num_classes: int) -> None:
    """ValueError (one line) when the model cannot be built for these inputs or its forward pass fails on
    two of them, or does not return [2, num_classes] logits: train.py's pre-flight, before anything is
    written. Checked once per distinct model (a grid's seeds share it)."""
    key = tuple(getattr(settings, name) for name in ("arch", "depth", "width", "batch_norm", *FAMILY_SIZES,
                                                     "module_sha256"))
    problem = _build_problem(key, settings, tuple(input_shape), num_classes)
    if problem:
        raise ValueError(problem)


_CHECKED: dict[tuple, str | None] = {}


def _build_problem(key: tuple, settings, input_shape: tuple[int, int, int], num_classes: int) -> str | None:
    import torch

    from models.hooked import HookedModel

    if (key, input_shape, num_classes) in _CHECKED:
        return _CHECKED[key, input_shape, num_classes]
    shape = "x".join(map(str, input_shape))
    problem = None
    try:
        model = build(settings, input_shape=input_shape, num_classes=num_classes)
    except ValueError as error:
        problem = str(error)
    else:
        try:
            with torch.no_grad():
                logits = model(torch.zeros((2, *input_shape)))
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, num_classes):
                found = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                problem = (f"arch={settings.arch}: its forward pass returns {found} for 2 images, not logits "
                           f"(2, {num_classes}); accepted: a model whose output is [batch, num_classes]")
            elif isinstance(model, HookedModel) and (runs_twice := model.layers_problem(input_shape)):
                problem = f"arch={settings.arch}: {runs_twice}"  # found before training, not by the analysis after
        except Exception as error:  # the model's own code (a user's module): whatever fails is theirs
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            problem = (f"arch={settings.arch}: its forward pass fails on the dataset's {shape} images ({message}); "
                       f"accepted: a model that takes [batch, {', '.join(map(str, input_shape))}] images")
    _CHECKED[key, input_shape, num_classes] = problem
    return problem


def layer_type(arch: str) -> str:
    """A family's layer type (LayerwiseModel.layer_type): a registered family's own word; a torchvision
    builder's from its name (vit_/swin_/maxvit_ transformers, the others convolutional); `other` for a user's
    module."""
    if arch.startswith("torchvision:"):
        return "transformer" if arch.split(":", 1)[1].startswith(("vit_", "swin_", "maxvit_")) else "convolutional"
    return REGISTRY[arch].layer_type if arch in REGISTRY else "other"
