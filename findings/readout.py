"""python analysis.py experiment=E — the read-out: outputs/E/findings.csv, one row per condition and question.

    result = readout(metrics)        # Readout(table: the findings rows, phases: per condition and layer)
    result.table                     # what the report's findings table, its sentences and the figures show

Every question is answered from the metrics table alone, with its noise (findings/noise.py):

- stop_pretraining (LearnPhase): the transfer-probe peak of the last hidden layer on the seed-mean curve
  (findings/phases.py) against the classifier's best checkpoint; the seeds' own probe at the two
  checkpoints, paired by seed (findings/learning.py).
- effective_depth, effective_depth_trend (IntermediateNC): the paper's ε-effective depth per condition,
  and its change along a numeric swept key (findings/depth.py).
- warm_start_gap, intervention (Berariu et al. 2021): final test accuracy paired by seed against the
  from-scratch twin / the plain warm start (findings/plasticity.py).
- transfer_start (LearnPhase): children started at the parent's stop against children started at its
  end (findings/transfer.py).

A row holds the estimate (the mean over seeds of the compared difference, or of the level for a depth),
its t-interval (low, high; findings/noise.py: 97.5 %), the seed count, the resolution, the checkpoint it is read at (and the one
it is compared with), a verdict from findings/rows.py VERDICTS, the statement in words and the reason. Seeds are combined
one way everywhere: the mean curve over a condition's seeds, at the checkpoints every seed has; every
iteration named is a checkpoint that exists.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from findings.rows import COLUMNS, READ


@dataclasses.dataclass(frozen=True)
class Readout:
    """The findings rows (COLUMNS), the seed-mean phases per condition and layer (phases.csv) and the condition
    label of each run that trained from its own start (run id -> the phases' `condition`)."""

    table: pd.DataFrame
    phases: pd.DataFrame
    labels: dict


def readout(metrics: pd.DataFrame, tolerance: float = 0.05) -> Readout:
    """Every question the table can answer (module docstring), in the order of COLUMNS' stories."""
    from findings import depth, learning, plasticity, transfer
    from findings.conditions import run_rows

    from findings.conditions import own_runs, condition_labels

    runs = run_rows(metrics)
    metrics = metrics[metrics["metric"].isin(READ)]  # a measured table holds twenty metrics: read what is asked
    phases, rows = learning.stop_questions(metrics, runs, tolerance)
    rows += transfer.transfer_questions(metrics, runs, rows)
    rows += depth.depth_questions(metrics, runs)
    rows += plasticity.plasticity_questions(metrics, runs)
    return Readout(pd.DataFrame(rows, columns=list(COLUMNS)), phases, condition_labels(own_runs(runs), runs))
