"""No figure mixes conditions: every line (a seaborn call and one hue level of it) and every heatmap is drawn from
runs of one condition (their settings but the seed and the keys drawn on x or as hue), a figure says what it holds
fixed, the transfer probe's axis names the task measured, and a single-valued integer knob gets a discrete axis.

The figures are drawn from a fabricated table where conditions share what a figure plots (tests/fabricate.py:
condition_table): two conditions at the same depths, warm start vs scratch on two data sizes, and a transfer story.
"""

import pandas as pd
import pytest
import seaborn

import figures
from findings.readout import readout
from figures.style import SETTINGS, native_scale
from findings.transfer import START_KEYS
from tests.fabricate import figure_run, condition_similarity, condition_table, warm_start_family

# An axis that stands for settings: transfer_curve's x is where each child started (start_from_iteration, ...).
DERIVED = {"start_iteration": START_KEYS}
TELLING = ("width", "optimizer", "synthetic_train_size")  # what tells the fabricated conditions apart


@pytest.fixture(scope="module")
def metrics() -> pd.DataFrame:
    return condition_table()


def record_drawing(monkeypatch) -> list:
    """Record (what, data, x, hue) of every seaborn line or point plot and every pivot a heatmap is made from."""
    calls = []
    for name in ("lineplot", "pointplot"):
        original = getattr(seaborn, name)

        def recorded(data=None, *arguments, original=original, name=name, **options):
            calls.append((name, data, options.get("x"), options.get("hue")))
            return original(data, *arguments, **options)

        monkeypatch.setattr(seaborn, name, recorded)
    original_pivot = pd.DataFrame.pivot_table

    def pivot(self, *arguments, **options):
        calls.append(("pivot_table", self, options.get("columns"), options.get("index")))
        return original_pivot(self, *arguments, **options)

    monkeypatch.setattr(pd.DataFrame, "pivot_table", pivot)
    return calls


def mixed_conditions(data: pd.DataFrame, x, hue) -> list[str]:
    """The settings that vary within one hue level of one call (seed, x, hue and what x stands for aside)."""
    plotted = {"seed", x, hue, *DERIVED.get(x, ())}
    keys = [key for key in SETTINGS if key in data and key not in plotted]
    levels = data.groupby(hue, dropna=False) if hue in data else [(None, data)]
    return [f"{hue}={level}: {key} takes {sorted(map(str, part[key].unique()))}"
            for level, part in levels for key in keys if part[key].nunique(dropna=False) > 1]


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_no_line_of_any_figure_mixes_two_conditions(metrics, monkeypatch, name):
    spec = figures.FIGURES[name]
    table = metrics if spec.table == "metrics" else condition_similarity()
    arguments = (table, readout(table)) if spec.readout else (table,)  # the read-out's own pivots are not drawing
    calls = record_drawing(monkeypatch)
    drawings = spec.draw(*arguments)  # Skip fails the test
    assert drawings
    drawn = [(what, data, x, hue) for what, data, x, hue in calls if data is not None and len(data)]
    assert drawn, f"{name} drew nothing the test could read"
    for what, data, x, hue in drawn:
        missing = [key for key in TELLING if key not in data and key not in (x, hue)]
        assert not missing, f"{name}: a {what} of rows without {missing}: the conditions cannot be told apart"
        assert not mixed_conditions(data, x, hue), (name, what, mixed_conditions(data, x, hue)[:5])
    pyplot_close(drawings)


def test_each_panel_says_what_it_holds_fixed(metrics):
    drawing = figures.FIGURES["ncc_by_layer"].draw(metrics)["ncc_by_layer"]
    titles = [axis.get_title().replace("\n", " ") for axis in drawing.axes if axis.get_visible() and axis.get_title()]
    assert any("width=32" in title and "optimizer=sgd" in title for title in titles), titles
    assert any("width=16" in title and "optimizer=adam" in title for title in titles), titles
    curves = figures.FIGURES["plasticity_curves"].draw(metrics)["plasticity_curves"]
    titles = [axis.get_title().replace("\n", " ") for axis in curves.axes if axis.get_visible()]
    assert sorted("synthetic_train_size=1000" in title for title in titles) == [False, True], titles
    assert all("all runs" not in title for title in titles)
    pyplot_close({"a": drawing, "b": curves})


