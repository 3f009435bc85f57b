"""Experiments of one's own: a name (its own folder, the grid from the command line alone) and a preset file
(`experiment=path/to/study.py`, studies/example_study.py), through train.py, its status, sh train.sh and
analysis.py (measure and figures); and the refusals (a name that is no folder name, a missing, empty or broken
file, a misnamed EXPERIMENT, another file of the same stem), each one line, exit 2, nothing written."""

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import analysis
import train
from conf import help_text, parse_arguments
from folders import ExperimentFolder
from tests.conftest import REPOSITORY, copied, read_json, refusal_lines, run_cli, tiny_words

pytestmark = pytest.mark.slow  # end to end: real runs trained and measured (make test-fast leaves them out)

EXAMPLE = REPOSITORY / "studies" / "example_study.py"
QUICK_ANALYSIS = ["metrics=ncc_accuracy", "probe_dimensions=32", "log_level=WARNING", "threads=1", "progress=off"]


def files_under(folder: Path) -> dict[str, int]:
    """Every file under `folder` with its modification time: what a refusal must leave as it was."""
    return {str(path): path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()} if folder.exists() else {}


def run_settings(out_dir: Path, experiment: str) -> list[dict]:
    return [read_json(folder.path / "settings.json")
            for folder in ExperimentFolder.of(out_dir, experiment).run_folders()]


@pytest.fixture(scope="module")
def noise_sweep(tmp_path_factory) -> tuple[Path, str]:
    """A name of one's own trained once per module: (its out_dir, train.py's stderr); tests copy the out_dir."""
    out_dir = tmp_path_factory.mktemp("noise_sweep")
    trained = run_cli("train.py", tiny_words(out_dir, "experiment=noise_sweep", "label_noise=0.2"))
    assert trained.returncode == 0, trained.stderr
    return out_dir, trained.stderr


def test_a_name_of_ones_own_trains_into_its_own_folder_and_analysis_finds_it(noise_sweep, tmp_path, in_process):
    trained, stderr = noise_sweep
    assert f"new experiment 'noise_sweep': the grid from the command line, in {trained / 'noise_sweep'}" in stderr
    assert os.listdir(trained) == ["noise_sweep"]  # not default/
    (settings,) = run_settings(trained, "noise_sweep")
    assert settings["settings"]["label_noise"] == 0.2 and settings["settings"]["width"] == 8  # the command line's
    out_dir = copied(trained, tmp_path)
    analysed = in_process("analysis.py", [f"out_dir={out_dir}", "experiment=noise_sweep", *QUICK_ANALYSIS, "figures=false"])
    assert analysed.returncode == 0, analysed.stderr
    assert analysed.stdout.startswith("1 run(s): ") and ExperimentFolder.of(out_dir, "noise_sweep").table_path.is_dir()


def test_status_of_a_name_of_ones_own_lists_the_runs_its_folder_holds(noise_sweep, tmp_path, capsys):
    """No run settings typed: the folder's runs, whichever command line trained them (the default grid's run,
    never trained here, is not listed); with run settings typed, that grid's runs."""
    out_dir = copied(noise_sweep[0], tmp_path)  # this test's own copy of the trained out_dir
    (run_id,) = [folder.run_id for folder in ExperimentFolder.of(out_dir, "noise_sweep").run_folders()]
    assert train.main(["status", "experiment=noise_sweep", f"out_dir={out_dir}"]) == 0
    shown = capsys.readouterr().out
    assert any(line.startswith(run_id) and " done " in line for line in shown.splitlines()), shown
    assert parse_arguments(["experiment=noise_sweep"]).grid[0].run_id not in shown  # the command line's default run
    assert train.main(["status", "experiment=noise_sweep", f"out_dir={out_dir}", "label_noise=0.1"]) == 0
    assert run_id not in capsys.readouterr().out  # another grid, not trained: its run is new


