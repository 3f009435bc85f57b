"""python -m pytest tests/test_readout.py -q — the read-out's truth harness (findings/readout.py): tables where
the truth is planted (an effect of three noise standard deviations, or none), several seeds, realistic noise;
how often it states a direction that is not there, and how often it finds one that is."""

from __future__ import annotations

import numpy as np
import pandas as pd

from conf import Settings
from findings import noise
from findings.readout import readout
from tests import fabricate

GRIDS = 200  # conditions per harness table: each condition is one grid with its own seeds
SEEDS = 6
# The noise the verdict reads: the seed-to-seed standard deviation of the compared difference (2 points). Each of
# the two accuracies compared carries SIGMA / sqrt(2) of its own, at every checkpoint.
SIGMA = 0.02
RUN_NOISE = SIGMA / np.sqrt(2)
EXAMPLES = 10_000  # test examples: the resolution, three of them, is 0.03 points, far below the noise
DIRECTIONS = (noise.HIGHER, noise.LOWER)


def read_out(grid, *arguments) -> pd.DataFrame:
    """The read-out's table of the harness table `grid(*arguments)`."""
    return readout(grid(*arguments)).table


def in_parallel(*calls: tuple) -> list:
    """[function(*arguments) for (function, *arguments) in calls]: the last here, each other one in a process forked
    from this one, at once (the two cores at work on one test; each call a pure function of its arguments, seeded:
    the same tables as one after another)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(len(calls) - 1, mp_context=multiprocessing.get_context("fork")) as pool:
        others = [pool.submit(*call) for call in calls[:-1]]
        here = calls[-1][0](*calls[-1][1:])
        return [other.result() for other in others] + [here]


def stated(table: pd.DataFrame, question: str, grids: int = GRIDS) -> float:
    """The share of the question's rows with a direction."""
    rows = table[table["question"] == question]
    assert len(rows) == grids, (question, len(rows))
    return float(rows["verdict"].isin(DIRECTIONS).mean())


def phase_grid(effect: float, seed: int) -> pd.DataFrame:
    """GRIDS conditions (lr tells them apart) of SEEDS seeds each: a probe flat at 0.7 with RUN_NOISE per checkpoint,
    plus a peak of `effect` at iteration 16 that falls back by the end (0: no peak, no stop to advise)."""
    rng = np.random.default_rng(seed)
    shape = np.array([0, 0, 0, 0.3, 0.7, 1.0, 0.6, 0.2, 0.0]) * effect
    runs = [(Settings(lr=round(0.01 + 0.0001 * grid, 6), seed=run_seed), fabricate.LOG_ITERATIONS,
             fabricate.phase_curves(list(0.7 + shape + rng.normal(0, RUN_NOISE, len(shape)))), 1, "")
            for grid in range(GRIDS) for run_seed in range(SEEDS)]
    return fabricate.curves_table(runs, EXAMPLES)


def peaks(table: pd.DataFrame) -> tuple[float, float]:
    """(the share of conditions whose seed-mean curve shows a peak by the τ rule alone, the share whose peak the
    seeds confirm: its rise and fall beyond their noise, findings/learning.py)."""
    rows = table[table["question"] == "stop_pretraining"]
    shown = rows["checkpoint"].notna()
    return float(shown.mean()), float((shown & ~rows["statement"].str.startswith("no peak beyond noise")).mean())


def test_a_flat_probe_gets_no_stop_advice_and_a_planted_peak_does():
    null, planted = in_parallel((read_out, phase_grid, 0.0, 1), (read_out, phase_grid, 3 * SIGMA, 2))
    false, found = stated(null, "stop_pretraining"), stated(planted, "stop_pretraining")
    print(f"stop_pretraining: direction stated in {false:.1%} of null grids, {found:.1%} of 3-sigma grids")
    (by_rule, confirmed), (_, planted_confirmed) = peaks(null), peaks(planted)
    print(f"a peak on flat probes: {by_rule:.1%} by the τ rule on the mean curve, {confirmed:.1%} confirmed by the "
          f"seeds; planted peaks confirmed: {planted_confirmed:.1%}")
    assert false <= 0.05 and found >= 0.90 and confirmed <= 0.05 and planted_confirmed >= 0.90


def grid_lr(grid: int) -> float:
    """The setting that tells a harness table's conditions apart (each condition one grid)."""
    return round(0.01 + 0.0001 * grid, 6)


