"""`arch=torchvision:NAME` — any classification builder of torchvision.models, randomly initialised.

    python train.py arch=torchvision:resnet18 dataset=cifar10
    python train.py arch=torchvision:mobilenet_v3_small dataset=mnist      # the first conv takes 1 channel

The builder gets `num_classes` (the dataset's) and, for a vision transformer, `image_size` (the dataset's
side: torchvision's ViTs take any size their patch divides); a dataset whose images are not RGB gets
the model's first convolution rebuilt for its channels (said in the log). `depth` and `width` do not
apply: the builder fixes them. Layers (HookedModel) are, by default:
    resnet*, resnext*, wide_resnet*   layer1 … layer4, each stage's output (after its last block's ReLU)
    vit_*                             encoder.layers.encoder_layer_N, each block's token stream
    otherwise                         each child of `features` (MobileNet, EfficientNet, VGG, DenseNet,
                                      ConvNeXt…), else each top-level child with parameters but the last
"""

from __future__ import annotations

import difflib
import logging

from torch import nn

from models.hooked import HookedModel

logger = logging.getLogger(__name__)
PREFIX = "torchvision:"


def builders() -> list[str]:
    """torchvision's classification builders (detection, segmentation, video and quantized ones aside)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_name(name: str) -> None:
    """ValueError naming close matches when torchvision has no classification builder `name`."""
    known = builders()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=4)
        raise ValueError(f"arch={PREFIX}{name} is unknown to torchvision {_version()}"
                         f"{' (close: ' + ', '.join(close) + ')' if close else ''}; accepted: {PREFIX} and one of "
                         f"its {len(known)} classification builders, e.g. resnet18, mobilenet_v3_small, vit_b_16")


def _version() -> str:
    import torchvision

    return torchvision.__version__


def build(settings, *, input_shape: tuple[int, int, int], num_classes: int, layers: list[str] | None = None
          ) -> HookedModel:
    """The builder `settings.arch` names, for these inputs and classes, as a HookedModel with `layers`
    (default above)."""
    import torchvision

    name = settings.arch[len(PREFIX):]
    check_name(name)
    channels, height, width = input_shape
    options = {"weights": None, "num_classes": num_classes}
    if name.startswith("vit_"):
        if height != width:
            raise ValueError(f"arch={PREFIX}{name} needs square images, got {height}x{width}")
        options["image_size"] = height
    try:
        module = torchvision.models.get_model(name, **options)
    except (ValueError, TypeError, AssertionError) as error:  # e.g. a patch size that does not divide the side
        raise ValueError(f"arch={PREFIX}{name} cannot be built for {channels}x{height}x{width} images: {error}") from None
    if channels != 3:
        first_conv_for(module, channels, name)
    return HookedModel(module, layers or default_layers(name, module), token_streams=name.startswith("vit_"))


def first_conv_for(module: nn.Module, channels: int, name: str) -> None:
    """Rebuild the first Conv2d (in module order) for `channels` input channels, its other options kept."""
    for path, conv in module.named_modules():
        if isinstance(conv, nn.Conv2d):
            parent_path, _, attribute = path.rpartition(".")
            replacement = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                    conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
            setattr(module.get_submodule(parent_path) if parent_path else module, attribute, replacement)
            logger.info("%s%s: first convolution %s rebuilt for %d input channel(s)", PREFIX, name, path, channels)
            return
    raise ValueError(f"arch={PREFIX}{name} has no Conv2d to adapt to {channels}-channel images; accepted: RGB data")


def default_layers(name: str, module: nn.Module) -> list[str]:
    """The family's layers (the module docstring's table)."""
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        return ["layer1", "layer2", "layer3", "layer4"]
    if name.startswith("vit_"):
        return [f"encoder.layers.{child}" for child, _ in module.encoder.layers.named_children()]
    features = getattr(module, "features", None)
    if isinstance(features, nn.Module) and len(list(features.children())) > 1:
        return [f"features.{child}" for child, _ in features.named_children()]
    holders = [child for child, part in module.named_children() if any(True for _ in part.parameters())]
    return holders[:-1]
