"""`python analysis.py import DIR ...` under faults: what is not a regular file is never read (a FIFO or a
link to /dev/zero would be read forever), what is read is bounded, index.json is checked before it is
trusted, a killed or starved import leaves no run behind, and bad input ends in one line, exit 2.

The source folders hold three tiny state dicts made in-process; the CLI runs in a process of its own only where a
hang or a kill must be contained (with a time limit: a hang fails the test instead of stalling the suite)."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import analysis
import folders
from folders import ExperimentFolder
from measuring import imported
from tests.conftest import REPOSITORY, read_json, run_cli
from tests.test_any_model import IMPORT_SETTINGS, QUICK, fabricated_checkpoints
from tests.test_resume import fork_server

pytestmark = pytest.mark.slow  # end to end: real runs trained and measured (make test-fast leaves them out)

PROMPT = 60  # seconds: an import of three tiny files takes a few; a hang takes forever


def import_words(source: Path, out_dir: Path, *extra: str) -> list[str]:
    return ["import", str(source), *IMPORT_SETTINGS, f"out_dir={out_dir}", *extra]


def import_here(capsys, source: Path, out_dir: Path, *extra: str) -> tuple[int, str, str]:
    """analysis.main in this process: (exit code, stdout, stderr)."""
    code = analysis.main(import_words(source, out_dir, *extra))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(code: int, stderr: str, needle: str, expected: int = 2) -> None:
    lines = stderr.strip().splitlines()
    assert code == expected and len(lines) == 1 and lines[0].startswith("error:"), stderr
    assert needle in lines[0] and "Traceback" not in stderr, stderr


def experiment_of(out_dir: Path) -> ExperimentFolder:
    return ExperimentFolder(out_dir / "default")


def imported_iterations(out_dir: Path) -> list[int]:
    (run,) = experiment_of(out_dir).run_folders()
    assert read_json(run.status_path)["state"] == "done"
    return sorted(run.checkpoint_entries())


def odd_entry(path: Path, kind: str) -> None:
    """A `*.pt` that is not a regular file: a FIFO, a link to /dev/zero, a folder."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()


ODD_KINDS = [("fifo", "FIFO"), ("dev_zero", "character device"), ("folder", "folder")]


@pytest.fixture(scope="module")
def contained():
    """`contained(words)`: `python analysis.py <words>` in a process of its own, ended after PROMPT seconds (a hang
    fails the test instead of stalling the suite), forked from one interpreter that imported analysis.py once
    (tests/test_resume.py's fork_server): the module's processes pay one interpreter start, not one each."""
    with fork_server() as run:
        yield lambda words: run("analysis.py", words, seconds=PROMPT)


def import_contained(kind: str, contained, in_process, words: list[str]) -> subprocess.CompletedProcess:
    """`python analysis.py <words>` where reading the odd entry by mistake would hang (a FIFO, /dev/zero): in a
    process of its own with a time limit; in this process where it cannot (a folder fails at once)."""
    if kind == "folder":
        return in_process("analysis.py", words)
    return contained(words)


