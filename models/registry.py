"""Architecture registry: `@register("name")` on a class, `build(settings, ...)` to construct one."""

from collections.abc import Callable

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
