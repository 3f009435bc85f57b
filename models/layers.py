"""Building blocks shared by the convolutional families."""

from collections import OrderedDict

from torch import Tensor, nn

from models.base import FeatureTap


def conv_block(
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    batch_norm: bool,
    relu: bool = True,
) -> nn.Sequential:
    """conv → BatchNorm (if batch_norm) → ReLU (if relu).

    The conv has a bias only without BatchNorm: BN subtracts the mean, so a bias before it is dead weight.
    ReLU is never in-place, so a tensor returned as a feature is never overwritten later.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["conv"] = nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=not batch_norm
    )
    if batch_norm:
        layers["norm"] = nn.BatchNorm2d(out_channels)
    if relu:
        layers["relu"] = nn.ReLU()
    return nn.Sequential(layers)


def conv_output_size(size: int, *, kernel_size: int, stride: int, padding: int = 0) -> int:
    """Spatial size after a convolution (the formula in torch.nn.Conv2d's docs, dilation 1)."""
    return (size + 2 * padding - kernel_size) // stride + 1


def flatten_linear_head(in_features: int, num_classes: int) -> nn.Sequential:
    """Flatten every channel and position, then one Linear (with bias: no BN follows it)."""
    return nn.Sequential(
        OrderedDict(flatten=nn.Flatten(), linear=nn.Linear(in_features, num_classes))
    )


class BasicBlock(nn.Module):
    """The basic residual block of He et al. (2016), used by `resnet` and `convresnet`.

    branch   = conv3×3(stride) → BN → ReLU → conv3×3 → BN   (BN only if batch_norm)
    shortcut = identity, or conv1×1(stride) → BN when the stride or the channel count changes
    returns relu(branch(x) + shortcut(x)): the residual sum after its ReLU, which is the block's output
    (the seed's ConvBlock computed a sum and returned something else; this one returns the sum).
    Pre-activation feature (`pre_activation_tap`): branch(x) + shortcut(x), the sum before that ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, batch_norm: bool) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            OrderedDict(
                first=conv_block(
                    in_channels, out_channels, kernel_size=3, stride=stride, padding=1, batch_norm=batch_norm
                ),
                second=conv_block(
                    out_channels, out_channels, kernel_size=3, padding=1, batch_norm=batch_norm, relu=False
                ),
            )
        )
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = (
            conv_block(
                in_channels, out_channels, kernel_size=1, stride=stride, batch_norm=batch_norm, relu=False
            )
            if needs_projection
            else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.branch(x) + self.shortcut(x))


def pre_activation_tap(block: nn.Module) -> FeatureTap:
    """IntermediateNC's embedding point (Galanti et al., TMLR 2023) for the two blocks built here.

    conv_block: its conv's output, before BN and ReLU.
    BasicBlock: the residual sum before the final ReLU (the input of `block.relu`). In the authors' code
    (TomerGalanti/LowRankBias, models/convresnet.py, the same code base) a residual block is one layer
    whose output, identity + BN(conv(…)), feeds a separate activation layer: the block's "linear part" is
    the whole sum, and the branch's conv alone is only an increment to the representation, not the
    representation at that depth.
    """
    if isinstance(block, BasicBlock):
        return FeatureTap(block.relu, read="input")
    if isinstance(block, nn.Sequential) and isinstance(getattr(block, "conv", None), nn.Conv2d):
        return FeatureTap(block.conv)
    raise TypeError(f"no pre-activation tap for {type(block).__name__}: not a conv_block or BasicBlock")
