"""A small vision transformer (Dosovitskiy et al., ICLR 2021, "An Image is Worth 16x16 Words"), pre-norm as
in their Eq. 2-4 and timm's `VisionTransformer`, sized for CIFAR and MNIST inputs: patch_size 4 on 32x32
images gives 64 patches (7x7 patches of 4 on 28x28 ones).

    python train.py arch=vit depth=6 width=192 heads=3 patch_size=4 dataset=cifar10
"""

import math

import torch
from torch import Tensor, nn

from models.base import FeatureTap, LayerwiseModel, require_positive
from models.registry import register

MLP_RATIO = 4  # the MLP's hidden width over `width`, as ViT-B/16 (3072 / 768)


class PatchEmbedding(nn.Module):
    """Non-overlapping patch_size × patch_size patches → `width` dimensions each (one strided conv, as the
    paper's linear projection of flattened patches), a learnt class token in front, learnt position
    embeddings added: [B, C, H, W] → [B, 1 + patches, width]."""

    def __init__(self, channels: int, height: int, width_in_pixels: int, patch_size: int, width: int) -> None:
        super().__init__()
        if height % patch_size or width_in_pixels % patch_size:
            raise ValueError(f"patch_size={patch_size} does not divide the {height}x{width_in_pixels} images; "
                             f"accepted: a divisor of both sides")
        self.projection = nn.Conv2d(channels, width, kernel_size=patch_size, stride=patch_size)
        patches = (height // patch_size) * (width_in_pixels // patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        # 0.02: the truncated-normal scale of the reference implementation and timm
        self.position = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, 1 + patches, width), std=0.02))

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.projection(x).flatten(2).transpose(1, 2)  # [B, patches, width], row-major patch order
        return torch.cat((self.class_token.expand(len(tokens), -1, -1), tokens), dim=1) + self.position


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (softmax(QKᵀ/√d)V): the same arithmetic on every device, with
    no fused kernel whose backward may be non-deterministic on CUDA."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.projection = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, width = x.shape
        query, key, value = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        weights = (query @ key.transpose(-2, -1) / math.sqrt(width // self.heads)).softmax(dim=-1)
        return self.projection((weights @ value).transpose(1, 2).reshape(batch, tokens, width))


class TransformerBlock(nn.Module):
    """x + Attention(LayerNorm(x)), then + MLP(LayerNorm(·)) with GELU (the paper's Eq. 2-3)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = SelfAttention(width, heads)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, MLP_RATIO * width), nn.GELU(), nn.Linear(MLP_RATIO * width, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class ClassTokenHead(nn.Module):
    """LayerNorm, then the class token alone through one Linear (the paper's Eq. 4)."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.norm(x)[:, 0])


@register("vit")
class VisionTransformer(LayerwiseModel):
    """stem = patch embedding (+ class token, + position embeddings) → `depth` pre-norm transformer blocks
    of `width` dimensions and `heads` heads → head = LayerNorm → Linear on the class token. batch_norm does
    not apply (LayerNorm, as the paper). The reset-last-k modules are stem, block00 … and head.

    Features are token streams, channel-first like a conv net's maps: [B, width, 1 + patches], token 0
    the class token, then the patches in row-major order, so the engine's pooling and per-unit statistics
    treat a token as a conv map treats a position (metrics/pooling.py: all tokens when they fit, else
    means of consecutive tokens, down to the token mean):
        input    x, [B, C, H, W].
        stem     the embedded tokens, before the first block.
        blockNN  block NN's output, the residual stream after its MLP.
        logits   [B, num_classes].
    Pre-activation features (IntermediateNC's point) are the same tensors: no activation follows a
    transformer block's residual sum (its GELU is inside the MLP branch), so there is nothing before it.
    """

    layer_type = "transformer"

    token_streams = True  # its modules return [B, tokens, width]: hooks on them turn it channel-first too

    def __init__(self, *, depth: int, width: int, batch_norm: bool, input_shape: tuple[int, int, int],
                 num_classes: int, patch_size: int = 4, heads: int = 4) -> None:
        require_positive(depth=depth, width=width, num_classes=num_classes, patch_size=patch_size, heads=heads)
        if width % heads:
            raise ValueError(f"heads={heads} does not divide width={width}; accepted: a divisor of the width")
        channels, height, width_in_pixels = input_shape
        super().__init__(stem=PatchEmbedding(channels, height, width_in_pixels, patch_size, width),
                         blocks=[TransformerBlock(width, heads) for _ in range(depth)],
                         head=ClassTokenHead(width, num_classes))

    def features(self, x: Tensor, point: str = "post_activation") -> dict[str, Tensor]:
        """LayerwiseModel.features with each token stream [B, tokens, width] as [B, width, tokens]."""
        return {name: tensor.transpose(1, 2) if tensor.dim() == 3 else tensor
                for name, tensor in super().features(x, point).items()}

    def pre_activation_taps(self) -> dict[str, FeatureTap]:
        """Each stem's and block's own output: a residual stream, which no activation follows."""
        return {"stem": FeatureTap(self.stem), **{name: FeatureTap(block)
                                                  for name, block in zip(self._block_names(), self.blocks)}}
