"""Closed-form ridge regression from streamed moments: linear probes and linear decoders.

LearnPhase (Schneider & Prabhushankar, AAAI 2024) fits a linear decoder from a layer's features back
to the input image; its reconstruction loss over training shows the learning phases. The same solver
fits ridge probes (one-hot targets) for the classes and the transfer task. Every map of a layer reads
the same features, so one Gram XᵀX serves them all (RidgeMoments); each target adds only XᵀT.

    moments = RidgeMoments(512, {"classes": 10, "image": 3072})
    moments.update(features, {"classes": one_hot, "image": images.flatten(1)})   # per batch, no host sync
    decoder = moments.view("image")                                             # a CrossMoments
    l2 = choose_l2(fit.view("image"), held_out.view("image"))
    weights, bias = ridge_fit(decoder, l2)
    loss = ridge_mse(test.view("image"), weights, bias)   # mean squared error per pixel, in target units²

The moments are streamed in metrics/cross_moments.py (float32 batch products on centred data summed
in float64). Here everything is float64 but the O(D²K) products that only rank the l2 grid or
evaluate an error (`precision`): tests/test_statistics.py measures their agreement with float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metrics.cross_moments import STAGED_BATCHES, CrossMoments, RidgeMoments, Target

__all__ = ["L2_GRID", "STAGED_BATCHES", "CrossMoments", "RidgeMoments", "Target", "choose_l2", "eigenbasis",
           "fitted_error", "held_out_errors", "ridge_fit", "ridge_mse"]

L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


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
    # (Σ_xx/n + λ I) W = Σ_xt/n, multiplied through by n: the [D, K] right-hand side is used as it is
    penalty = l2 * feature_scatter.diagonal().sum() / moments.dimension
    system = feature_scatter + penalty * torch.eye(moments.dimension, dtype=torch.float64, device=feature_scatter.device)
    factor, info = torch.linalg.cholesky_ex(system)
    if info.item() == 0:  # one synchronisation per fit, never per batch
        # the inverse from the factor (O(D³)) then one GEMM with the K right-hand sides: half the time of
        # two triangular solves with K = 3072 columns, with the same κ·u accuracy in float64
        weights = torch.cholesky_inverse(factor) @ cross_scatter
    else:
        weights = torch.linalg.pinv(system, hermitian=True) @ cross_scatter
    return weights, target_mean - feature_mean @ weights


def ridge_mse(moments: CrossMoments, weights: Tensor, bias: Tensor, precision=torch.float64) -> float:
    """Mean over samples and target dimensions of (x W + b − t)² on the moments' data, with no second pass.

    Σ‖xW + b − t‖² = tr(Wᵀ Σ_xx W) − 2 tr(Wᵀ Σ_xt) + Σ‖t − t̄‖² + n ‖x̄ W + b − t̄‖² (centred scatters).
    Exact up to the rounding of the terms in `precision` (the O(D²K) product Σ_xx W; the rest is float64),
    i.e. an absolute error near 1e-16 (float64) or 1e-7 (float32) × the target variance; a
    rounding-negative result is clipped to 0.
    """
    feature_mean, target_mean, feature_scatter, cross_scatter, target_scatter = moments.centred()
    weights, bias = weights.to(feature_scatter), bias.to(feature_scatter)
    quadratic = (weights.to(precision) * (feature_scatter.to(precision) @ weights.to(precision))).sum(dtype=torch.float64)
    centred_error = quadratic - 2 * (weights * cross_scatter).sum() + target_scatter
    mean_error = moments.count * (feature_mean @ weights + bias - target_mean).square().sum()
    return (centred_error + mean_error).clamp_min(0).item() / (moments.count * moments.targets)


def fitted_error(moments: CrossMoments, weights: Tensor, l2: float) -> Tensor:
    """Σ‖xW + b − t‖² (float64 scalar on the device) of ridge_fit(moments, l2) on the moments' own data,
    in O(DK): at the solution of (Σ_xx/n + λ I) W = Σ_xt/n, tr(Wᵀ Σ_xx W) = tr(Wᵀ Σ_xt) − n λ ‖W‖², so
    the error is S_tt − tr(Wᵀ Σ_xt) − n λ ‖W‖² (and the mean term is 0)."""
    _, _, feature_scatter, cross_scatter, target_scatter = moments.centred()
    penalty = l2 * feature_scatter.diagonal().sum() / moments.count / moments.dimension
    error = target_scatter - (weights * cross_scatter).sum() - moments.count * penalty * weights.square().sum()
    return error.clamp_min(0)


def held_out_errors(fit: CrossMoments, held_out: CrossMoments, grid=L2_GRID, basis=None,
                    precision=torch.float64) -> list[float]:
    """ridge_mse(held_out, *ridge_fit(fit, l2)) for every l2 in `grid`, from one eigendecomposition.

    With Σ_xx/n = Q diag(e) Qᵀ and A = Qᵀ Σ_xt/n, the fit for penalty λ is W = Q B, B = A / (e + λ).
    On held-out data (centred scatters S, S_xt, S_tt, mean offsets δx = x̄_h − x̄, δt = t̄_h − t̄):
        Σ‖xW + b − t‖² = Σ_ij M_ij G_ij / ((e_i+λ)(e_j+λ)) − 2 Σ_i r_i / (e_i+λ) + S_tt + n_h ‖(u/(e+λ))ᵀA − δt‖²
    with M = Qᵀ S Q, G = A Aᵀ, r_i = (A ∘ Qᵀ S_xt)_i summed over targets and u = Qᵀ δx. The O(D²K)
    work is done once; each grid value then costs O(D² + DK) instead of a solve and a quadratic form.
    `basis`: eigenbasis(fit) computed already (the maps of one layer share their features' Gram).
    `precision`: of the O(D²K) and O(D³) products (float32 in the engine: they only rank the grid's
    values, and their rounding is far below the gaps between them); the rest is float64.
    """
    feature_mean, target_mean, feature_scatter, cross_scatter, _ = fit.centred()
    held_feature_mean, held_target_mean, held_scatter, held_cross, held_target_scatter = held_out.centred()
    eigenvalues, basis = eigenbasis(fit) if basis is None else basis
    rotation = basis.T.to(precision)
    projected = (rotation @ cross_scatter.to(precision)) / fit.count  # A
    gram = (projected @ projected.T).to(torch.float64)  # G
    rotated_scatter = (rotation @ held_scatter.to(precision) @ rotation.T).to(torch.float64)  # M
    agreement = (projected * (rotation @ held_cross.to(precision))).sum(1).to(torch.float64)  # r
    projected = projected.to(torch.float64)
    offset = basis.T @ (held_feature_mean.to(basis) - feature_mean)  # u
    target_offset = held_target_mean.to(basis) - target_mean  # δt
    scale = feature_scatter.diagonal().sum() / fit.count / fit.dimension  # as ridge_fit's penalty
    errors = []
    for l2 in grid:
        denominator = eigenvalues + l2 * scale
        inverse = torch.where(denominator > 0, 1 / denominator, torch.zeros_like(denominator))  # pinv on a null space
        quadratic = (rotated_scatter * gram * torch.outer(inverse, inverse)).sum()
        linear = (agreement * inverse).sum()
        mean_error = ((offset * inverse) @ projected - target_offset).square().sum()
        errors.append(quadratic - 2 * linear + held_target_scatter.to(basis) + held_out.count * mean_error)
    # one host synchronisation for the whole grid
    return (torch.stack(errors).clamp_min(0) / (held_out.count * held_out.targets)).tolist()


def eigenbasis(moments) -> tuple[Tensor, Tensor]:
    """(eigenvalues clamped at 0 [D], eigenvectors [D, D]) of the feature covariance of `moments`
    (RidgeMoments or CrossMoments): what held_out_errors needs of the fitting part, shared by every target."""
    covariance = moments.feature_covariance()
    eigenvalues, basis = torch.linalg.eigh(covariance)
    return eigenvalues.clamp_min(0), basis


def choose_l2(fit: CrossMoments, held_out: CrossMoments, grid=L2_GRID, basis=None, precision=torch.float64) -> float:
    """The relative l2 in `grid` whose ridge fit on `fit` has the lowest ridge_mse on `held_out` (first on ties)."""
    errors = held_out_errors(fit, held_out, grid, basis, precision)
    return grid[min(range(len(grid)), key=errors.__getitem__)]
