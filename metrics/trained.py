"""Linear maps trained by gradient descent, as LearnPhase trains its decoder — for parity with the seed.

The analysis itself fits its decoders and probes in closed form (metrics/ridge.py). This module
reproduces the seed's way, so the two can be compared on the same features (benchmarks/analysis_metrics.py)
and a closed-form curve can be checked against a trained one:

    weights, bias = train_linear_map(train_features, train_images.flatten(1))   # Adam, 20 epochs
    loss = mse(test_features, test_images.flatten(1), weights, bias)             # per pixel, target units²

What follows LearnPhase (Schneider & Prabhushankar, AAAI 2024; JohnTailor/LearnPhase, `cladec.py`
`trainClaPlane` with `claOpt = ('A', 20, …)` in `mainMet.py`): one `nn.Linear(D, K)` with PyTorch's
default initialisation, mean squared error over samples and pixels, Adam with lr 3e-4 and (coupled, L2)
weight decay 1e-5, 20 epochs, minibatches of 128 reshuffled every epoch (last one partial), no learning
rate schedule (their `decay` only acts on SGD). Their SGD (the probes' `evOpt`) uses momentum 0.9 and
lr 0.01. What differs: float32 instead of fp16 autocast; the features are standardised per dimension
before training (LearnPhase feeds raw activations), which only conditions the problem — the map is
folded back to the raw features, so callers see a map on the features they passed (the weight decay
therefore acts on the standardised weights, not on the raw ones as in LearnPhase).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as functional
from torch import Tensor

from utils import seeded_generator

# LearnPhase's learning rates: Adam for the decoder (trainClaPlane), SGD for the probes (evOpt).
DEFAULT_LEARNING_RATES = {"adam": 3e-4, "sgd": 1e-2}
LEARNPHASE_WEIGHT_DECAY = 1e-5
MSE_CHUNK = 4096  # rows per float64 block in mse(): bounds memory at CHUNK × K × 8 bytes


def train_linear_map(features: Tensor, targets: Tensor, *, epochs: int = 20, optimizer: str = "adam",
                     lr: float | None = None, batch_size: int = 128, seed: int = 0,
                     weight_decay: float = LEARNPHASE_WEIGHT_DECAY) -> tuple[Tensor, Tensor]:
    """weights [D, K] and bias [K], float64, of x W + b ≈ t trained on features [N, D] → targets [N, K].

    optimizer: "adam" or "sgd" (momentum 0.9); lr None takes LearnPhase's value for it (3e-4, 1e-2).
    Minibatch order of epoch e is torch.randperm from utils.seeded_generator(seed, "linear map", e) and
    the initial weights come from seeded_generator(seed, "linear map", "init"), so the same inputs and
    seed give the same map (bit for bit on the CPU). Runs on the features' device in float32.
    """
    if optimizer not in DEFAULT_LEARNING_RATES:
        raise ValueError(f"optimizer must be one of {', '.join(DEFAULT_LEARNING_RATES)}, got {optimizer!r}")
    if features.dim() != 2 or targets.dim() != 2 or features.shape[0] != targets.shape[0] or features.shape[0] == 0:
        raise ValueError(f"expected features [N, D] and targets [N, K] with N > 0, "
                         f"got {tuple(features.shape)} and {tuple(targets.shape)}")
    if epochs < 0 or batch_size < 1:
        raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {epochs} and {batch_size}")
    learning_rate = DEFAULT_LEARNING_RATES[optimizer] if lr is None else lr
    device = features.device
    count, dimension = features.shape
    outputs = targets.shape[1]

    # Standardise in float64 (two-pass mean and variance), train in float32 on the standardised copy.
    feature_mean = features.to(torch.float64).mean(dim=0)
    feature_scale = (features.to(torch.float64) - feature_mean).square().mean(dim=0).sqrt()
    feature_scale = torch.where(feature_scale > 0, feature_scale, torch.ones_like(feature_scale))  # constant: leave
    standardised = ((features.to(torch.float64) - feature_mean) / feature_scale).to(torch.float32)
    targets = targets.detach().to(dtype=torch.float32)

    # nn.Linear's default initialisation, U(−1/√D, 1/√D) for weight and bias, from our own generator.
    bound = 1 / math.sqrt(dimension)
    generator = seeded_generator(seed, "linear map", "init")
    weights = ((torch.rand(dimension, outputs, generator=generator) * 2 - 1) * bound).to(device).requires_grad_()
    bias = ((torch.rand(outputs, generator=generator) * 2 - 1) * bound).to(device).requires_grad_()
    parameters = [weights, bias]
    if optimizer == "adam":
        step = torch.optim.Adam(parameters, lr=learning_rate, weight_decay=weight_decay)
    else:
        step = torch.optim.SGD(parameters, lr=learning_rate, momentum=0.9, weight_decay=weight_decay)

    for epoch in range(epochs):
        order = torch.randperm(count, generator=seeded_generator(seed, "linear map", epoch)).to(device)
        for start in range(0, count, batch_size):
            batch = order[start:start + batch_size]
            loss = functional.mse_loss(torch.addmm(bias, standardised[batch], weights), targets[batch])
            step.zero_grad(set_to_none=True)
            loss.backward()
            step.step()

    # Fold the standardisation back: ((x − m) / s) W + b = x (W / s) + (b − (m / s) W).
    trained = weights.detach().to(torch.float64)
    folded = trained / feature_scale.unsqueeze(1)
    return folded, bias.detach().to(torch.float64) - feature_mean @ folded


def mse(features: Tensor, targets: Tensor, weights: Tensor, bias: Tensor) -> float:
    """Mean over samples and target dimensions of (x W + b − t)², computed in float64 (target units²)."""
    if features.shape[0] != targets.shape[0] or features.shape[0] == 0:
        raise ValueError(f"expected features [N, D] and targets [N, K] with N > 0, "
                         f"got {tuple(features.shape)} and {tuple(targets.shape)}")
    weights, bias = weights.to(features.device, torch.float64), bias.to(features.device, torch.float64)
    total = torch.zeros((), dtype=torch.float64, device=features.device)
    for start in range(0, features.shape[0], MSE_CHUNK):
        block = features[start:start + MSE_CHUNK].to(torch.float64)
        residual = torch.addmm(bias, block, weights) - targets[start:start + MSE_CHUNK].to(torch.float64)
        total += residual.square().sum()
    return total.item() / targets.numel()
