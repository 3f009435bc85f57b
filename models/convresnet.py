"""CONV-L-W with residual blocks: ConvResNet of the same authors' code (TomerGalanti/LowRankBias,
models/convresnet.py), the residual counterpart of CONV-L-W (Galanti et al., TMLR 2023)."""

from torch import nn

from models.base import LayerwiseModel, require_positive
from models.convnet import downsampling_stem, stem_output_size
from models.layers import BasicBlock, flatten_linear_head
from models.registry import register


@register("convresnet")
class ConvResNet(LayerwiseModel):
    """CONV-L-W's stem and head around `depth` residual blocks of `width` channels.

    Each block: relu(x + BN(conv3×3(ReLU(BN(conv3×3(x)))))), the two-conv block of the source (its
    `alpha` fixed to 1). The source returns the sum and applies the ReLU as the next layer; here the
    ReLU is inside the block so the block's feature is the activated sum.
    Features:
        input    x, [B, C, H, W].
        stem     after the stem's ReLU, [B, width, H/4, W/4].
        blockNN  residual block NN: after the residual sum and its ReLU, [B, width, H/4, W/4].
        logits   Linear on the flattened last block (no global pooling), [B, num_classes].
    Differences from the source: BN follows `batch_norm` in the stem and blocks (the source always uses
    it); no conv bias before BN; ReLU, not leaky ReLU. PyTorch default init.
    """

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
        blocks: list[nn.Module] = [
            BasicBlock(width, width, stride=1, batch_norm=batch_norm) for _ in range(depth)
        ]
        super().__init__(
            stem=downsampling_stem(channels, width, batch_norm=batch_norm),
            blocks=blocks,
            head=flatten_linear_head(width * out_height * out_width, num_classes),
        )
