"""The neural-collapse and plasticity-diagnostic figures (figures/collapse_nc.py), drawn from a small
fabricated metrics table: each renders to PNG, and each says why when the table cannot feed it."""

import math

import pandas as pd
import pytest

from conf import Settings
from conf.plasticity import parent_settings
from tests.fabricate import run_frame

ITERATIONS = [0, 1, 2, 4, 8, 16, 32, 64]
NEW_FIGURES = ("nc1_by_layer", "nc_over_training", "plasticity_diagnostics")


def layer_names(depth: int) -> list[str]:
    return ["input", *(f"block{index:02d}" for index in range(depth)), "logits"]


def layer_values(time: float, share: float, hidden: bool) -> dict[str, float]:
    """Made-up values with the papers' shapes: collapse deepens with the layer and with training."""
    values = {"nc1": 10 ** (1 - 3 * time * share), "nc2_equinorm": 0.5 * (1 - 0.8 * time * share),
              "nc2_equiangularity": 0.3 * (1 - 0.7 * time * share), "nc2_etf_distance": 1 - 0.6 * time * share,
              "nc4_ncc_agreement": 0.2 + 0.8 * time * share, "effective_rank": 30 - 20 * time * share,
              "srank": 40 - 25 * time * share}
    if hidden:
        values |= {"dormant_fraction": 0.05 + 0.3 * time * share, "feature_norm": 1 + 4 * time * share}
    return values


def fabricated_rows(settings: Settings, iterations, parent: str = "", stage: int = 1) -> pd.DataFrame:
    """One run's rows of the new metrics (nc1 train only; the rest both splits), plus classifier accuracy."""
    rows, layers = [], layer_names(settings.depth)
    for iteration in iterations:
        time = math.log2(iteration + 1) / 7
        for index, layer in enumerate(layers):
            hidden = layer not in ("input", "logits")
            for metric, value in layer_values(time, index / (len(layers) - 1), hidden).items():
                for split in ("train",) if metric == "nc1" else ("train", "test"):
                    rows.append({"layer": layer, "layer_index": index, "metric": metric, "split": split,
                                 "value": value, "iteration": iteration})
        rows.append({"layer": "logits", "layer_index": len(layers) - 1, "metric": "classifier_accuracy",
                     "split": "test", "value": min(1.0, 0.1 + time), "iteration": iteration})
    return run_frame(rows, settings, stage, parent)


@pytest.fixture(scope="module")
def metrics() -> pd.DataFrame:
    """Two depths x two seeds from scratch; scratch, warm start and reset-2 (with their stage-1 parent) per seed."""
    frames = [fabricated_rows(Settings(depth=depth, seed=seed), ITERATIONS) for depth in (2, 4) for seed in (0, 1)]
    for seed in (0, 1):
        base = dict(depth=3, width=16, seed=seed, pretrain_epochs=4, epochs=4)
        frames.append(fabricated_rows(Settings(depth=3, width=16, seed=seed, epochs=4), ITERATIONS))
        for reset in (0, 2):
            child = Settings(**base, pretrain_fraction=0.5, reset_last=reset)
            parent = parent_settings(child)
            if reset == 0:
                frames.append(fabricated_rows(parent, ITERATIONS[:6]))
            frames.append(fabricated_rows(child, [16 + step for step in (0, 1, 2, 4, 8, 16)], parent.run_id, 2))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("name", NEW_FIGURES)
def test_each_new_figure_renders_to_png(metrics, tmp_path, name):
    import figures
    from matplotlib.figure import Figure

    drawings = figures.FIGURES[name].draw(metrics)
    assert drawings and all(isinstance(drawing, Figure) for drawing in drawings.values())
    drawn, skipped = figures.draw_all(metrics, tmp_path, names=[name])
    assert not skipped, skipped
    assert all(path.read_bytes()[:8].startswith(b"\x89PNG") for path in drawn[name] if path.suffix == ".png")
    assert (tmp_path / f"{name}.png").exists()


def test_figures_read_the_last_hidden_layer_and_one_line_per_depth(metrics):
    import figures
    from figures.collapse_nc import last_hidden_layer

    last = last_hidden_layer(metrics[metrics["metric"] == "nc1"])
    assert set(last.groupby("depth")["layer"].unique().map(tuple)) == {("block01",), ("block02",), ("block03",)}
    by_layer = figures.FIGURES["nc1_by_layer"].draw(metrics[metrics["width"] == 32])["nc1_by_layer"]
    axis = by_layer.axes[0]
    assert axis.get_yscale() == "log" and axis.get_title() == ""  # one panel: no title repeating the suptitle
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["2", "4"]
    training = figures.FIGURES["nc_over_training"].draw(metrics)["nc_over_training"]
    assert [axis.get_yscale() for axis in training.axes[:3]] == ["log", "linear", "linear"]
    assert training.axes[0].get_xscale() == "symlog"
    diagnostics = figures.FIGURES["plasticity_diagnostics"].draw(metrics)["plasticity_diagnostics"]
    legend = [text.get_text() for text in diagnostics.axes[1].get_legend().get_texts()]
    assert sorted(legend) == ["scratch", "warm start", "warm start, reset last 2"]
    assert min(diagnostics.axes[0].get_xlim()) < 0  # stage 1 at negative epochs


@pytest.mark.parametrize("name, dropped, reason", [
    ("nc1_by_layer", ["nc1"], "no nc1"),
    ("nc_over_training", ["nc1", "nc2_equinorm", "nc2_equiangularity"], "no nc1, nc2_equinorm"),
    ("plasticity_diagnostics", ["dormant_fraction", "effective_rank"], "no dormant_fraction, effective_rank"),
])
def test_each_new_figure_skips_with_a_reason_when_its_metrics_are_absent(metrics, tmp_path, name, dropped, reason):
    import figures

    _, skipped = figures.draw_all(metrics[~metrics["metric"].isin(dropped)], tmp_path, names=[name])
    assert reason in skipped[name]


def test_plasticity_diagnostics_skips_without_warm_started_runs(metrics, tmp_path):
    import figures

    _, skipped = figures.draw_all(metrics[metrics["pretrain_fraction"] == 0], tmp_path,
                                  names=["plasticity_diagnostics"])
    assert "no warm-started runs" in skipped["plasticity_diagnostics"]
