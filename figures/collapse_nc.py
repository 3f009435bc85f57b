"""Neural collapse NC1-NC2 by layer and over training (Papyan, Han & Donoho, PNAS 2020; Galanti et al.,
TMLR 2023), and the plasticity diagnostics (dormant units, Sokar et al. 2023; effective rank) of the
warm-start experiment (Berariu et al. 2021).

Figures: NC1 at the end of training vs hidden layer, one line per depth (as IntermediateNC's Fig. 1
does for NCC), one panel per condition; NC1 and NC2 of the last hidden layer vs iteration, one line per
condition; dormant fraction and effective rank of the last hidden layer vs epochs since the switch,
scratch vs warm start vs reset-k, one row of panels per condition (figures/style.py: condition_groups).
"""

from __future__ import annotations

import pandas as pd
import seaborn

from figures.collapse import HIDDEN, _by_layer, single_stage
from figures.plasticity import SWITCH_LABEL, present, protocol_colours, protocol_groups, switch_curves
from figures.registry import Skip, figure
from figures.style import (SEED_BAND, iteration_axis, legend_below, legend_outside, new_figure, condition_groups, shared,
                           titled, x_labelled)

PAPYAN = "Papyan, Han & Donoho, PNAS 2020"
GALANTI = "Galanti et al., TMLR 2023"
TRAINING_PANELS = (("nc1", "NC1, train (log scale)", True),
                   ("nc2_equinorm", "NC2 equinorm, train", False),
                   ("nc2_equiangularity", "NC2 equiangularity, train", False))
DIAGNOSTIC_PANELS = (("dormant_fraction", "dormant fraction of units, train"),
                     ("effective_rank", "effective rank, train"))


def require(metrics: pd.DataFrame, names) -> None:
    """Skip, naming them, when none of the metrics `names` has a row in the table."""
    if not metrics["metric"].isin(list(names)).any():
        raise Skip(f"no {', '.join(names)} rows in the table (measure them: metrics={','.join(names)})")


def last_hidden_layer(rows: pd.DataFrame) -> pd.DataFrame:
    """Each run's rows of its last hidden layer: the highest layer_index below the logits (input, logits and
    network-wide rows such as layer "all" left out)."""
    hidden = rows[~rows["layer"].isin(HIDDEN) & (rows["layer_index"] >= 0)]
    deepest = hidden.groupby("run_id")["layer_index"].transform("max")
    return hidden[hidden["layer_index"] == deepest]


@figure("nc1_by_layer", f"{PAPYAN} (NC1); {GALANTI} (intermediate layers)")
def nc1_by_layer(metrics: pd.DataFrame) -> dict:
    """NC1 (within-class over between-class variability, train, log scale) per hidden layer at each run's last
    checkpoint, one line per depth: collapse deepens with the layer (Galanti et al.'s Fig. 1, for NC1)."""
    require(metrics, ["nc1"])
    return {"nc1_by_layer": _by_layer(metrics, "nc1", "NC1, train (unitless; log scale)", log=True)}


