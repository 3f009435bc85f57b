"""Fully connected network, as the MLP of the intermediate-neural-collapse code (Galanti et al., TMLR
2023; layout from the same authors' TomerGalanti/LowRankBias, models/mlp.py)."""

import math
from collections import OrderedDict

from torch import nn

from models.base import FeatureTap, LayerwiseModel, require_positive
from models.registry import register


@register("mlp")
class MLP(LayerwiseModel):
    """flatten → `depth` × [Linear(width) → BatchNorm1d (if batch_norm) → ReLU] → Linear(num_classes)
    (ReLU, as the paper; the LowRankBias code defaults to leaky ReLU).

    Features:
        input    x, [B, C, H, W].
        blockNN  hidden layer NN after its ReLU, [B, width] (block00 also flattens the input; no stem).
        logits   Linear(width → num_classes), [B, num_classes].
    Pre-activation features (`features(x, "pre_activation")`, IntermediateNC's point): blockNN is the
    output of hidden layer NN's Linear, before its BatchNorm and ReLU, [B, width].
    Linear layers have a bias only without BatchNorm; PyTorch default init (as the source code).
    """

    layer_type = "fully_connected"

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
        in_features = math.prod(input_shape)
        blocks = []
        for index in range(depth):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            if index == 0:
                layers["flatten"] = nn.Flatten()
            layers["linear"] = nn.Linear(in_features, width, bias=not batch_norm)
            if batch_norm:
                layers["norm"] = nn.BatchNorm1d(width)
            layers["relu"] = nn.ReLU()
            blocks.append(nn.Sequential(layers))
            in_features = width
        super().__init__(stem=None, blocks=blocks, head=nn.Linear(width, num_classes))

    def pre_activation_taps(self) -> dict[str, FeatureTap]:
        """Each hidden layer's Linear output (Galanti et al., TMLR 2023: before BN and ReLU)."""
        return {name: FeatureTap(block.linear) for name, block in zip(self._block_names(), self.blocks)}