def final_curve(value: float, iterations=(16, 32)) -> dict:
    """A child's classifier test accuracy: any start, `value` at its last checkpoint."""
    return {("classifier_accuracy", "test", "logits", 3): [0.1, value]}


def warm_start_grid(gap: float, recovered: float, seed: int, grids: int = GRIDS) -> pd.DataFrame:
    """GRIDS conditions of SEEDS seeds: scratch ends at 0.8, the plain warm start `gap` below it, the reset-2 child
    `recovered` above the plain warm start, each with RUN_NOISE of its own."""
    rng = np.random.default_rng(seed)
    runs = []
    for grid in range(grids):
        for run_seed in range(SEEDS):
            base = dict(lr=grid_lr(grid), seed=run_seed, epochs=4)
            warm = dict(base, pretrain_fraction=0.5, pretrain_epochs=4)
            for settings, value in ((Settings(**base), 0.8), (Settings(**warm), 0.8 - gap),
                                    (Settings(**warm, reset_last=2), 0.8 - gap + recovered)):
                runs.append((settings, (16, 32), final_curve(value + rng.normal(0, RUN_NOISE)), 2 if settings.epochs else 1,
                             "parent" if settings.pretrain_fraction else ""))
    return fabricate.curves_table(runs, EXAMPLES)


def test_warm_start_gaps_and_interventions_are_stated_only_beyond_noise():
    null, planted = in_parallel((read_out, warm_start_grid, 0.0, 0.0, 3, 2 * GRIDS),  # the rate near its limit: more
                                (read_out, warm_start_grid, 3 * SIGMA, 3 * SIGMA, 4))  # grids; seeds 3 and 4
    for question in ("warm_start_gap", "intervention"):
        false, found = stated(null, question, 2 * GRIDS), stated(planted, question)
        print(f"{question}: direction stated in {false:.1%} of null grids, {found:.1%} of 3-sigma grids")
        assert false <= 0.05 and found >= 0.90
    gaps = planted[planted["question"] == "warm_start_gap"]
    assert (gaps.loc[gaps["verdict"] != noise.NO_DIFFERENCE, "verdict"] == noise.LOWER).all()  # never the wrong sign


PEAKED = [0.70, 0.70, 0.71, 0.74, 0.78, 0.82, 0.78, 0.74, 0.72]  # a probe that peaks at 16, well beyond its noise


def transfer_grid(helps: float, seed: int, grids: int = GRIDS, starts=(0, 16, 128)) -> pd.DataFrame:
    """GRIDS parent conditions (MNIST, SEEDS seeds, their probe peaking at 16) and their fine-tuned Fashion-MNIST
    children from `starts`; the children end at 0.8 with RUN_NOISE, those started at 16 `helps` higher."""
    from conf.plasticity import parent_settings

    rng = np.random.default_rng(seed)
    runs = []
    for grid in range(grids):
        for run_seed in range(SEEDS):
            for start in starts:
                child = Settings(dataset="fashionmnist", pretrain_dataset="mnist", pretrain_epochs=16, epochs=2,
                                 lr=grid_lr(grid), seed=run_seed, start_from_iteration=str(start))
                parent = parent_settings(child)
                value = 0.8 + helps * (start == 16) + rng.normal(0, RUN_NOISE)
                runs.append((child, (start, start + 16), final_curve(value), 2, parent.run_id))
            probe = list(np.array(PEAKED) + rng.normal(0, 0.002, len(PEAKED)))
            runs.append((parent, fabricate.LOG_ITERATIONS, fabricate.phase_curves(probe), 1, ""))
    return fabricate.curves_table(runs, EXAMPLES)


def test_stopping_early_is_said_to_help_only_beyond_noise():
    null, planted = in_parallel((read_out, transfer_grid, 0.0, 5), (read_out, transfer_grid, 3 * SIGMA, 6))
    false, found = stated(null, "transfer_start"), stated(planted, "transfer_start")
    print(f"transfer_start: direction stated in {false:.1%} of null grids, {found:.1%} of 3-sigma grids")
    assert false <= 0.05 and found >= 0.90
    rows = null[null["question"] == "transfer_start"]
    assert (rows.loc[rows["verdict"] == noise.NO_DIFFERENCE, "statement"].str.startswith(
        "the start does not matter within noise")).all()
    helped = planted[(planted["question"] == "transfer_start") & (planted["verdict"] == noise.HIGHER)]
    assert helped["statement"].str.startswith("stopping early helps (by +").all()