@figure("nc_over_training", f"{PAPYAN}, Fig. 6-7 (NC1, NC2 over training)")
def nc_over_training(metrics: pd.DataFrame) -> dict:
    """NC1 (log) and NC2 (equinorm, equiangularity) of each run's last hidden layer vs iteration, one panel per
    metric, one line per condition (seeds pooled): all fall towards 0 as the features collapse (Papyan et al.)."""
    names = [metric for metric, _, _ in TRAINING_PANELS]
    require(metrics, names)
    rows = single_stage(metrics)
    rows = last_hidden_layer(rows[rows["metric"].isin(names) & (rows["split"] == "train")])
    if rows.empty:
        raise Skip("no NC1 / NC2 train rows of a hidden layer from single-stage runs in the table")
    groups = condition_groups(rows)  # a line per condition: every setting that varies, seeds pooled
    rows = pd.concat([part.assign(condition=fixed) for fixed, part in groups])
    many = len(groups) > 1
    panels = [panel for panel in TRAINING_PANELS if (rows["metric"] == panel[0]).any()]
    drawing, axes = new_figure(len(panels), width=5.0)  # the iteration label on one line
    shared(axes, x=True)  # one iteration axis; y: a different measure per panel
    for axis, (metric, label, log) in zip(axes, panels):
        seaborn.lineplot(rows[rows["metric"] == metric], x="iteration", y="value", hue="condition" if many else None,
                         errorbar=SEED_BAND, marker="o", markersize=3, palette="viridis" if many else None, ax=axis)
        iteration_axis(axis)
        axis.set_ylabel(label)
        if log:
            axis.set_yscale("log")
        if axis.get_legend():
            axis.get_legend().remove()  # one for the figure
    if many:  # one entry per condition, each a long description: under the panels, across the figure's width
        legend_below(drawing, axes[0], "condition")
    held = "" if many else f"\n{groups[0][0]}"
    titled(drawing, f"Neural collapse of the last hidden layer over training (NC1, NC2){held}", 10)
    return {"nc_over_training": drawing}


def diagnostic_curves(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One diagnostic of the last hidden layer (train split) per checkpoint of every scratch run and every
    warm-started child, its stage-1 parent prepended at negative epochs (figures/plasticity.py)."""
    chosen = metrics[(metrics["metric"] == metric) & (metrics["split"] == "train")]
    return switch_curves(metrics, last_hidden_layer(chosen)).assign(diagnostic=metric)


@figure("plasticity_diagnostics", "Berariu et al. 2021 (protocol); Sokar et al., ICML 2023 (dormant units); "
                                  "Kumar et al., ICLR 2021 (feature rank)")
def plasticity_diagnostics(metrics: pd.DataFrame) -> dict:
    """Dormant fraction and effective rank of the last hidden layer vs epochs since the switch to all data
    (stage 1 at negative epochs), scratch vs warm start vs reset-k: one row of panels per condition."""
    names = [metric for metric, _ in DIAGNOSTIC_PANELS]
    if not (metrics["pretrain_fraction"] > 0).any():
        raise Skip("no warm-started runs (pretrain_fraction > 0) in this experiment")
    require(metrics, names)
    panels = [(metric, label) for metric, label in DIAGNOSTIC_PANELS if (metrics["metric"] == metric).any()]
    curves = pd.concat([diagnostic_curves(metrics, metric) for metric, _ in panels], ignore_index=True)
    groups = protocol_groups(curves)
    drawing, axes = new_figure(len(panels), len(groups), width=5.0)
    shared(axes, x=True)  # one epochs-since-switch axis
    for column in range(len(panels)):  # conditions compared down a column: one range per diagnostic
        shared(axes[column::len(panels)], y=True)
    palette = protocol_colours(groups)
    for row, (fixed, part) in enumerate(groups):
        for column, (metric, label) in enumerate(panels):
            axis = axes[row * len(panels) + column]
            seaborn.lineplot(part[part["diagnostic"] == metric], x="epochs since switch", y="value",
                             hue="protocol", errorbar=SEED_BAND, marker="o", markersize=3, palette=palette,
                             hue_order=present(palette, part), ax=axis)
            axis.axvline(0, color="black", lw=0.8)
            x_labelled(axis, SWITCH_LABEL)
            axis.set_ylabel(label)
            if len(groups) > 1:
                titled(axis, fixed, 8)
            if column == len(panels) - 1:
                legend_outside(axis, title="protocol")
            elif axis.get_legend():
                axis.get_legend().remove()
    held = "" if len(groups) > 1 else f"\n{groups[0][0]}"
    titled(drawing, f"Plasticity diagnostics of the last hidden layer: warm start vs scratch{held}", 10)
    return {"plasticity_diagnostics": drawing}
