"""One small real analysis shared by the report tests: five tiny runs of the `default` experiment that differ in
sixteen settings (two train.py calls, one of them a sweep), measured and drawn once per test session.

    experiment = analysed_grid(tmp_path_factory)   # outputs/default with runs, metrics, figures/ and report.html

Sixteen varying settings and full run ids make the runs table as wide as a real grid's, so the browser check
(tests/test_report_browser.py) can fail on it; tests that change the folder work on a copy (copy_experiment).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPOSITORY, tiny_words

QUICK = ["probe_dimensions=32", "log_level=WARNING"]
SMALL = ["image_size=8", "depth=1", "epochs=2", "synthetic_train_size=128"]
# Two calls: the second sweeps lr and seed, and differs from the first in fourteen more settings (a grid's
# table as wide as the demo's, whose three grids sweep different keys).
FIRST = [*SMALL, "width=4", "lr=0.05", "label_noise=0", "seed=0", "batch_size=32", "weight_decay=0",
         "momentum=0.9", "lr_milestones=[1]"]
SECOND = [*SMALL, "width=6", "lr=0.1,0.02", "label_noise=0.25", "seed=1,2", "batch_size=16", "weight_decay=0.0001",
          "momentum=0.5", "synthetic_test_size=48", "optimizer=adam", "lr_schedule=cosine", "data_seed=3",
          "synthetic_classes=4", "augment=true", "warmup_iterations=2", "checkpoint_extra=[3,5]"]


def analysed_grid(tmp_path_factory) -> Path:
    """The experiment folder of five measured and drawn runs (`default`, as a command-line grid writes it),
    built once per session: in the session's base folder, whichever test module asks first (a module that
    imports this one holds a second copy of it, so a cache in this module would not be shared). Trained and
    measured by train.py's and analysis.py's main() in this process: no interpreter to start and no torch to
    import for each call (seconds each on a busy 2-CPU machine); the command lines are tested elsewhere."""
    import analysis
    import train

    out_dir = tmp_path_factory.getbasetemp() / "report_grid"
    experiment = out_dir / "default"
    if (out_dir / "complete").exists():
        return experiment
    shutil.rmtree(out_dir, ignore_errors=True)  # a build that failed half way
    for words in (FIRST, SECOND):
        assert train.main(tiny_words(out_dir, *words)) == 0
    assert analysis.main([f"out_dir={out_dir}", *QUICK]) == 0
    (out_dir / "complete").touch()
    return experiment


@pytest.fixture(scope="session")
def grid_experiment(tmp_path_factory) -> Path:
    return analysed_grid(tmp_path_factory)


def copy_experiment(experiment: Path, destination: Path) -> Path:
    """A copy of the experiment folder (relative links in the report keep working) for a test to change."""
    return Path(shutil.copytree(experiment, destination / experiment.name))


def runs_of(*rows: dict):
    """A run table as figures/publish.py's run_table makes it, from settings (and optional state and reason)."""
    import pandas as pd

    from conf import Settings

    records = []
    for row in rows:
        state, reason = row.pop("state", "done"), row.pop("reason", "")
        settings = Settings(**row)
        records.append({"run_id": settings.run_id, "kind": "scratch", "state": state, "iteration": "8/8", "parent": "",
                        "reason": reason, **settings.to_record()})
    return pd.DataFrame(records)


def test_the_header_says_what_ran():
    """A named experiment's description only when the runs are its own; a command-line grid is described."""
    from figures.publish import describe_grid

    assert describe_grid("default", runs_of({})) == "one run of the defaults (what a plain `python train.py` runs)"
    grid = runs_of(*({"depth": depth, "label_noise": noise, "seed": seed}
                     for depth in (2, 3) for noise in (0.0, 0.2) for seed in (0, 1, 2)))
    assert describe_grid("default", grid) == "a grid of 12 runs over label_noise, depth (seeds 0–2)"
    assert describe_grid("default", runs_of({"depth": 3})) == "one run (depth=3)"
    assert describe_grid("learnphase", grid).startswith("a grid of 12 runs over label_noise, depth (seeds 0–2); not the "
                                                        "grid of experiment learnphase (LearnPhase")
    from conf import parse_arguments

    learnphase = runs_of(*(dict(vars_of(settings)) for settings in parse_arguments(["experiment=learnphase"]).grid))
    assert describe_grid("learnphase", learnphase).startswith("LearnPhase (AAAI 2024)")
    assert "Swept here" not in describe_grid("learnphase", learnphase)  # one configuration
    # the demo's description names depths and label noise; two of its runs sweep depth alone, and the header says so
    demo = [dict(vars_of(settings)) for settings in parse_arguments(["experiment=demo"]).grid]
    two = runs_of(*[run for run in demo if run["label_noise"] == 0.0 and run["pretrain_fraction"] == 0][:2])
    header = describe_grid("demo", two)
    assert header.endswith("Swept here: depth (2, 4).") and "label_noise (" not in header, header


