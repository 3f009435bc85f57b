"""Architecture registry: `@register("name")` on a class, `build(settings, ...)` to construct one."""

from collections.abc import Callable

from conf import Settings
from models.base import LayerwiseModel

REGISTRY: dict[str, type[LayerwiseModel]] = {}


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


def build(settings, *, input_shape: tuple[int, int, int], num_classes: int) -> LayerwiseModel:
    """The model `settings` describes (reads settings.arch, .depth, .width, .batch_norm; duck-typed).

    input_shape is (channels, height, width) of one example; num_classes is the logit count.
    """
    try:
        model_class = REGISTRY[settings.arch]
    except KeyError:
        accepted = ", ".join(sorted(REGISTRY))
        raise UnknownArchitecture(f"arch={settings.arch!r} is unknown; accepted values: {accepted}") from None
    return model_class(
        depth=settings.depth,
        width=settings.width,
        batch_norm=settings.batch_norm,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
    )


def from_checkpoint(checkpoint: dict) -> LayerwiseModel:
    """The model of a checkpoint (as `RunFolder.load_checkpoint` returns it) with its weights, in eval
    mode on the checkpoint's device: it holds the settings, input shape and number of classes, so
    nothing else (no dataset) is needed (nanoGPT's habit)."""
    if "input_shape" not in checkpoint or "num_classes" not in checkpoint:
        raise ValueError(f"checkpoint of {checkpoint.get('run_id', 'an unknown run')} at iteration "
                         f"{checkpoint.get('iteration')} predates self-describing checkpoints (format "
                         f"{checkpoint.get('format_version', 1)}); train the run again into a new out_dir")
    model = build(Settings.from_record(checkpoint["settings"]), input_shape=tuple(checkpoint["input_shape"]),
                  num_classes=checkpoint["num_classes"])
    model.load_state_dict(checkpoint["model"])
    first = next(iter(checkpoint["model"].values()), None)
    return model.to(first.device if first is not None else "cpu").eval()
