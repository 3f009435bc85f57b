"""metrics/trained.py: LearnPhase-style linear maps trained by Adam or SGD, checked against the closed form."""

import pytest
import torch

from metrics.ridge import CrossMoments, ridge_fit
from metrics.trained import mse, train_linear_map

DIMENSION, OUTPUTS, NOISE = 24, 6, 0.3


def linear_problem(count: int, seed: int):
    """x: badly scaled and offset features (scales 0.1 to 10, mean 3); t = linear in x + noise of std NOISE."""
    generator = torch.Generator().manual_seed(seed)
    truth = torch.Generator().manual_seed(1234)  # the same map for the training and the test draw
    weights = torch.randn(DIMENSION, OUTPUTS, generator=truth) / DIMENSION ** 0.5
    bias = torch.randn(OUTPUTS, generator=truth)
    latent = torch.randn(count, DIMENSION, generator=generator)
    features = latent * torch.logspace(-1, 1, DIMENSION) + 3.0
    return features, latent @ weights + bias + NOISE * torch.randn(count, OUTPUTS, generator=generator)


@pytest.fixture(scope="module")
def splits():
    return linear_problem(1500, seed=0), linear_problem(1000, seed=1)


def closed_form_test_mse(splits) -> float:
    (train_features, train_targets), (test_features, test_targets) = splits
    moments = CrossMoments(DIMENSION, OUTPUTS)
    moments.update(train_features, train_targets)
    return mse(test_features, test_targets, *ridge_fit(moments, 1e-10))


def test_trained_map_approaches_the_closed_form(splits):
    (train_features, train_targets), (test_features, test_targets) = splits
    closed = closed_form_test_mse(splits)
    assert closed == pytest.approx(NOISE ** 2, rel=0.15)  # the problem is what it claims to be
    weights, bias = train_linear_map(train_features, train_targets, epochs=30, optimizer="adam", lr=1e-2,
                                     weight_decay=0.0)
    assert weights.shape == (DIMENSION, OUTPUTS) and bias.shape == (OUTPUTS,)
    assert weights.dtype == bias.dtype == torch.float64
    trained = mse(test_features, test_targets, weights, bias)
    assert closed <= trained <= 1.03 * closed


def test_sgd_runs_and_learns(splits):
    (train_features, train_targets), (test_features, test_targets) = splits
    weights, bias = train_linear_map(train_features, train_targets, epochs=10, optimizer="sgd")
    trained = mse(test_features, test_targets, weights, bias)
    untrained = mse(test_features, test_targets, *train_linear_map(train_features, train_targets, epochs=0,
                                                                   optimizer="sgd"))
    assert trained <= 1.05 * closed_form_test_mse(splits) < untrained


def test_learnphase_defaults_run_and_lose_to_the_closed_form(splits):
    """Adam, lr 3e-4, 20 epochs of batch 128: still short of the least-squares solution."""
    (train_features, train_targets), (test_features, test_targets) = splits
    weights, bias = train_linear_map(train_features, train_targets)
    assert closed_form_test_mse(splits) < mse(test_features, test_targets, weights, bias)


def test_same_seed_same_map_other_seed_other_map(splits):
    (train_features, train_targets), _ = splits
    first = train_linear_map(train_features, train_targets, epochs=2, seed=5)
    again = train_linear_map(train_features, train_targets, epochs=2, seed=5)
    other = train_linear_map(train_features, train_targets, epochs=2, seed=6)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_bad_arguments_raise(splits):
    (train_features, train_targets), _ = splits
    with pytest.raises(ValueError, match="optimizer"):
        train_linear_map(train_features, train_targets, optimizer="rmsprop")
    with pytest.raises(ValueError):
        train_linear_map(train_features, train_targets[:10])


def test_mse_is_the_mean_over_samples_and_targets():
    features = torch.tensor([[1.0], [2.0]])
    targets = torch.tensor([[1.0, 0.0], [2.0, 4.0]])
    weights, bias = torch.tensor([[1.0, 1.0]], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    assert mse(features, targets, weights, bias) == pytest.approx((0 + 1 + 0 + 4) / 4)
