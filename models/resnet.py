"""CIFAR ResNet-18 family with depth and width scaled per module, as Berariu et al. (2021), appendix A.4:
four modules of `depth` basic blocks (d = 2 is ResNet-18) with w, 2w, 4w, 8w channels (w = 64 standard)."""

from collections import OrderedDict

from torch import nn

from models.base import FeatureTap, LayerwiseModel, require_positive
from models.layers import BasicBlock, conv_block, pre_activation_tap
from models.registry import register

NUMBER_OF_STAGES = 4


@register("resnet")
class ResNet(LayerwiseModel):
    """stem → 4 stages × `depth` BasicBlocks → global average pool → Linear.

    stem: 3×3 conv(width, stride 1) → BN → ReLU, no max-pool (the CIFAR variant of He et al. 2016).
    Stage s (1…4) has width·2^(s−1) channels; its first block has stride 2 (s ≥ 2) and a 1×1 conv + BN
    projection shortcut whenever the shape changes. depth=2, width=64, 10 classes: 11,173,962 parameters.
    Features:
        input    x, [B, C, H, W].
        stem     after the stem's ReLU, [B, width, H, W].
        blockNN  BasicBlock NN (stage-major order: block00…block{depth−1} are stage 1, and so on): after
                 the residual sum and its ReLU.
        logits   Linear on the globally average-pooled last block, [B, num_classes].
    Pre-activation features (IntermediateNC's point, Galanti et al., TMLR 2023): stem is the stem conv's
    output before BN and ReLU; blockNN is the residual sum branch(x) + shortcut(x) before its ReLU.
    `module_groups()` gives the paper's 6 modules (Fig. 6, A.5): stem, stage1…stage4, head.
    Convs have no bias when BN follows; without BN they get a bias. PyTorch default init (the paper
    names none).
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
        in_channels = input_shape[0]
        stem = conv_block(in_channels, width, kernel_size=3, padding=1, batch_norm=batch_norm)
        blocks = []
        in_channels = width
        for stage in range(NUMBER_OF_STAGES):
            out_channels = width * 2**stage
            for index in range(depth):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, out_channels, stride=stride, batch_norm=batch_norm))
                in_channels = out_channels
        head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                linear=nn.Linear(in_channels, num_classes),
            )
        )
        super().__init__(stem=stem, blocks=blocks, head=head)
        self.blocks_per_stage = depth

    def pre_activation_taps(self) -> dict[str, FeatureTap]:
        """The stem's conv output, then each BasicBlock's sum before its ReLU (`models.layers.pre_activation_tap`)."""
        blocks = {name: pre_activation_tap(block) for name, block in zip(self._block_names(), self.blocks)}
        return {"stem": pre_activation_tap(self.stem), **blocks}

    def module_groups(self) -> list[tuple[str, list[nn.Module]]]:
        """stem, stage1, stage2, stage3, stage4, head: the modules numbered 1…6 in Berariu et al. (2021)."""
        per_stage = self.blocks_per_stage
        stages = [
            (f"stage{stage + 1}", list(self.blocks[stage * per_stage : (stage + 1) * per_stage]))
            for stage in range(NUMBER_OF_STAGES)
        ]
        return [("stem", [self.stem]), *stages, ("head", [self.head])]
