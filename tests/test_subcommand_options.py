"""Every subcommand of analysis.py (features, import, similarity) takes the execution options train.py and
analysis.py take, and applies them (threads= sets torch's threads as the analysis does); a key none of
them knows is still refused in one line, exit 2, naming the closest key. The run they read is imported
from three tiny state dicts and measured for its probe snapshots, in this process."""

from pathlib import Path

import pytest
import torch

import analysis
from folders import ExperimentFolder
from tests.test_any_model import IMPORT_SETTINGS, QUICK, fabricated_checkpoints

COMMON = ["download=false", "threads=1", "log_level=WARNING", "progress=off"]
COMMANDS = ["features", "import", "similarity"]


@pytest.fixture(scope="module")
def measured_run(tmp_path_factory) -> tuple[Path, Path]:
    """(the source folder of three state dicts, the run imported from it with its probe snapshots measured)."""
    folder = tmp_path_factory.mktemp("subcommands")
    source = fabricated_checkpoints(folder / "elsewhere")
    assert analysis.main(["import", str(source), *IMPORT_SETTINGS, f"out_dir={folder}", "threads=1"]) == 0
    assert analysis.main([f"out_dir={folder}", *QUICK, "threads=1", "metrics=cka_previous_layer", "figures=false"]) == 0
    (run,) = ExperimentFolder(folder / "default").run_folders()
    return source, run.path


@pytest.fixture
def torch_threads():
    """torch's thread count as the test found it, restored after (main() changes it in this process)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def command_words(command: str, measured_run: tuple[Path, Path], tmp_path: Path) -> tuple[list[str], Path]:
    """(the subcommand's words, what it writes)."""
    source, run = measured_run
    if command == "features":
        return ["features", str(run), "iteration=16", f"out={tmp_path / 'features.npz'}"], tmp_path / "features.npz"
    if command == "similarity":
        return ["similarity", str(run), str(run), f"out={tmp_path / 'cka.csv'}"], tmp_path / "cka.csv"
    return ["import", str(source), *IMPORT_SETTINGS, f"out_dir={tmp_path / 'out'}"], tmp_path / "out"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_takes_and_applies_the_common_execution_options(measured_run, tmp_path, capsys, torch_threads,
                                                                        command):
    words, written = command_words(command, measured_run, tmp_path)
    torch.set_num_threads(2)
    assert analysis.main([*words, *COMMON]) == 0, capsys.readouterr().err
    assert torch.get_num_threads() == 1  # threads=1 applied, as analysis.py applies it
    assert written.exists() and capsys.readouterr().err == ""


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("typed, needle", [
    ("donwload=false", "unknown key 'donwload'; did you mean 'download'?"),
    ("threads=-1", "threads=-1 is out of range"),
])
def test_a_key_or_value_no_subcommand_takes_is_refused_in_one_line(measured_run, tmp_path, capsys, torch_threads,
                                                                  command, typed, needle):
    words, written = command_words(command, measured_run, tmp_path)
    assert analysis.main([*words, *COMMON, typed]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not written.exists()
