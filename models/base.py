"""The one per-layer contract every model implements (DESIGN.md, contract 5).

A model is `stem` (optional) → `blocks` → `head`. `forward` and `features` walk the same generator
(`_walk`), so the logits of `forward(x)` are, by construction, `features(x)["logits"]`.

Two feature points (`POINTS`), same names and order:
    post_activation  what each stem/block returns (after its ReLU; a residual block: its sum after the ReLU).
    pre_activation   IntermediateNC's embedding point (Galanti et al., TMLR 2023): the output of the layer's
                     last linear/conv, before its BatchNorm and ReLU. Read by forward hooks that exist only
                     during that `features` call, so `forward` never runs a hook.
"""

from collections import deque
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from torch import Tensor, nn

POINTS: tuple[str, ...] = ("post_activation", "pre_activation")


class FeatureTap(NamedTuple):
    """Where a layer's pre-activation feature is read: the output of `module` (a Linear or Conv2d), or,
    with read="input", the input of `module` (a residual sum is returned by no module: it is the input
    of the block's final ReLU)."""

    module: nn.Module
    read: str = "output"


def block_name(index: int, number_of_blocks: int) -> str:
    """`block00`, `block01`, …: two digits, more only past 100 blocks, so names sort in depth order."""
    digits = max(2, len(str(number_of_blocks - 1)))
    return f"block{index:0{digits}d}"


def require_positive(**values: int) -> None:
    """Raise ValueError naming the key when a size is not a positive integer (bad settings fail early)."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


class LayerwiseModel(nn.Module):
    """Base class: `stem` (optional) → `blocks` → `head`, with every intermediate output named.

    `features(x)` entries, in depth order (insertion order of the dict):
        input    x itself, unchanged.
        stem     the output of `stem`; present only when the model has a stem.
        blockNN  the output of `blocks[NN]` (NN zero-padded); each subclass documents which tensor that is.
        logits   the output of `head`, float [B, num_classes].
    Every parameter lives in `stem`, `blocks` or `head`, so `module_groups()` partitions the parameters.
    """

    # The family's layer type (convolutional, fully_connected, transformer): devices.AUTO_ON_CUDA turns bf16 and
    # channels_last on by it. A family declares it; the registry and the tests read it, never a name list.
    layer_type = "other"

    def __init__(self, *, stem: nn.Module | None, blocks: Sequence[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def _block_names(self) -> list[str]:
        return [block_name(index, len(self.blocks)) for index in range(len(self.blocks))]

    def _walk(self, x: Tensor) -> Iterator[tuple[str, Tensor]]:
        """The single code path: yields (name, tensor) from the input to the logits."""
        yield "input", x
        if self.stem is not None:
            x = self.stem(x)
            yield "stem", x
        for name, block in zip(self._block_names(), self.blocks):
            x = block(x)
            yield name, x
        yield "logits", self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        # deque(maxlen=1) keeps only the last entry, so plain forward holds no extra activations.
        _, logits = deque(self._walk(x), maxlen=1).pop()
        return logits

    def features(self, x: Tensor, point: str = "post_activation") -> dict[str, Tensor]:
        """Every named intermediate output, in depth order: input, [stem], block00, …, logits.

        point="post_activation" (default): what each stem/block returns (the subclass documents it).
        point="pre_activation": each stem/block's `pre_activation_taps()` tensor instead, the linear/conv
        output before BN and ReLU (IntermediateNC, Galanti et al., TMLR 2023); input and logits unchanged.
        """
        if point not in POINTS:
            raise ValueError(f"point={point!r} is unknown; accepted values: {', '.join(POINTS)}")
        if point == "post_activation":
            return dict(self._walk(x))
        return self._pre_activation_features(x)

    def pre_activation_taps(self) -> dict[str, FeatureTap]:
        """{name: FeatureTap} for the stem (if any) and every block: where `features(x, "pre_activation")`
        reads that layer. Each family names its own (its class docstring says what the tensor is)."""
        raise NotImplementedError(f"{type(self).__name__} names no pre-activation taps")

    def _pre_activation_features(self, x: Tensor) -> dict[str, Tensor]:
        """One `_walk` with a hook on every tap, removed afterwards even when the walk fails; a layer's
        returned tensor is swapped for its tap's as the walk passes it, so the dict never holds both."""
        taps = self.pre_activation_taps()
        if list(taps) != self.layer_names()[1:-1]:
            raise RuntimeError(f"{type(self).__name__}.pre_activation_taps() names {list(taps)}, "
                               f"not the layers {self.layer_names()[1:-1]}")
        captured: dict[str, Tensor] = {}
        handles = []
        try:
            for name, tap in taps.items():  # inside the try: a failed registration removes the earlier ones
                handles.append(_register_tap(name, tap, captured))
            features = {}
            for name, tensor in self._walk(x):
                if name in taps and name not in captured:
                    raise RuntimeError(f"the pre-activation tap of {name} did not run inside {name}")
                features[name] = captured.pop(name) if name in taps else tensor
        finally:
            for handle in handles:
                handle.remove()
        if captured:
            raise RuntimeError(f"pre-activation taps ran outside their layers: {sorted(captured)}")
        return features

    def layer_names(self) -> list[str]:
        """The keys `features` returns, in the same order, without running the model."""
        stem = ["stem"] if self.stem is not None else []
        return ["input", *stem, *self._block_names(), "logits"]

    def module_groups(self) -> list[tuple[str, list[nn.Module]]]:
        """Coarse modules from input to output (stem if any, each block, head); they partition the
        parameters, so "reset the last k modules" (Berariu et al. 2021, Fig. 6) is `module_groups()[-k:]`."""
        stem = [("stem", [self.stem])] if self.stem is not None else []
        blocks = [(name, [block]) for name, block in zip(self._block_names(), self.blocks)]
        return [*stem, *blocks, ("head", [self.head])]


def _register_tap(name: str, tap: FeatureTap, captured: dict[str, Tensor]):
    """Hook that stores the tap's tensor under `name` (once per walk: a second call is a wiring error)."""

    def store(tensor: Tensor) -> None:
        if name in captured:
            raise RuntimeError(f"the pre-activation tap of {name} ran twice in one forward pass")
        captured[name] = tensor

    if tap.read == "output":
        return tap.module.register_forward_hook(lambda module, inputs, output: store(output))
    if tap.read == "input":
        return tap.module.register_forward_pre_hook(lambda module, inputs: store(inputs[0]))
    raise ValueError(f"FeatureTap.read must be 'output' or 'input', got {tap.read!r}")
