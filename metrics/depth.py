"""Effective depth (Galanti et al., TMLR 2023, "IntermediateNC")."""

from __future__ import annotations

import math

# Accuracies are ratios of counts, so 0.99 − 0.04 may round a hair above 0.95: forgive float64 rounding.
ROUNDING = 1e-12


def effective_depth(ncc_train_accuracy_by_layer: list[float], epsilon: float) -> int:
    """Index of the first layer whose NCC train accuracy is within epsilon of the LAST layer's.

    Galanti et al. call the first layer whose NCC train error is at most ε the ε-effective depth;
    measuring against the last layer instead of against 100 % gives the same answer when the network
    interpolates and stays defined when it does not (label noise, early checkpoints). One-sided: a
    layer that beats the last one by more than epsilon also counts as separable. Always defined (the
    last layer qualifies), so the result lies in [0, len − 1] — and that is its degenerate case: len − 1
    means "no intermediate collapse at this checkpoint", not a depth (figures/findings.py says so). A
    figure of it across depths then only counts layers; `effective_depth_literal` is the paper's own.
    """
    if not ncc_train_accuracy_by_layer:
        raise ValueError("effective_depth needs at least one layer's accuracy")
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    last = ncc_train_accuracy_by_layer[-1]
    if math.isnan(last):
        raise ValueError("the last layer's NCC accuracy is nan")
    threshold = last - epsilon - ROUNDING
    return next(index for index, accuracy in enumerate(ncc_train_accuracy_by_layer) if accuracy >= threshold)


def effective_depth_literal(ncc_train_accuracy_by_layer: list[float], epsilon: float) -> float:
    """Index of the first layer whose NCC train error is at most epsilon, NaN when no layer's is.

    Galanti et al.'s own definition of the ε-effective depth: error = 1 − accuracy ≤ ε, against 100 %,
    not against the last layer. Unlike `effective_depth` it can be undefined (a network that does not
    interpolate its training labels — label noise, an early checkpoint, a short run): NaN says so rather
    than naming the logits. A NaN layer accuracy never qualifies.
    """
    if not ncc_train_accuracy_by_layer:
        raise ValueError("effective_depth_literal needs at least one layer's accuracy")
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    threshold = 1.0 - epsilon - ROUNDING
    return float(next((index for index, accuracy in enumerate(ncc_train_accuracy_by_layer) if accuracy >= threshold),
                      math.nan))
