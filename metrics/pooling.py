"""Shrink a layer's features to a fixed width before fitting metrics on them.

Ridge probes and decoders (LearnPhase, Schneider & Prabhushankar, AAAI 2024) solve a D × D system, so
early convolutional layers (C·H·W in the tens of thousands) must be narrowed first; NCC and CDNV
(Galanti et al., TMLR 2023) use the same pooled features so every metric sees one representation.
"""

from __future__ import annotations

import math

import torch.nn.functional as functional
from torch import Tensor


def pool_to(features: Tensor, max_dimensions: int) -> Tensor:
    """[B, ...] -> [B, D'] with D' ≤ max_dimensions; the width used is the result's shape[1].

    1. Flatten; if that fits, return it unchanged.
    2. A 4-D map [B, C, H, W] is adaptive-average-pooled to the largest s × s grid with C·s² ≤
       max_dimensions and s ≤ min(H, W), s ≥ 1; keeping the grid square keeps the channels whole
       and the spatial layout coarse but intact (channel-major flattening, as torch's). A 3-D token
       stream [B, C, T] (a transformer's, channel-first: models/vit.py) likewise to the largest k ≤ T
       groups of consecutive tokens with C·k ≤ max_dimensions (adaptive average pooling's windows, which
       overlap by a token where k does not divide T), k = 1 being the token mean.
    3. Still too wide (C > max_dimensions after s = 1 or k = 1), or 2-D: average groups of g = ⌈D / max⌉
       consecutive features, ⌈D / g⌉ groups, the last one possibly shorter (averaged over its own size).
    Deterministic (no random projection), so features of every checkpoint are reduced alike.
    """
    if max_dimensions < 1:
        raise ValueError(f"max_dimensions must be >= 1, got {max_dimensions}")
    batch = features.shape[0]
    flat = features.reshape(batch, -1)
    if flat.shape[1] <= max_dimensions:
        return flat
    if features.dim() == 4:
        channels, height, width = features.shape[1:]
        side = max(1, min(math.isqrt(max_dimensions // channels), height, width))
        if height % side == 0 and width % side == 0:  # the same windows; avg_pool2d is the faster kernel
            pooled = functional.avg_pool2d(features, (height // side, width // side))
        else:
            pooled = functional.adaptive_avg_pool2d(features, side)
        flat = pooled.reshape(batch, -1)
        if flat.shape[1] <= max_dimensions:
            return flat
    if features.dim() == 3:
        channels, tokens = features.shape[1:]
        flat = functional.adaptive_avg_pool1d(features, max(1, min(tokens, max_dimensions // channels))).reshape(batch, -1)
        if flat.shape[1] <= max_dimensions:
            return flat
    return _average_consecutive(flat, max_dimensions)


def _average_consecutive(flat: Tensor, max_dimensions: int) -> Tensor:
    """Means of runs of ⌈D / max⌉ consecutive columns of flat [B, D]."""
    width = flat.shape[1]
    group = math.ceil(width / max_dimensions)
    groups = math.ceil(width / group)
    padded = functional.pad(flat, (0, groups * group - width))  # zeros add nothing to the sums
    sums = padded.reshape(flat.shape[0], groups, group).sum(dim=2)
    sizes = [group] * (groups - 1) + [width - (groups - 1) * group]
    return sums / sums.new_tensor(sizes)