def depth_grid(effect: float, seed: int) -> pd.DataFrame:
    """GRIDS families (lr) of two widths, SEEDS seeds each, 8 measured layers: the paper's effective depth a whole
    layer near 3 (noise RUN_NOISE_DEPTH before rounding), `effect` layers deeper at width 32."""
    rng = np.random.default_rng(seed)
    runs = []
    for grid in range(GRIDS):
        for width in (16, 32):
            for run_seed in range(SEEDS):
                depth = int(np.clip(np.rint(3 + effect * (width == 32) + rng.normal(0, DEPTH_NOISE)), 1, 6))
                ncc = [0.3 + 0.1 * index if index < depth else 1.0 for index in range(8)]
                runs.append((Settings(lr=grid_lr(grid), width=width, seed=run_seed), (128,),
                             fabricate.depth_curves(ncc, float(depth)), 1, ""))
    return fabricate.curves_table(runs, EXAMPLES)


DEPTH_NOISE = 1 / np.sqrt(2)  # layers: the difference of two runs' depths has a standard deviation of one layer


def test_a_depth_trend_is_stated_only_beyond_noise():
    null, planted = in_parallel((read_out, depth_grid, 0.0, 7), (read_out, depth_grid, 3.0, 8))
    along = {name: table[table["key"] == "width"] for name, table in (("null", null), ("planted", planted))}
    false, found = stated(along["null"], "effective_depth_trend"), stated(along["planted"], "effective_depth_trend")
    print(f"effective_depth_trend: direction stated in {false:.1%} of null grids, {found:.1%} of 3-sigma grids")
    assert false <= 0.05 and found >= 0.90
    assert (along["planted"]["verdict"] != noise.LOWER).all()


# ---- each defect the read-out had, on a table made to show it -------------------------------------------------

def depth_table(arms: dict, seeds=(0, 1, 2)) -> pd.DataFrame:
    """Runs of each settings dict in `arms` (-> NCC train accuracy per layer of 8, the paper's depth), per seed."""
    runs = [(Settings(**settings, seed=seed), (128,), fabricate.depth_curves(ncc, literal), 1, "")
            for settings, (ncc, literal) in arms for seed in seeds]
    return fabricate.curves_table(runs, EXAMPLES)


COLLAPSED = ([0.3, 0.5, 0.995, 1.0, 1.0, 1.0, 1.0, 1.0], 2.0)  # the paper's depth: block01 (index 2)
NOISY = ([0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.975, 0.96], float("nan"))  # label noise: no layer within ε of 100 %
AT_OUTPUT = ([0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0], 7.0)  # only the logits reach it
CHANCE = ([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], float("nan"))  # an untrained net (the relative rule said "input")


def rows_of(table: pd.DataFrame, question: str) -> pd.DataFrame:
    return table.table[table.table["question"] == question]


def test_runs_that_never_collapse_have_no_depth_and_no_trend():
    found = readout(depth_table([({"label_noise": 0.0}, NOISY), ({"label_noise": 0.2}, NOISY)]))
    depth = rows_of(found, "effective_depth")
    assert (depth["verdict"] == "no intermediate collapse").all() and depth["estimate"].isna().all()
    assert depth["statement"].str.contains("best NCC train accuracy 0.975, at block05").all()
    (trend,) = rows_of(found, "effective_depth_trend").itertuples()
    assert trend.verdict == noise.UNDEFINED and "rises" not in trend.statement and "no trend with label_noise" in trend.statement


def test_the_papers_depth_at_the_output_layer_is_no_intermediate_collapse_and_chance_is_none():
    found = readout(depth_table([({"depth": 6}, AT_OUTPUT), ({"depth": 7}, CHANCE), ({"depth": 8}, COLLAPSED)]))
    words = rows_of(found, "effective_depth").set_index("condition")
    assert words.loc["depth=6", "verdict"] == "no intermediate collapse" and "output layer (logits)" in words.loc["depth=6", "statement"]
    assert "defined" not in words.loc["depth=6", "statement"]
    assert words.loc["depth=7", "verdict"] == "no intermediate collapse" and "no layer reaches" in words.loc["depth=7", "statement"]
    assert words.loc["depth=8", "verdict"] == "intermediate collapse" and words.loc["depth=8", "estimate"] == 2.0
    assert (rows_of(found, "effective_depth_trend")["verdict"] == noise.UNDEFINED).all()  # not every arm collapses


