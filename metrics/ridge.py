"""Closed-form ridge regression from streamed moments: linear probes and linear decoders.

LearnPhase (Schneider & Prabhushankar, AAAI 2024) fits a linear decoder from a layer's features back
to the input image; its reconstruction loss over training shows the learning phases. The same solver
fits ridge probes (one-hot targets) for the transfer task.

    fit, held_out = CrossMoments(512, 3072), CrossMoments(512, 3072)
    fit.update(features, images.flatten(1))          # per batch, no host synchronisation
    l2 = choose_l2(fit, held_out)
    weights, bias = ridge_fit(fit, l2)
    loss = ridge_mse(held_out, weights, bias)       # mean squared error per pixel, in target units²
"""

from __future__ import annotations

import torch
from torch import Tensor

L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


class CrossMoments:
    """Streamed float64 sufficient statistics of (X [B, D], T [B, K]) for closed-form ridge regression:
    n, Σx, Σt, XᵀX, XᵀT, Σ‖t‖² — shifted by the first batch's means for numerical stability.

    Every sum is over (x − feature_shift) and (t − target_shift): centring later (XᵀX − Σx Σxᵀ / n) then
    only cancels the small offset of the data mean from the first batch's mean, not the raw mean.
    """

    def __init__(self, dimension: int, targets: int, device=None):
        self.dimension, self.targets = dimension, targets
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
        self.count = 0  # the batch sizes are known on the host: a Python int costs no synchronisation
        self.feature_shift, self.target_shift = zeros(dimension), zeros(targets)
        self.feature_sum, self.target_sum = zeros(dimension), zeros(targets)
        self.feature_gram, self.cross = zeros(dimension, dimension), zeros(dimension, targets)
        self.target_square_sum = zeros(())

    def update(self, features: Tensor, targets: Tensor) -> None:
        """Add a batch: features [B, D] and targets [B, K], any float dtypes."""
        if features.shape[1:] != (self.dimension,) or targets.shape != (features.shape[0], self.targets):
            raise ValueError(f"expected features [B, {self.dimension}] and targets [B, {self.targets}], "
                             f"got {tuple(features.shape)} and {tuple(targets.shape)}")
        if features.shape[0] == 0:
            return
        device = self.feature_gram.device
        features = features.detach().to(device=device, dtype=torch.float64)
        targets = targets.detach().to(device=device, dtype=torch.float64)
        if self.count == 0:
            self.feature_shift, self.target_shift = features.mean(dim=0), targets.mean(dim=0)
        features, targets = features - self.feature_shift, targets - self.target_shift
        self.count += features.shape[0]
        self.feature_sum += features.sum(dim=0)
        self.target_sum += targets.sum(dim=0)
        self.feature_gram.addmm_(features.T, features)
        self.cross.addmm_(features.T, targets)
        self.target_square_sum += targets.square().sum()

    def merge(self, other: "CrossMoments") -> "CrossMoments":
        """Both streams together, expressed with self's shifts (neither operand changes)."""
        if (other.dimension, other.targets) != (self.dimension, self.targets):
            raise ValueError("cannot merge moments of different shapes")
        merged = CrossMoments(self.dimension, self.targets, device=self.feature_gram.device)
        first, second = (self, other) if self.count > 0 else (other, self)
        for name, value in vars(first).items():
            setattr(merged, name, value.clone().to(merged.feature_gram.device) if torch.is_tensor(value) else value)
        if second.count == 0:
            return merged
        # Re-shift the second stream's sums: Σ(x − a) = Σ(x − b) + n (b − a), and likewise for products.
        device, n = merged.feature_gram.device, second.count
        feature_offset = second.feature_shift.to(device) - merged.feature_shift
        target_offset = second.target_shift.to(device) - merged.target_shift
        feature_sum, target_sum = second.feature_sum.to(device), second.target_sum.to(device)
        merged.count += n
        merged.feature_sum += feature_sum + n * feature_offset
        merged.target_sum += target_sum + n * target_offset
        outer = torch.outer
        merged.feature_gram += (second.feature_gram.to(device) + outer(feature_sum, feature_offset)
                                + outer(feature_offset, feature_sum) + n * outer(feature_offset, feature_offset))
        merged.cross += (second.cross.to(device) + outer(feature_sum, target_offset)
                         + outer(feature_offset, target_sum) + n * outer(feature_offset, target_offset))
        merged.target_square_sum += (second.target_square_sum.to(device) + 2 * target_offset @ target_sum
                                     + n * target_offset.square().sum())
        return merged

    def centred(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Feature mean [D], target mean [K] and centred sums Σ(x−x̄)(x−x̄)ᵀ [D, D], Σ(x−x̄)(t−t̄)ᵀ [D, K], Σ‖t−t̄‖²."""
        if self.count == 0:
            raise ValueError("no samples: update() was never given a non-empty batch")
        n, feature_sum, target_sum = self.count, self.feature_sum, self.target_sum
        feature_scatter = self.feature_gram - torch.outer(feature_sum, feature_sum) / n
        cross_scatter = self.cross - torch.outer(feature_sum, target_sum) / n
        target_scatter = self.target_square_sum - target_sum.square().sum() / n
        return (self.feature_shift + feature_sum / n, self.target_shift + target_sum / n,
                feature_scatter, cross_scatter, target_scatter)


def ridge_fit(moments: CrossMoments, l2: float) -> tuple[Tensor, Tensor]:
    """weights [D, K] and bias [K] minimising mean_samples ‖x W + b − t‖² + λ ‖W‖_F², float64.

    The bias is not penalised, so W solves the centred normal equations (Σ_xx / n + λ I) W = Σ_xt / n
    and b = t̄ − x̄ W. The penalty is relative: λ = l2 · trace(Σ_xx / n) / D, l2 times the mean
    per-feature variance. Rescaling a layer's features then rescales λ with them and leaves the
    predictions unchanged, so one grid of l2 values suits every layer. Solved by Cholesky; if that
    fails (λ below rounding of a rank-deficient Σ_xx, or a constant layer with trace 0), by the
    symmetric pseudo-inverse, which returns the minimum-norm solution.
    """
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    feature_mean, target_mean, feature_scatter, cross_scatter, _ = moments.centred()
    covariance, cross_covariance = feature_scatter / moments.count, cross_scatter / moments.count
    penalty = l2 * covariance.diagonal().sum() / moments.dimension
    system = covariance + penalty * torch.eye(moments.dimension, dtype=torch.float64, device=covariance.device)
    factor, info = torch.linalg.cholesky_ex(system)
    if info.item() == 0:  # one synchronisation per fit, never per batch
        weights = torch.cholesky_solve(cross_covariance, factor)
    else:
        weights = torch.linalg.pinv(system, hermitian=True) @ cross_covariance
    return weights, target_mean - feature_mean @ weights


def ridge_mse(moments: CrossMoments, weights: Tensor, bias: Tensor) -> float:
    """Mean over samples and target dimensions of (x W + b − t)² on the moments' data, with no second pass.

    Σ‖xW + b − t‖² = tr(Wᵀ Σ_xx W) − 2 tr(Wᵀ Σ_xt) + Σ‖t − t̄‖² + n ‖x̄ W + b − t̄‖² (centred scatters).
    Exact up to float64 rounding of the terms, i.e. an absolute error near 1e-16 × the target variance;
    a rounding-negative result is clipped to 0.
    """
    feature_mean, target_mean, feature_scatter, cross_scatter, target_scatter = moments.centred()
    weights, bias = weights.to(feature_scatter), bias.to(feature_scatter)
    centred_error = ((weights * (feature_scatter @ weights)).sum() - 2 * (weights * cross_scatter).sum()
                     + target_scatter)
    mean_error = moments.count * (feature_mean @ weights + bias - target_mean).square().sum()
    return (centred_error + mean_error).clamp_min(0).item() / (moments.count * moments.targets)


def held_out_errors(fit: CrossMoments, held_out: CrossMoments, grid=L2_GRID) -> list[float]:
    """ridge_mse(held_out, *ridge_fit(fit, l2)) for every l2 in `grid`, from one eigendecomposition.

    With Σ_xx/n = Q diag(e) Qᵀ and A = Qᵀ Σ_xt/n, the fit for penalty λ is W = Q B, B = A / (e + λ).
    On held-out data (centred scatters S, S_xt, S_tt, mean offsets δx = x̄_h − x̄, δt = t̄_h − t̄):
        Σ‖xW + b − t‖² = Σ_ij M_ij G_ij / ((e_i+λ)(e_j+λ)) − 2 Σ_i r_i / (e_i+λ) + S_tt + n_h ‖(u/(e+λ))ᵀA − δt‖²
    with M = Qᵀ S Q, G = A Aᵀ, r_i = (A ∘ Qᵀ S_xt)_i summed over targets and u = Qᵀ δx. The O(D²K)
    work is done once; each grid value then costs O(D² + DK) instead of a solve and a quadratic form.
    """
    feature_mean, target_mean, feature_scatter, cross_scatter, _ = fit.centred()
    held_feature_mean, held_target_mean, held_scatter, held_cross, held_target_scatter = held_out.centred()
    covariance = feature_scatter / fit.count
    eigenvalues, basis = torch.linalg.eigh(covariance)
    eigenvalues = eigenvalues.clamp_min(0)
    projected = basis.T @ (cross_scatter / fit.count)  # A
    gram = projected @ projected.T  # G
    rotated_scatter = basis.T @ held_scatter.to(basis) @ basis  # M
    agreement = (projected * (basis.T @ held_cross.to(basis))).sum(1)  # r
    offset = basis.T @ (held_feature_mean.to(basis) - feature_mean)  # u
    target_offset = held_target_mean.to(basis) - target_mean  # δt
    scale = covariance.diagonal().sum() / fit.dimension
    errors = []
    for l2 in grid:
        denominator = eigenvalues + l2 * scale
        inverse = torch.where(denominator > 0, 1 / denominator, torch.zeros_like(denominator))  # pinv on a null space
        quadratic = (rotated_scatter * gram * torch.outer(inverse, inverse)).sum()
        linear = (agreement * inverse).sum()
        mean_error = ((offset * inverse) @ projected - target_offset).square().sum()
        total = quadratic - 2 * linear + held_target_scatter.to(basis) + held_out.count * mean_error
        errors.append(total.clamp_min(0).item() / (held_out.count * held_out.targets))
    return errors


def choose_l2(fit: CrossMoments, held_out: CrossMoments, grid=L2_GRID) -> float:
    """The relative l2 in `grid` whose ridge fit on `fit` has the lowest ridge_mse on `held_out` (first on ties)."""
    errors = held_out_errors(fit, held_out, grid)
    return grid[min(range(len(grid)), key=errors.__getitem__)]