@pytest.mark.parametrize("kind, named", ODD_KINDS)
def test_an_entry_that_is_not_a_regular_file_is_named_and_the_checkpoints_imported(tmp_path, contained, in_process,
                                                                                   kind, named):
    """Only regular files are checkpoints (a symlink to one too): the odd entry is named on stderr, the rest
    imported, exit 0, promptly."""
    source = fabricated_checkpoints(tmp_path / "elsewhere")
    kept = tmp_path / "kept"
    kept.mkdir()
    (source / "step_16.pt").rename(kept / "step_16.pt")
    (source / "step_16.pt").symlink_to(kept / "step_16.pt")  # a link to a regular file is a checkpoint
    odd_entry(source / "step_32.pt", kind)
    result = import_contained(kind, contained, in_process, import_words(source, tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "step_32.pt" in result.stderr and named in result.stderr and "Traceback" not in result.stderr
    assert imported_iterations(tmp_path / "out") == [0, 16, 64]


@pytest.mark.parametrize("kind, named", ODD_KINDS)
def test_a_folder_of_nothing_but_odd_entries_is_refused_in_one_line(tmp_path, contained, in_process, kind, named):
    source = tmp_path / "elsewhere"
    source.mkdir()
    odd_entry(source / "step_2.pt", kind)
    result = import_contained(kind, contained, in_process, import_words(source, tmp_path / "out"))
    assert_one_line(result.returncode, result.stderr, "step_2.pt")
    assert named in result.stderr and not (tmp_path / "out").exists()


def test_an_index_that_is_a_fifo_is_refused_not_read(tmp_path, contained):
    source = fabricated_checkpoints(tmp_path / "elsewhere")
    os.mkfifo(source / "index.json")
    result = contained(import_words(source, tmp_path / "out"))
    assert_one_line(result.returncode, result.stderr, "index.json")
    assert "FIFO" in result.stderr and not (tmp_path / "out").exists()


def test_an_oversized_index_is_refused(tmp_path, capsys):
    source = fabricated_checkpoints(tmp_path / "elsewhere")
    listing = json.dumps({f"step_{iteration}.pt": iteration for iteration in (0, 16, 64)})
    (source / "index.json").write_text(listing + " " * (2 << 20))  # valid JSON, 2 MiB: not an index
    code, _, stderr = import_here(capsys, source, tmp_path / "out")
    assert_one_line(code, stderr, "index.json")
    assert not (tmp_path / "out").exists()


def test_an_oversized_checkpoint_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(imported, "MAX_CHECKPOINT_BYTES", 1000, raising=False)  # the tiny files are ~10 kB
    source = fabricated_checkpoints(tmp_path / "elsewhere")
    code, _, stderr = import_here(capsys, source, tmp_path / "out")
    assert_one_line(code, stderr, "step_0.pt")
    assert "1000" in stderr and not (tmp_path / "out").exists()


ACCEPTED = "accepted: a whole number from 0 to 99999999"
INDEX_CASES = {
    "duplicate": ({"step_0.pt": 0, "step_16.pt": 16, "step_64.pt": 16}, "step_16.pt and step_64.pt both"),
    "negative": ({"step_0.pt": -1}, ACCEPTED),
    "fraction": ({"step_0.pt": 3.5}, ACCEPTED),
    "boolean": ({"step_0.pt": True}, ACCEPTED),
    "text": ({"step_0.pt": "16"}, ACCEPTED),
    "huge": ({"step_0.pt": 10 ** 20}, ACCEPTED),
    "parent": ({"../outside.pt": 0}, "../outside.pt is not a plain file name"),
    "absolute": ({"OUTSIDE": 0}, "outside.pt is not a plain file name"),
    "subfolder": ({"sub/step_0.pt": 0}, "sub/step_0.pt is not a plain file name"),
    "missing": ({"step_99.pt": 99}, "step_99.pt, which is not in"),
    "not_a_mapping": ([["step_0.pt", 0]], "index.json is not"),
}


@pytest.mark.parametrize("case", INDEX_CASES)
def test_a_bad_index_is_refused_in_one_line_and_writes_nothing(tmp_path, capsys, case):
    listing, needle = INDEX_CASES[case]
    source = fabricated_checkpoints(tmp_path / "elsewhere")
    shutil.copy(source / "step_0.pt", tmp_path / "outside.pt")
    (source / "sub").mkdir()
    shutil.copy(source / "step_0.pt", source / "sub" / "step_0.pt")
    if case == "absolute":
        listing = {str(tmp_path / "outside.pt"): 0}
    (source / "index.json").write_text(json.dumps(listing))
    code, _, stderr = import_here(capsys, source, tmp_path / "out")
    assert_one_line(code, stderr, needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("iteration", [10 ** 8, 10 ** 20])
def test_an_iteration_beyond_the_bound_in_a_file_name_is_refused(tmp_path, capsys, iteration):
    """10**20 was imported, then the analysis died of an OverflowError (the table's int64)."""
    source = fabricated_checkpoints(tmp_path / "elsewhere")
    (source / "step_64.pt").rename(source / f"step_{iteration}.pt")
    code, _, stderr = import_here(capsys, source, tmp_path / "out")
    assert_one_line(code, stderr, f"step_{iteration}.pt")
    assert ACCEPTED in stderr and not (tmp_path / "out").exists()


def test_an_unknown_arch_is_refused_in_one_line(tmp_path):
    """Through `python analysis.py` itself: the refusals above, on the real command line."""
    source = fabricated_checkpoints(tmp_path / "elsewhere")
    result = run_cli("analysis.py", [*import_words(source, tmp_path / "out"), "arch=nosuch"], timeout=PROMPT)
    assert_one_line(result.returncode, result.stderr, "arch='nosuch' is unknown")
    assert not (tmp_path / "out").exists()


# Runs the import in a process that SIGKILLs itself once its second checkpoint is saved (a counted event, not
# a clock): what a kill or a power cut leaves behind.
KILL_AFTER_SECOND_CHECKPOINT = """
import os, signal, sys
sys.path.insert(0, {repository!r})
import analysis, folders
real, count = folders.RunFolder.save_checkpoint, [0]
def save_then_die(*arguments, **keywords):
    real(*arguments, **keywords)
    count[0] += 1
    if count[0] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
folders.RunFolder.save_checkpoint = save_then_die
sys.exit(analysis.main({words!r}))
"""


def file_stamps(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns) for path in folder.rglob("*")}


def test_a_killed_import_leaves_no_run_and_the_next_import_finishes_it(tmp_path, capsys, caplog):
    source, out_dir = fabricated_checkpoints(tmp_path / "elsewhere"), tmp_path / "out"
    experiment = experiment_of(out_dir)
    script = KILL_AFTER_SECOND_CHECKPOINT.format(repository=str(REPOSITORY), words=import_words(source, out_dir))
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY, capture_output=True, timeout=PROMPT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert experiment.run_folders() == []  # the half-built run is hidden ...
    assert [path.name for path in experiment.runs_path.iterdir() if not path.name.startswith(".")] == []
    assert analysis.main([f"out_dir={out_dir}", *QUICK]) == 2  # ... so the analysis finds no run to measure
    assert "holds no runs" in capsys.readouterr().err
    code, printed, _ = import_here(capsys, source, out_dir)  # the same command again
    assert code == 0 and "imported 3 checkpoint(s)" in printed
    assert "removed" in caplog.text and "killed" in caplog.text  # the killed import's leftovers, named
    assert imported_iterations(out_dir) == [0, 16, 64]
    assert [path.name for path in experiment.runs_path.iterdir()] == [experiment.run_folders()[0].run_id]
    before = file_stamps(out_dir)
    code, printed, _ = import_here(capsys, source, out_dir)  # once more: the same run, already there
    assert code == 0 and "already imported" in printed and file_stamps(out_dir) == before


def test_a_full_disk_mid_import_is_one_line_exit_1_and_leaves_no_run(tmp_path, capsys, monkeypatch):
    source, out_dir = fabricated_checkpoints(tmp_path / "elsewhere"), tmp_path / "out"
    real, count = folders.atomic_torch_save, [0]

    def fills_the_disk(value, path):
        count[0] += 1
        if count[0] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(value, path)

    monkeypatch.setattr(folders, "atomic_torch_save", fills_the_disk)
    code, _, stderr = import_here(capsys, source, out_dir)
    assert_one_line(code, stderr, "the disk is full", expected=1)
    assert experiment_of(out_dir).run_folders() == [] and list(experiment_of(out_dir).runs_path.glob("*")) == []
    monkeypatch.undo()  # room again: the same command imports the whole run
    code, _, _ = import_here(capsys, source, out_dir)
    assert code == 0 and imported_iterations(out_dir) == [0, 16, 64]