def test_two_architectures_are_listed_side_by_side_never_a_trend():
    deeper = ([0.3, 0.5, 0.7, 0.99, 1.0, 1.0, 1.0, 1.0], 3.0)
    found = readout(depth_table([({"arch": "mlp"}, COLLAPSED), ({"arch": "convnet"}, deeper)]))
    (trend,) = rows_of(found, "effective_depth_trend").itertuples()
    assert trend.verdict == "side by side" and "rises" not in trend.statement and "arch=mlp: 2" in trend.statement


def warm_pairs(gaps: list[float], examples: int) -> pd.DataFrame:
    """Scratch at 0.8 and a warm start `gap` below it, one pair per seed, on `examples` test images."""
    runs = []
    for seed, gap in enumerate(gaps):
        base = dict(seed=seed, epochs=4)
        runs += [(Settings(**base), (16, 32), final_curve(0.8), 1, ""),
                 (Settings(**base, pretrain_fraction=0.5, pretrain_epochs=4), (16, 32), final_curve(0.8 - gap), 2, "p")]
    return fabricate.curves_table(runs, examples)


def test_a_gap_of_a_few_test_images_is_no_measurable_difference_and_one_seed_has_no_direction():
    # the 0.125-point gap on 2,000 test images is 2.5 images: below 3, however consistent the seeds
    (tiny,) = rows_of(readout(warm_pairs([0.00125] * 3, 2000)), "warm_start_gap").itertuples()
    assert tiny.verdict == noise.NO_DIFFERENCE and tiny.statement.startswith("no measurable difference")
    (clear,) = rows_of(readout(warm_pairs([0.05, 0.06, 0.055], 2000)), "warm_start_gap").itertuples()
    assert clear.verdict == noise.LOWER and clear.statement.startswith("warm start ends worse than training from scratch")
    (one,) = rows_of(readout(warm_pairs([0.2], 2000)), "warm_start_gap").itertuples()
    assert one.verdict == noise.ONE_SEED and "1 seed: no direction stated" in one.statement and "worse" not in one.statement
    alone = warm_pairs([0.05, 0.06], 2000)
    (alone,) = rows_of(readout(alone[alone["pretrain_fraction"] > 0]), "warm_start_gap").itertuples()
    assert alone.verdict == noise.UNDEFINED and "no from-scratch twin of the same seed" in alone.statement


def test_an_early_rise_is_found_and_the_stop_is_a_checkpoint_every_table_shares(tmp_path):
    import figures

    early = [0.705, 0.771, 0.765, 0.75, 0.74, 0.73, 0.72, 0.71, 0.70]  # risen by iteration 1, then falls
    rng = np.random.default_rng(9)
    runs = [(Settings(seed=seed), fabricate.LOG_ITERATIONS,
             fabricate.phase_curves(list(np.array(early) + rng.normal(0, 0.002, 9))), 1, "") for seed in range(3)]
    metrics = fabricate.curves_table(runs, EXAMPLES)
    found = readout(metrics)
    (stop,) = rows_of(found, "stop_pretraining").itertuples()
    assert stop.verdict == noise.HIGHER and stop.checkpoint in (1, 2), stop.statement
    assert found.phases.loc[found.phases["layer"] == "block01", "transfer_peak"].item() == stop.checkpoint
    drawn, _ = figures.draw_all(metrics, tmp_path, names=["learning_phases"], readout=found)
    assert drawn  # the figure's stop line is the read-out's checkpoint, a checkpoint the runs have
    lines = [line for drawing in [figures.FIGURES["learning_phases"].draw(metrics, found)["learning_phases"]]
             for axis in drawing.axes for line in axis.get_lines() if line.get_label().startswith("probe peak")]
    assert lines and {line.get_xdata()[0] for line in lines} == {stop.checkpoint} <= set(fabricate.LOG_ITERATIONS)


def test_transfer_names_no_pre_training_and_a_one_image_edge_is_no_difference():
    table = transfer_grid(0.0, seed=10, grids=1)  # a fresh table, then one image's edge planted exactly
    children = table["pretrain_dataset"] == "mnist"
    start = table.groupby("run_id")["iteration"].transform("min")
    table.loc[children & (table["iteration"] > start), "value"] = 0.8 + np.where(
        start[children & (table["iteration"] > start)] == 16, 1 / EXAMPLES, 0.0) + np.where(
        start[children & (table["iteration"] > start)] == 0, 0.01, 0.0)
    (row,) = rows_of(readout(table), "transfer_start").itertuples()
    assert row.verdict == noise.NO_DIFFERENCE and row.statement.startswith("the start does not matter within noise")
    assert "best start iteration 0 (no pre-training)" in row.statement and row.checkpoint == 16


