"""The one per-layer contract every model implements (DESIGN.md, contract 5).

A model is `stem` (optional) → `blocks` → `head`. `forward` and `features` walk the same generator
(`_walk`), so the logits of `forward(x)` are, by construction, `features(x)["logits"]`.
"""

from collections import deque
from collections.abc import Iterator, Sequence

from torch import Tensor, nn


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

    def features(self, x: Tensor) -> dict[str, Tensor]:
        """Every named intermediate output, in depth order: input, [stem], block00, …, logits."""
        return dict(self._walk(x))

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