def test_the_probe_axis_names_the_task_measured():
    from conf import Settings

    iterations = [0, 1, 2, 4, 8, 16, 32]
    grayscale = figure_run(Settings(dataset="mnist", depth=2), iterations, transfer_task="brightness")
    colour = figure_run(Settings(dataset="synthetic", depth=2), iterations)
    (gray_drawing,) = figures.FIGURES["learning_phases"].draw(grayscale).values()
    assert gray_drawing.axes[1].get_ylabel().replace("\n", " ").startswith("brightness probe accuracy")
    assert "colour" not in gray_drawing.axes[1].get_ylabel()
    (both,) = figures.FIGURES["learning_phases"].draw(pd.concat([grayscale, colour], ignore_index=True)).values()
    labels = sorted(both.axes[row * 3 + 1].get_ylabel().replace("\n", " ") for row in (0, 1))  # a row per condition
    assert [label.split(" probe")[0] for label in labels] == ["brightness", "colour-dominance"]
    pyplot_close({"gray": gray_drawing, "both": both})


def test_a_single_valued_integer_knob_gets_a_discrete_axis():
    one_depth = pd.concat(warm_start_family([0, 1, 2, 4, 8, 16, 32], [16, 17, 18, 20, 24, 32],
                                            dataset="synthetic", depth=3, width=16), ignore_index=True)
    drawing = figures.FIGURES["warm_start_gap"].draw(one_depth)["warm_start_gap"]
    axis = drawing.axes[0]
    assert axis.get_xlabel() == "depth"
    assert [label.get_text() for label in axis.get_xticklabels()] == ["3"]  # not 2.85, 2.90, ... 3.15
    low, high = axis.get_ylim()
    assert high - low < 0.5  # fitted to the data (a gap of ~0.1), not forced to 0-1
    frame = pd.DataFrame({"depth": [3, 3], "width": [16, 32], "lr": [0.1, 0.01], "noise": [0.2, 0.2]})
    assert not native_scale(frame, "depth") and not native_scale(frame, "width")  # whole numbers: counts
    assert native_scale(frame, "lr") and not native_scale(frame, "noise")  # one value: one tick
    pyplot_close({"gap": drawing})


def pyplot_close(drawings: dict) -> None:
    from matplotlib import pyplot

    for drawing in drawings.values():
        pyplot.close(drawing)


# -- read in a minute: titles inside the figure, legends off the data, compared panels on one range ------------

# Two conditions that differ in 15 settings (descriptions of ~250 characters: wider than any panel or figure), and a
# third one that is LONG_A but for its weight decay (effective depth vs weight_decay: a second panel)
LONG_A = {"dataset": "synthetic", "width": 32, "optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4,
          "batch_size": 128, "lr_schedule": "multistep", "label_noise": 0.1, "image_size": 16, "loss": "ce",
          "synthetic_train_size": 2000, "warmup_iterations": 0, "augment": False, "batch_norm": True, "lr_gamma": 0.1,
          "synthetic_classes": 10}
LONG_B = {"dataset": "synthetic", "width": 16, "optimizer": "adam", "lr": 0.001, "momentum": 0.8, "weight_decay": 1e-3,
          "batch_size": 64, "lr_schedule": "cosine", "label_noise": 0.2, "image_size": 24, "loss": "mse",
          "synthetic_train_size": 1000, "warmup_iterations": 10, "augment": True, "batch_norm": False, "lr_gamma": 0.5,
          "synthetic_classes": 5}
LONG_C = {**LONG_A, "weight_decay": 0.0}
OWN = ("ncc_by_layer", "cdnv_by_layer", "effective_depth", "collapse_heatmaps", "nc1_by_layer", "nc_over_training",
       "plasticity_diagnostics", "plasticity_curves", "warm_start_gap", "cka_layers", "cka_convergence",
       "learning_phases")
# The ranges each figure's panels share: x, y or colour across every panel; y_columns: down each column.
SHARED = {"ncc_by_layer": "xy", "cdnv_by_layer": "xy", "nc1_by_layer": "xy", "plasticity_curves": "xy",
          "effective_depth": "y", "warm_start_gap": "y", "nc_over_training": "x", "plasticity_diagnostics": "x",
          "cka_layers": "colour", "cka_convergence": "colour", "collapse_heatmaps": "", "learning_phases": ""}
SHARED_DOWN_COLUMNS = {"plasticity_diagnostics", "learning_phases"}
TOLERANCE = 1  # pixel