def warm_family() -> pd.DataFrame:
    """Two seeds of scratch, its stage-1 parent (trained on half the classes) and a warm-started child, with the
    curves of every story: the child's are the continuation of its parent's."""
    from conf.plasticity import parent_settings

    runs = []
    for seed in (0, 1):
        child = Settings(seed=seed, epochs=4, pretrain_fraction=0.5, pretrain_subset="classes", pretrain_epochs=4)
        parent = parent_settings(child)
        curves = {**fabricate.phase_curves(PEAKED), **fabricate.depth_curves(COLLAPSED[0], COLLAPSED[1], 9)}
        runs += [(Settings(seed=seed, epochs=4), fabricate.LOG_ITERATIONS, curves, 1, ""),
                 (parent, fabricate.LOG_ITERATIONS, curves, 1, ""),
                 (child, [128 + step for step in fabricate.LOG_ITERATIONS], curves, 2, parent.run_id)]
    return fabricate.curves_table(runs, EXAMPLES)


def test_children_have_no_phases_anywhere_and_a_parents_subset_is_said(tmp_path):
    import figures

    metrics = warm_family()
    children = set(metrics.loc[metrics["parent_run_id"] != "", "run_id"])
    found = readout(metrics)
    listed = {run for runs in found.phases["runs"] for run in runs.split(", ")}
    assert listed and not listed & children and not set(found.labels) & children
    assert not any(set(runs.split()) & children for runs in rows_of(found, "stop_pretraining")["runs"])
    parent = rows_of(found, "effective_depth")
    parent = parent[parent["scope"] != ""]
    assert len(parent) == 1 and "trains on a subset (pretrain_fraction=0.5 of the classes)" in parent["scope"].item()
    (drawing,) = figures.FIGURES["learning_phases"].draw(metrics, found).values()
    assert len(drawing.axes) == 2 * 3  # a row for scratch and one for the stage-1 parent; none for the child
    only_children = metrics[metrics["run_id"].isin(children)]
    _, skipped = figures.draw_all(only_children, tmp_path, names=["learning_phases", "ncc_by_layer"])
    assert "is of a child run" in skipped["learning_phases"] and "staged run" in skipped["ncc_by_layer"]


def test_the_transfer_figure_marks_the_parent_conditions_stop_as_the_table_states_it():
    import figures

    metrics = transfer_grid(3 * SIGMA, seed=11, grids=1)
    found = readout(metrics)
    (stop,) = rows_of(found, "stop_pretraining").itertuples()
    (drawing,) = figures.FIGURES["transfer_curve"].draw(metrics, found).values()
    marked = {line.get_label(): line.get_xdata()[0] for line in drawing.axes[0].get_lines()
              if line.get_label().startswith("probe peak")}
    assert list(marked.values()) == [stop.checkpoint] == [16]
    assert drawing.axes[0].get_ylabel() == "children's test accuracy (fashionmnist)"


def test_a_filter_that_keeps_the_children_reads_their_parents_too():
    from figures.publish import with_ancestors

    every = transfer_grid(0.0, seed=12, grids=1)
    children = every[every["dataset"] == "fashionmnist"]  # what dataset=fashionmnist on the command line keeps
    kept = with_ancestors(children, every)
    assert set(kept["run_id"]) == set(every["run_id"]) and len(kept) == len(every)
    (row,) = rows_of(readout(kept), "transfer_start").itertuples()
    assert row.verdict != noise.UNDEFINED  # the parent's stop is read: the question is answered


def test_a_probe_that_peaks_after_the_classifiers_best_gets_no_advice():
    late = [0.70, 0.70, 0.71, 0.72, 0.76, 0.81, 0.83, 0.80, 0.72]  # peaks at 32, falls by 64 and 128
    best_early = [0.1, 0.3, 0.5, 0.7, 0.85, 0.9, 0.6, 0.5, 0.5]  # the classifier is best at 16
    rng = np.random.default_rng(13)
    runs = [(Settings(seed=seed), fabricate.LOG_ITERATIONS, fabricate.phase_curves(
        list(np.array(late) + rng.normal(0, 0.002, 9)), classifier=best_early), 1, "") for seed in range(3)]
    (stop,) = rows_of(readout(fabricate.curves_table(runs, EXAMPLES)), "stop_pretraining").itertuples()
    assert (stop.checkpoint, stop.compared_to, stop.verdict) == (32, 16, noise.UNDEFINED)
    assert "not before the classifier's best (iteration 16)" in stop.statement