def test_a_new_name_is_announced_once_with_the_preset_it_may_be_a_typo_of(tmp_path, capsys):
    plan = parse_arguments(["experiment=learnphse", f"out_dir={tmp_path}"])
    folder = ExperimentFolder.of(tmp_path, plan.experiment)
    train.announce_new_experiment(plan, folder)
    assert "new experiment 'learnphse' (no preset of that name: did you mean 'learnphase'?)" in capsys.readouterr().err
    folder.path.mkdir()
    train.announce_new_experiment(plan, folder)  # its folder exists: nothing to say
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def example_trained(tmp_path_factory) -> Path:
    """The example study trained with `sh train.sh`, typed in studies/ with a path relative to it (launcher=inline
    after train.sh's launcher=slurm: the same pass-through, without a cluster)."""
    out_dir = tmp_path_factory.mktemp("example")
    result = subprocess.run(["sh", "../train.sh", "experiment=example_study.py", "launcher=inline", f"out_dir={out_dir}",
                             "progress=off", "threads=1"], cwd=EXAMPLE.parent, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out_dir


def test_sh_train_sh_status_shows_the_study_trained_through_it(example_trained):
    """`sh train.sh status ...`: the subcommand stays train.py's first word (train.sh adds launcher=slurm after it)."""
    result = subprocess.run(["sh", "../train.sh", "status", "experiment=example_study.py", "launcher=inline",
                             f"out_dir={example_trained}"], cwd=EXAMPLE.parent, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "2 run(s): 2 done" in result.stdout, result.stdout


def test_a_preset_file_trains_its_grid_into_the_folder_of_its_stem(example_trained):
    runs = run_settings(example_trained, "example_study")
    assert sorted(run["settings"]["depth"] for run in runs) == [1, 2]
    assert {run["settings"]["synthetic_train_size"] for run in runs} == {256}  # the file's, not the default's
    assert read_json(ExperimentFolder.of(example_trained, "example_study").preset_path) == {"source": str(EXAMPLE)}
    assert os.listdir(example_trained) == ["example_study"]


def test_status_and_analysis_take_the_preset_file(example_trained, in_process):
    words = [f"out_dir={example_trained}", "experiment=studies/example_study.py"]  # relative to the repository here
    status = in_process("train.py", ["status", *words])  # main() in the repository folder, as run_cli's
    assert status.returncode == 0, status.stderr
    assert status.stdout.count(" done ") == 2, status.stdout
    measured = in_process("analysis.py", [*words, *QUICK_ANALYSIS, "figures=false"])
    assert measured.returncode == 0, measured.stderr
    assert measured.stdout.startswith("2 run(s): "), measured.stdout
    drawn = in_process("analysis.py", ["figures", *words, "log_level=WARNING"])
    assert drawn.returncode == 0, drawn.stderr
    report = ExperimentFolder.of(example_trained, "example_study").report_path.read_text()
    assert "Experiment example_study" in report and "CONV-L-8 of depth 1 and 2 on 256 embedded synthetic" in report


def refusal(command: str, words: list[str], capsys) -> str:
    """The one line a command prints before exit 2 (asserted), in this process."""
    main = {"train": train.main, "status": lambda w: train.main(["status", *w]), "analysis": analysis.main,
            "figures": lambda w: analysis.main(["figures", *w])}[command]
    assert main(words) == 2
    lines = refusal_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


BROKEN_FILES = {
    "empty.py": ("x = 1\n", "empty.py defines no EXPERIMENT; write EXPERIMENT = Experiment(\"empty\", "),
    "broken.py": ("raise RuntimeError('half\\nwritten')\n", "broken.py fails to import (RuntimeError: half written); "
                  "fix that file"),
    "misnamed.py": ("from conf.experiments import Experiment\nEXPERIMENT = Experiment('other', 'x', {'depth': 2})\n",
                    "EXPERIMENT is named 'other', not 'misnamed' (the file's stem, its folder); name it 'misnamed'"),
    "typo.py": ("from conf.experiments import Experiment\nEXPERIMENT = Experiment('typo', 'x', {'dpeth': [2, 4]})\n",
                "'dpeth' is no run setting; did you mean 'depth'?"),
    "demo.py": ("", "the file's stem 'demo', the experiment's folder name, is a preset's name; rename the file"),
}


@pytest.mark.parametrize("command", ["train", "status", "analysis", "figures"])
@pytest.mark.parametrize("experiment, needle", [
    ("../x", "experiment='../x' is no folder name; accepted: a preset (default, demo"),
    ("", "experiment='' is no folder name"),
    ("/", "experiment='/' is no folder name"),
    (".hidden", "experiment='.hidden' is no folder name"),
    ("studies/example_study", "experiment='studies/example_study' is no folder name"),
    ("missing.py", "missing.py does not exist; accepted: a Python file that defines EXPERIMENT = Experiment(\"missing\""),
    *((name, needle) for name, (_, needle) in BROKEN_FILES.items()),
])
def test_a_bad_name_or_preset_file_is_one_line_and_writes_nothing(tmp_path, capsys, command, experiment, needle):
    studies, out_dir = tmp_path / "studies", tmp_path / "out"
    studies.mkdir()
    for name, (text, _) in BROKEN_FILES.items():
        (studies / name).write_text(text)
    typed = str(studies / experiment) if experiment.endswith(".py") else experiment
    line = refusal(command, [f"experiment={typed}", f"out_dir={out_dir}"], capsys)
    assert needle in line, line
    assert not out_dir.exists()


@pytest.mark.parametrize("command", ["train", "status", "analysis", "figures"])
def test_another_file_of_the_same_stem_or_the_name_alone_is_refused(example_trained, tmp_path, capsys, command):
    other = tmp_path / "elsewhere" / "example_study.py"
    other.parent.mkdir()
    shutil.copy(EXAMPLE, other)  # the same stem and content: still another study's file
    before = files_under(example_trained)
    line = refusal(command, [f"experiment={other}", f"out_dir={example_trained}"], capsys)
    assert line == (f"error: {example_trained / 'example_study'} holds the study of {EXAMPLE}, another file of the same "
                    f"name as {other}; rename {other} or pass another out_dir="), line
    line = refusal(command, ["experiment=example_study", f"out_dir={example_trained}"], capsys)
    assert f"holds the study of the preset file {EXAMPLE}; pass experiment={EXAMPLE} (if that file is gone" in line
    assert files_under(example_trained) == before


def test_the_plan_carries_a_preset_file_by_value_for_slurm_jobs(tmp_path):
    """A Slurm analysis job gets the plan pickled: it must not need the file (moved or edited since)."""
    study = tmp_path / "moved_study.py"
    study.write_text(EXAMPLE.read_text().replace('"example_study"', '"moved_study"'))
    plan = parse_arguments([f"experiment={study}"], analysis=True)
    assert plan.experiment == "moved_study" and plan.experiment_argument() == str(study) and len(plan.grid) == 2
    (tmp_path / "plan.pickle").write_bytes(pickle.dumps(plan))
    study.unlink()
    script = ("import pickle, sys; plan = pickle.load(open(sys.argv[1], 'rb')); "
              "print(plan.preset.name, plan.preset.source, len(plan.preset.grids()), len(plan.grid))")
    loaded = subprocess.run([sys.executable, "-c", script, str(tmp_path / "plan.pickle")], cwd=REPOSITORY,
                            capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["moved_study", str(study), "1", "2"]


def test_help_says_how_to_use_a_name_and_a_file_of_ones_own():
    text = help_text()
    assert "usage: python train.py [experiment=NAME|FILE.py]" in text
    assert "a name of your own: its own folder, the grid from the command line alone" in text
    assert 'a file that defines EXPERIMENT = Experiment("my_study", ' in text