@pytest.fixture(scope="module")
def long_metrics() -> pd.DataFrame:
    from conf import Settings

    iterations = [0, 1, 2, 4, 8, 16, 32, 64, 128]
    frames = [figure_run(Settings(**condition, depth=depth, seed=seed), iterations, offset=offset)
              for condition, offset in ((LONG_A, 0.0), (LONG_B, -0.04), (LONG_C, 0.03)) for depth in (3, 5) for seed in (0, 1)]
    for condition in (LONG_A, LONG_B):
        frames += warm_start_family(iterations, [16, 17, 18, 20, 24, 32], **condition, depth=3)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def long_similarity() -> pd.DataFrame:
    """condition_similarity's conditions A and B relabelled as LONG_A and LONG_B (the figures group by these columns)."""
    similarity = condition_similarity()
    for condition in (LONG_A, LONG_B):
        rows = similarity["width"] == condition["width"]
        for key, value in condition.items():
            similarity.loc[rows, key] = value
    return similarity


def panels(drawing) -> list:
    return [axis for axis in drawing.axes if axis.get_visible() and axis.get_label() != "<colorbar>"]


def cut_off(drawing) -> list[str]:
    """The texts (suptitle, panel titles, axis labels, legends) that reach past the figure's edges."""
    drawing.canvas.draw()
    renderer, edges = drawing.canvas.get_renderer(), drawing.bbox
    texts = [drawing._suptitle] if drawing._suptitle else []
    for axis in panels(drawing):
        texts += [axis.title, axis._left_title, axis._right_title, axis.xaxis.label, axis.yaxis.label]
        texts += [axis.get_legend()] if axis.get_legend() else []
    texts += drawing.legends
    return [repr(getattr(text, "get_text", lambda: "legend")())[:60] + f" {extent.bounds}"
            for text in texts if text.get_visible() and (extent := text.get_window_extent(renderer)).width
            and (extent.x0 < edges.x0 - TOLERANCE or extent.x1 > edges.x1 + TOLERANCE
                 or extent.y0 < edges.y0 - TOLERANCE or extent.y1 > edges.y1 + TOLERANCE)]


def over_the_data(drawing) -> list[str]:
    """The panels whose legend overlaps their own data area."""
    renderer = drawing.canvas.get_renderer()
    return [axis.get_title()[:40] for axis in panels(drawing) if axis.get_legend()
            and axis.get_legend().get_window_extent(renderer).overlaps(axis.get_window_extent(renderer))]


def ranges(axes, which: str) -> set:
    read = {"x": lambda axis: axis.get_xlim(), "y": lambda axis: axis.get_ylim(),
            "colour": lambda axis: axis.collections[0].get_clim()}[which]
    return {tuple(round(float(value), 9) for value in read(axis)) for axis in axes}


@pytest.mark.parametrize("name", OWN)
def test_titles_fit_legends_sit_off_the_data_and_compared_panels_share_a_range(long_metrics, long_similarity, name):
    spec = figures.FIGURES[name]
    drawings = spec.draw(long_metrics if spec.table == "metrics" else long_similarity)
    for stem, drawing in drawings.items():
        assert not cut_off(drawing), (stem, cut_off(drawing))
        assert not over_the_data(drawing), (stem, over_the_data(drawing))
        axes = panels(drawing)
        for which in ("x", "y", "colour"):
            if which in SHARED[name]:
                assert len(axes) > 1 and len(ranges(axes, which)) == 1, (stem, which, ranges(axes, which))
        columns = axes[0].get_subplotspec().get_gridspec().ncols
        if name in SHARED_DOWN_COLUMNS:
            assert all(len(ranges(axes[column::columns], "y")) == 1 for column in range(columns)), stem
    pyplot_close(drawings)


def test_a_title_wraps_to_the_width_it_sits_over():
    from figures.style import fitted, new_figure

    text = ", ".join(f"key{index}=value{index}" for index in range(30))
    narrow, (axis,) = new_figure(1, width=3.0)
    wide, axes = new_figure(1, width=9.0)
    lines = {drawing: fitted(text, drawing, 10).split("\n") for drawing in (narrow, wide)}
    assert len(lines[narrow]) > 2 * len(lines[wide]) > 2
    assert max(map(len, fitted(text, axis, 8).split("\n"))) < max(map(len, fitted(text, narrow, 8).split("\n")))
    assert fitted("first\nsecond", wide, 10) == "first\nsecond"  # its own line breaks kept
    pyplot_close({"narrow": narrow, "wide": wide})
