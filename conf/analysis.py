"""python analysis.py [experiment=NAME] [key=value ...] — the analysis options.

They are not run settings: they never enter a run id. They form the analysis *recipe* (all but
`figures`, which only says whether to draw afterwards): a cell of the metrics table computed under
another recipe (or another metric version) is stale and is computed again.
"""

from dataclasses import dataclass

from conf.global_settings import DATASETS, check_fields, setting


@dataclass(frozen=True)
class Analysis:
    """How checkpoints are measured (metrics/)."""

    analysis_batch_size: int = setting(500, "examples per forward pass of the analysis", minimum=1)
    probe_dimensions: int = setting(512, "features are pooled to at most this many dimensions for the probes and the decoder", minimum=1)
    heldout_fraction: float = setting(0.1, "part of the training split held out to choose the ridge regularisation", above=0.0, below=1.0)
    effective_depth_epsilon: float = setting(0.01, "effective depth: first layer whose NCC train accuracy is within this of the last layer's", minimum=0.0, maximum=1.0)
    linear_maps: str = setting("closed_form", "probes and decoder: closed_form (ridge), or adam / sgd trained 20 epochs as LearnPhase does", choices=("closed_form", "adam", "sgd"))
    transfer_dataset: str = setting("own", "images of the colour-dominance probe: own = the run's (LearnPhase's code), or another dataset, e.g. cifar100 (its README)", choices=("own", *DATASETS))
    feature_cache_gb: float = setting(4.0, "keep the training split's features up to this size for the train accuracies (else a second pass)", minimum=0.0)
    figures: bool = setting(True, "after measuring, draw every figure and write the report (not part of the recipe)")

    def __post_init__(self):
        check_fields(self)
