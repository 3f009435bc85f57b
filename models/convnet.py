"""CONV-L-W: L 3×3 conv layers of W channels (Galanti et al., TMLR 2023; the paper's Fig. 1 is CONV-L-400).

The IntermediateNC code itself is not available here; the layout follows the same authors' ConvNet in
TomerGalanti/LowRankBias (models/convnet.py), which shares IntermediateNC's code base.
"""

from collections import OrderedDict

from torch import nn

from models.base import FeatureTap, LayerwiseModel, require_positive
from models.layers import conv_block, conv_output_size, flatten_linear_head, pre_activation_tap
from models.registry import register


def downsampling_stem(in_channels: int, width: int, *, batch_norm: bool) -> nn.Sequential:
    """Two stride-2 2×2 convs (32×32 → 16×16 → 8×8) with BN after each and a single ReLU at the end.

    As in the source: no ReLU between the two convs, so the stem is a linear patchify (4×4 patches,
    stride 4) followed by one non-linearity.
    """
    return nn.Sequential(
        OrderedDict(
            first=conv_block(in_channels, width, kernel_size=2, stride=2, batch_norm=batch_norm, relu=False),
            second=conv_block(width, width, kernel_size=2, stride=2, batch_norm=batch_norm, relu=True),
        )
    )


def stem_output_size(size: int) -> int:
    """Spatial size after `downsampling_stem`: 32 → 8, 28 → 7."""
    for _ in range(2):
        size = conv_output_size(size, kernel_size=2, stride=2)
    if size < 1:
        raise ValueError(f"input_shape too small for the stride-4 stem: spatial size {size}")
    return size


@register("convnet")
class ConvNet(LayerwiseModel):
    """stem (2 × stride-2 2×2 conv) → `depth` × [3×3 conv(width, padding 1) → BN → ReLU] → flatten
    → Linear.

    Features:
        input    x, [B, C, H, W].
        stem     after the stem's ReLU, [B, width, H/4, W/4] (8×8 for CIFAR, 7×7 for MNIST).
        blockNN  3×3 conv NN after its ReLU, [B, width, H/4, W/4].
        logits   Linear on the flattened last block (no global pooling, as the source), [B, num_classes].
    Pre-activation features (IntermediateNC's point, before BN and ReLU): stem is the second 2×2 conv's
    output (the stem's last conv; its first conv has no ReLU after it anyway), blockNN is conv NN's output.
    Differences from the source: convs have no bias when followed by BN (the source keeps one; BN cancels
    it); ReLU rather than the LowRankBias default leaky ReLU (the IntermediateNC paper uses ReLU); the
    head's input size is computed from input_shape instead of hard-coded 8×8. PyTorch default init.
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
        require_positive(depth=depth, width=width, num_classes=num_classes)
        channels, height, width_in_pixels = input_shape
        out_height, out_width = stem_output_size(height), stem_output_size(width_in_pixels)
        super().__init__(
            stem=downsampling_stem(channels, width, batch_norm=batch_norm),
            blocks=[self.make_block(width, batch_norm=batch_norm) for _ in range(depth)],
            head=flatten_linear_head(width * out_height * out_width, num_classes),
        )

    @staticmethod
    def make_block(width: int, *, batch_norm: bool) -> nn.Module:
        """One of the `depth` blocks: 3×3 conv (padding 1) → BN → ReLU; subclasses change only this."""
        return conv_block(width, width, kernel_size=3, padding=1, batch_norm=batch_norm)

    def pre_activation_taps(self) -> dict[str, FeatureTap]:
        """The stem's last conv, then each block's tap (`models.layers.pre_activation_tap`: the conv output,
        or for ConvResNet's residual blocks the sum before the ReLU); Galanti et al., TMLR 2023."""
        blocks = {name: pre_activation_tap(block) for name, block in zip(self._block_names(), self.blocks)}
        return {"stem": FeatureTap(self.stem.second.conv), **blocks}
