"""VGG-8/11/13/16 for CIFAR as in the learning-phases code (Schneider & Prabhushankar, AAAI 2024;
JohnTailor/LearnPhase, models.py, `Classifier` with net "V8"/"V11"/"V13"/"V16")."""

from models.base import FeatureTap, LayerwiseModel, require_positive
from models.layers import conv_block, conv_output_size, flatten_linear_head, pre_activation_tap
from models.registry import register

# Per depth: (channels as a multiple of `width`, stride) of each 3×3 conv, read off LearnPhase's
# `chans`/`down` lists. width=32 reproduces LearnPhase exactly (its channels 32…512 at netSi=1).
# LearnPhase downsamples with a stride-2 conv (its `usemp=False`), never a max-pool: five halvings,
# so 32×32 (and 28×28) end at 1×1. VGG-n has the conv count of the standard VGG-n (n − 3; 5 for
# VGG-8) and one Linear in place of VGG's three fully connected layers.
CONV_PLANS: dict[int, list[tuple[int, int]]] = {
    8: [(1, 2), (2, 2), (4, 2), (8, 2), (16, 2)],
    11: [(1, 2), (2, 2), (4, 1), (4, 2), (8, 1), (8, 2), (16, 1), (16, 2)],
    13: [(1, 2), (1, 1), (2, 2), (4, 1), (4, 2), (8, 1), (8, 2), (16, 1), (16, 1), (16, 2)],
    16: [(1, 1), (1, 2), (2, 1), (2, 2), (4, 1), (4, 1), (4, 2), (8, 1), (8, 1), (8, 2),
         (16, 1), (16, 1), (16, 2)],
}


@register("vgg")
class VGG(LayerwiseModel):
    """LearnPhase's VGG: each block is one 3×3 conv (padding 1, stride 1 or 2) → BN → ReLU; head is
    flatten → Linear. `depth` ∈ {8, 11, 13, 16} picks the plan in CONV_PLANS; channels scale with `width`.

    Features:
        input    x, [B, C, H, W].
        blockNN  conv NN after its ReLU. A stage-ending conv has stride 2, so its block already returns
                 the halved map (LearnPhase's downsampling; there is no separate pooling tensor).
        logits   Linear on the flattened last block (1×1×16·width for 32×32 inputs), [B, num_classes].
    Pre-activation features (IntermediateNC's point): blockNN is conv NN's output, before BN and ReLU.
    The classifier is the single Linear in `head` (LearnPhase's `pred`; its optional dropout is off by
    default and left out). No conv bias before BN (as LearnPhase); with batch_norm=False convs get a bias.
    PyTorch default init, as LearnPhase.
    """

    layer_type = "convolutional"

    def __init__(
        self,
        *,
        depth: int,
        width: int,
        batch_norm: bool,
        input_shape: tuple[int, int, int],
        num_classes: int,
    ) -> None:
        if depth not in CONV_PLANS:
            raise ValueError(f"vgg depth must be one of {', '.join(map(str, CONV_PLANS))}, got {depth!r}")
        require_positive(width=width, num_classes=num_classes)
        in_channels, height, width_in_pixels = input_shape
        blocks = []
        for multiple, stride in CONV_PLANS[depth]:
            out_channels = multiple * width
            blocks.append(
                conv_block(
                    in_channels, out_channels, kernel_size=3, stride=stride, padding=1, batch_norm=batch_norm
                )
            )
            height = conv_output_size(height, kernel_size=3, stride=stride, padding=1)
            width_in_pixels = conv_output_size(width_in_pixels, kernel_size=3, stride=stride, padding=1)
            in_channels = out_channels
        super().__init__(
            stem=None,
            blocks=blocks,
            head=flatten_linear_head(in_channels * height * width_in_pixels, num_classes),
        )

    def pre_activation_taps(self) -> dict[str, FeatureTap]:
        """Each block's conv output (Galanti et al., TMLR 2023: before BN and ReLU)."""
        return {name: pre_activation_tap(block) for name, block in zip(self._block_names(), self.blocks)}