def vars_of(settings) -> dict:
    import dataclasses

    return {field.name: getattr(settings, field.name) for field in dataclasses.fields(settings)}


def test_the_real_grid_is_described_and_its_table_shows_short_ids_and_what_varies(grid_experiment):
    page = (grid_experiment / "report.html").read_text()
    assert "one run of the defaults" not in page
    assert "<p class='description'>a grid of 5 runs over " in page and "(seeds 0–2)</p>" in page
    runs = page[page.index("<table class='runs'>"):]
    runs = runs[:runs.index("</table>")]
    for folder in (grid_experiment / "runs").iterdir():  # each id shortened, whole on hover
        prefix, _, digest = folder.name.rpartition("-")
        assert f"title='{folder.name}'>{prefix}-{digest[:4]}…</span>" in runs
    assert "<th>lr</th>" in runs and "<th>image_<wbr>size</th>" not in runs  # image_size is the same for all
    assert page.index("<h2>Findings</h2>") < page.index("<h2>Figures</h2>") < page.index("<h2>Runs")


def test_findings_list_the_sentences_and_the_runs_that_failed_diverged_or_were_skipped():
    from figures.report import findings_section, troubled_runs

    runs = runs_of({"seed": 0, "state": "diverged", "reason": "non-finite training loss at iteration 12"},
                   {"seed": 1, "state": "failed", "reason": "CUDA out of memory"}, {"seed": 2}, {"seed": 3})
    runs.loc[3, ["run_id", "state", "reason"]] = ["broken-folder", "skipped", "settings unusable: not JSON"]
    troubled = troubled_runs(runs, measured={runs["run_id"][0]})
    assert [(state, reason) for _, state, reason in troubled] == [
        ("diverged", "non-finite training loss at iteration 12"), ("failed", "CUDA out of memory"),
        ("skipped", "no checkpoint measured yet"), ("skipped", "settings unusable: not JSON")]
    assert troubled_runs(runs[2:3], measured=set(), filter_words="seed=0")[0][2] == "left out by the command line's seed=0"
    import pandas as pd

    from findings import noise
    from findings.rows import COLUMNS, INTERMEDIATE, finding

    long = "depth=4, label_noise=0.2, width=64, optimizer=sgd"  # longer than a table cell's label: R1 and a legend
    table = pd.DataFrame([
        finding("stop_pretraining", "depth <3>", noise.over_seeds([0.05, 0.06, 0.055], 0.003), noise.HIGHER,
                "stop pre-training at iteration 16 <early>", unit="probe accuracy", checkpoint=16, compared_to=128),
        finding("effective_depth", long, noise.over_seeds([2, 2, 3], 0.5), INTERMEDIATE, "collapse at block01"),
        finding("effective_depth", "depth <3>", noise.over_seeds([1.0], 0.5), INTERMEDIATE, "collapse at block00",
                runs=[runs["run_id"][1]])], columns=list(COLUMNS))
    section = findings_section(table, troubled, unfinished={runs["run_id"][1]})
    assert section.index("<table class='findings-table'>") < section.index("<h3>")  # the table opens the section
    assert "depth &lt;3&gt;: stop pre-training at iteration 16 &lt;early&gt;." in section
    assert "+5.50 [+3.71, +7.29] points" in section and "16 vs 128" in section  # ± t(2) at 0.9875 (6.21) × 0.005 / √3
    assert "<b>R1</b> = " + long in section and "<td>R1</td>" in section and "1 of its runs not done" in section
    assert "CUDA out of memory" in section and f"title='{runs['run_id'][1]}'" in section
    assert section.index("<h3>Learning phases (LearnPhase)</h3>") < section.index("<h3>Effective depth (IntermediateNC)</h3>")
    assert "no run failed" in findings_section(pd.DataFrame(columns=list(COLUMNS)), [])


