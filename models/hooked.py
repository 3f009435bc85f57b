"""Any nn.Module as a layerwise model: its layers named by module path, their outputs read by forward hooks.

    model = HookedModel(torchvision.models.resnet18(num_classes=10), layers=["layer1", "layer2", "fc"])
    model.features(x)          # {"input": x, "layer1": …, "layer2": …, "fc": …, "logits": model(x)}

The hooks exist only during one `features` call and are removed afterwards, also when the forward pass
fails; plain `forward` runs none. What a layer yields is its module's output: the first tensor of a tuple
(an attention module's output and weights), and a token stream [B, tokens, width] turned channel-first,
[B, width, tokens], when the family says its layers return token streams (a transformer's; models/vit.py
documents why), so the analysis pools and counts units as for a conv map. `features_at=pre_activation`
does not apply: an arbitrary module has no known "linear output before its normalisation and activation".
"""

from __future__ import annotations

import difflib

from torch import Tensor, nn

from models.base import POINTS


class UnknownLayer(ValueError):
    """`layers=` names a module the model does not have; the message lists the ones it has."""


class LayerRunsTwice(ValueError):
    """A layer's module ran more (or less) than once in one forward pass (one ReLU reused in several places):
    it has no single output to measure. A property of the model, so train.py refuses it in its pre-flight and
    the analysis skips the run (naming it) while it measures the others."""


def module_names(module: nn.Module) -> list[str]:
    """Every submodule's path, in registration order (what `layers=` may name)."""
    return [name for name, _ in module.named_modules() if name]


def check_layers(module: nn.Module, layers: list[str]) -> None:
    """UnknownLayer naming the first layer that is no submodule's path, with close matches and the top level."""
    known = module_names(module)
    for layer in layers:
        if layer not in known:
            close = difflib.get_close_matches(layer, known, n=3)
            top = [name for name, _ in module.named_children()]
            raise UnknownLayer(f"layers={','.join(layers)}: the model has no module {layer!r}"
                               f"{' (close: ' + ', '.join(close) + ')' if close else ''}; accepted: module paths "
                               f"such as {', '.join(top)} and their submodules' ({len(known)} in all)")


class HookedModel(nn.Module):
    """`module` (any nn.Module whose forward maps images to logits) with `layers`, module paths, as its
    layers. The reset-last-k modules (Berariu et al. 2021) are the layers' modules and the head, the last
    top-level child that holds parameters; parameters outside them (a first conv before the first named
    layer, a ViT's class token) are never reset."""

    def __init__(self, module: nn.Module, layers: list[str], *, token_streams: bool = False) -> None:
        super().__init__()
        check_layers(module, layers)
        self.module = module
        self.layers = list(layers)
        self.token_streams = token_streams

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)

    @property
    def head(self) -> nn.Module | None:
        """The last top-level child with parameters: what NC3 reads the classifier from (its last Linear)."""
        holders = [child for _, child in self.module.named_children() if any(True for _ in child.parameters())]
        return holders[-1] if holders else None

    def layer_names(self) -> list[str]:
        return ["input", *self.layers, "logits"]

    def features(self, x: Tensor, point: str = "post_activation") -> dict[str, Tensor]:
        """{"input": x, each layer's output, "logits": the forward pass's output}, in that order."""
        if point not in POINTS:
            raise ValueError(f"point={point!r} is unknown; accepted values: {', '.join(POINTS)}")
        if point != "post_activation":
            raise ValueError(f"features_at={point} does not apply to {type(self.module).__name__}: a module named "
                             "by path has no known linear output before its activation; accepted: post_activation")
        captured: dict[str, list[Tensor]] = {layer: [] for layer in self.layers}
        handles = []
        try:
            for layer in self.layers:
                handles.append(self.module.get_submodule(layer).register_forward_hook(
                    lambda _module, _inputs, output, layer=layer: captured[layer].append(self._tensor_of(output))))
            logits = self.module(x)
        finally:
            for handle in handles:
                handle.remove()
        for layer, outputs in captured.items():
            if len(outputs) != 1:  # a module shared by several places (one ReLU reused) has no single output
                raise LayerRunsTwice(f"layers={layer} ran {len(outputs)} times in one forward pass; accepted: a module "
                                 "that runs once (name the block that contains it)")
        return {"input": x, **{layer: outputs[0] for layer, outputs in captured.items()}, "logits": logits}

    def layers_problem(self, input_shape: tuple[int, ...]) -> str | None:
        """Why these layers cannot be measured (a module that runs twice in a pass on two blank images), or None:
        asked by train.py's pre-flight and by the analysis before anything is written."""
        import torch

        try:
            with torch.no_grad():
                self.features(torch.zeros((2, *input_shape)))
        except LayerRunsTwice as error:
            return str(error)
        return None

    def _tensor_of(self, output) -> Tensor:
        tensor = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(tensor, Tensor):
            raise ValueError(f"a layer returned {type(tensor).__name__}, not a tensor; name a module that returns one")
        return tensor.transpose(1, 2) if self.token_streams and tensor.dim() == 3 else tensor

    def module_groups(self) -> list[tuple[str, list[nn.Module]]]:
        groups = [(layer, [self.module.get_submodule(layer)]) for layer in self.layers]
        head = self.head
        if head is not None and all(head is not modules[0] for _, modules in groups):
            groups.append(("head", [head]))
        return groups
