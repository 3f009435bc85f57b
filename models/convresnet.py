"""CONV-L-W with residual blocks: ConvResNet of the same authors' code (TomerGalanti/LowRankBias,
models/convresnet.py), the residual counterpart of CONV-L-W (Galanti et al., TMLR 2023)."""

from torch import nn

from models.convnet import ConvNet
from models.layers import BasicBlock
from models.registry import register


@register("convresnet")
class ConvResNet(ConvNet):
    """CONV-L-W's stem and head (inherited from ConvNet) around `depth` residual blocks of `width` channels.

    Each block: relu(x + BN(conv3×3(ReLU(BN(conv3×3(x)))))), the two-conv block of the source (its
    `alpha` fixed to 1). The source returns the sum and applies the ReLU as the next layer; here the
    ReLU is inside the block so the block's feature is the activated sum.
    Features:
        input    x, [B, C, H, W].
        stem     after the stem's ReLU, [B, width, H/4, W/4].
        blockNN  residual block NN: after the residual sum and its ReLU, [B, width, H/4, W/4].
        logits   Linear on the flattened last block (no global pooling), [B, num_classes].
    Pre-activation features (inherited `pre_activation_taps`): stem is the second stem conv's output;
    blockNN is the residual sum x + BN(conv(…)) before its ReLU, the output of the source's ConvBlock
    (the layer IntermediateNC embeds; the activation is a separate layer there).
    Differences from the source: BN follows `batch_norm` in the stem and blocks (the source always uses
    it); no conv bias before BN; ReLU, not leaky ReLU. PyTorch default init.
    """

    @staticmethod
    def make_block(width: int, *, batch_norm: bool) -> nn.Module:
        return BasicBlock(width, width, stride=1, batch_norm=batch_norm)