def test_a_redraw_leaves_exactly_the_figures_the_report_shows(grid_experiment, tmp_path):
    """Files of a figure renamed since, or of a publication whose record is gone, are removed with those of a
    run now filtered out or a figure that skips now: the folder holds the report's figures and nothing else."""
    import json

    import analysis
    from folders import ExperimentFolder

    experiment = ExperimentFolder(copy_experiment(grid_experiment, tmp_path))
    record = json.loads(experiment.publication_path.read_text())
    record["figures"]["an_old_name"] = {"key": "x", "files": ["an_old_name.png", "an_old_name.pdf"]}
    experiment.publication_path.write_text(json.dumps(record))
    for name in ("an_old_name.png", "an_old_name.pdf", "from_a_lost_record.png"):
        (experiment.figures_path / name).write_bytes(b"\x89PNG")
    for words in (["seed=0"], []):  # one run, whose heatmaps and the like stay; then every run again
        assert analysis.main(["figures", f"out_dir={experiment.path.parent}", *words, *QUICK]) == 0
        page = experiment.report_path.read_text()
        shown = {source for source in re.findall(r"<img src='figures/([^']+)'", page)}
        on_disk = {path.name for path in experiment.figures_path.glob("*.png")}
        assert on_disk == shown and shown
        assert not list(experiment.figures_path.glob("*.pdf"))  # PNGs only unless figure_formats asks for PDFs
    assert not (experiment.figures_path / "an_old_name.png").exists()


def test_pdfs_are_drawn_on_request_and_kept_until_their_figure_changes(grid_experiment, tmp_path):
    """PNGs by default (the report's); figure_formats=png,pdf draws a PDF beside each, which the report links and
    the plain calls after it keep; a figure drawn again (its table or filter changed) loses its stale PDF."""
    import analysis
    from folders import ExperimentFolder

    experiment = ExperimentFolder(copy_experiment(grid_experiment, tmp_path))
    out_dir = f"out_dir={experiment.path.parent}"

    def files(suffix: str) -> set[str]:
        return {path.stem for path in experiment.figures_path.glob(f"*.{suffix}")}

    assert not files("pdf") and files("png")
    assert analysis.main(["figures", out_dir, "figure_formats=png,pdf", *QUICK]) == 0
    assert files("pdf") == files("png")
    for stem in files("png"):
        assert (experiment.figures_path / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
        assert f"<a href='figures/{stem}.pdf'><img src='figures/{stem}.png'" in experiment.report_path.read_text()
    stamps = {path.name: path.stat().st_mtime_ns for path in experiment.figures_path.iterdir()}
    assert analysis.main(["figures", out_dir, *QUICK]) == 0  # nothing new: the PDFs stay, nothing is drawn
    assert {path.name: path.stat().st_mtime_ns for path in experiment.figures_path.iterdir()} == stamps
    assert analysis.main(["figures", out_dir, "seed=0", *QUICK]) == 0  # another filter: every figure drawn again
    assert not files("pdf") and files("png")
    page = experiment.report_path.read_text()
    assert "<a href='figures/" in page and ".pdf'" not in page


def test_drawing_the_figures_never_loads_torch(grid_experiment, tmp_path):
    """`analysis.py figures` reads the table and draws: torch (1.3 s of a 10 s budget) and the models stay unloaded."""
    from folders import ExperimentFolder

    experiment = ExperimentFolder(copy_experiment(grid_experiment, tmp_path))
    experiment.publication_path.unlink()  # no record: every figure and the report are drawn again
    script = ("import sys, analysis; code = analysis.main(['figures', sys.argv[1], *sys.argv[2:]]); "
              "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded'); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script, f"out_dir={experiment.path.parent}", *QUICK],
                            cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "figures: " in result.stdout and result.stdout.rstrip().endswith("torch not loaded"), result.stdout
