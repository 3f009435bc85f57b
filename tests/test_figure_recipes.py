"""No figure mixes recipes: every line (a seaborn call and one hue level of it) and every heatmap is drawn from
runs of one recipe (their settings but the seed and the keys drawn on x or as hue), a figure says what it holds
fixed, the transfer probe's axis names the task measured, and a single-valued integer knob gets a discrete axis.

The figures are drawn from a fabricated table where recipes share what a figure plots (tests/fabricate.py:
recipe_table): two recipes at the same depths, warm start vs scratch on two data sizes, and a transfer story.
"""

import pandas as pd
import pytest
import seaborn

import figures
from figures.style import SETTINGS, native_scale
from figures.transfer import START_KEYS
from tests.fabricate import figure_run, recipe_similarity, recipe_table, warm_start_family

# An axis that stands for settings: transfer_curve's x is where each child started (start_from_iteration, ...).
DERIVED = {"start_iteration": START_KEYS}
TELLING = ("width", "optimizer", "synthetic_train_size")  # what tells the fabricated recipes apart


@pytest.fixture(scope="module")
def metrics() -> pd.DataFrame:
    return recipe_table()


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


def mixed_recipes(data: pd.DataFrame, x, hue) -> list[str]:
    """The settings that vary within one hue level of one call (seed, x, hue and what x stands for aside)."""
    plotted = {"seed", x, hue, *DERIVED.get(x, ())}
    keys = [key for key in SETTINGS if key in data and key not in plotted]
    levels = data.groupby(hue, dropna=False) if hue in data else [(None, data)]
    return [f"{hue}={level}: {key} takes {sorted(map(str, part[key].unique()))}"
            for level, part in levels for key in keys if part[key].nunique(dropna=False) > 1]


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_no_line_of_any_figure_mixes_two_recipes(metrics, monkeypatch, name):
    spec = figures.FIGURES[name]
    calls = record_drawing(monkeypatch)
    drawings = spec.draw(metrics if spec.table == "metrics" else recipe_similarity())  # Skip fails the test
    assert drawings
    drawn = [(what, data, x, hue) for what, data, x, hue in calls if data is not None and len(data)]
    assert drawn, f"{name} drew nothing the test could read"
    for what, data, x, hue in drawn:
        missing = [key for key in TELLING if key not in data and key not in (x, hue)]
        assert not missing, f"{name}: a {what} of rows without {missing}: the recipes cannot be told apart"
        assert not mixed_recipes(data, x, hue), (name, what, mixed_recipes(data, x, hue)[:5])
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
    assert gray_drawing.axes[1].get_ylabel().startswith("brightness probe accuracy")
    assert "colour" not in gray_drawing.axes[1].get_ylabel()
    both = figures.FIGURES["learning_phases"].draw(pd.concat([grayscale, colour], ignore_index=True))
    labels = sorted(drawing.axes[1].get_ylabel() for drawing in both.values())
    assert [label.split(" probe")[0] for label in labels] == ["brightness", "colour-dominance"]
    pyplot_close({"gray": gray_drawing, **both})


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
