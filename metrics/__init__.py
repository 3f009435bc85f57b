"""Per-layer analysis metrics: pure tensor functions and streaming float64 accumulators, and `measure`,
the whole analysis of one model on tensors (metrics/api.py).

    table = measure(model, train=(images, labels), test=(images, labels), layers=["layer1"], metrics=["nc1"])

    moments = ClassMoments(num_classes, dimension, device)      # NCC / CDNV (Galanti et al., TMLR 2023)
    decoder = CrossMoments(dimension, pixels, device)           # linear decoder (Schneider & Prabhushankar, AAAI 2024)
    for features, labels, images in batches:
        features = pool_to(features, 4096)
        moments.update(features, labels)
        decoder.update(features, images.flatten(1))
"""

from metrics.api import measure
from metrics.depth import effective_depth
from metrics.moments import ClassMoments, cdnv, ncc_predictions
from metrics.pooling import pool_to
from metrics.ridge import L2_GRID, CrossMoments, choose_l2, ridge_fit, ridge_mse

__all__ = [
    "L2_GRID", "ClassMoments", "CrossMoments", "cdnv", "choose_l2", "effective_depth",
    "measure", "ncc_predictions", "pool_to", "ridge_fit", "ridge_mse",
]
