"""The code's shape: one owner for the folders' file names, no import circle, short functions."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from checkpointing import CurvesFolder, ExperimentFolder, RunFolder

REPOSITORY = Path(__file__).resolve().parent.parent
# checkpointing.py names what is inside an experiment or run folder; the store names the files inside its
# own folders (cells, snapshots, the tables' parts and locks), which the experiment folder gives it.
OWNERS = {REPOSITORY / "checkpointing.py", REPOSITORY / "metrics" / "layout.py"}
LONGEST_FUNCTION = 60  # lines, docstring included


def project_files(*, tests: bool = False) -> list[Path]:
    """Every Python file of the project (not the virtual environment), tests only when asked."""
    skipped = {".venv", ".git", "outputs", "datasets"} | (set() if tests else {"tests"})
    return sorted(path for path in REPOSITORY.rglob("*.py") if not skipped & set(path.relative_to(REPOSITORY).parts))


def folder_names() -> tuple[set[str], set[str]]:
    """(file names, folder names) that the folder owner gives out, read from its own objects."""
    owned = ExperimentFolder("/experiment"), RunFolder("/experiment/run"), CurvesFolder("/experiment/tensorboard/run")
    names = {value.name for folder in owned for value in vars(folder).values() if isinstance(value, Path)} - {
        "experiment", "run"}
    files = {name for name in names if "." in name}
    return files, names - files


def docstring_nodes(tree: ast.AST) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def spelled_names(path: Path, files: set[str], folders: set[str]) -> list[str]:
    """Where `path` spells a file name of the folders in a string (docstrings aside), or joins a
    folder name onto a path (`x / "runs"`, `joinpath("runs")`, `Path(..., "runs")`)."""
    tree = ast.parse(path.read_text())
    docstrings, found = docstring_nodes(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found += [f"{path.name}:{node.lineno} {name!r}" for name in files if name in node.value]
        operands = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            operands = [node.left, node.right]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "joinpath", "Path", "join"):
            operands = node.args
        found += [f"{path.name}:{node.lineno} {operand.value!r}" for operand in operands
                  if isinstance(operand, ast.Constant) and operand.value in folders]
    return found


def test_no_file_name_of_the_folders_is_spelled_outside_their_owner():
    """checkpointing.py alone names what is inside an experiment or run folder, and metrics/layout.py the
    store's files inside the folders that one gives it (DESIGN: one owner each)."""
    files, folders = folder_names()
    assert {"settings.json", "manifest.json", "metrics.parquet", "label_noise.json"} <= files
    assert {"runs", "checkpoints", "resume"} <= folders
    spelled = [hit for path in project_files() if path not in OWNERS for hit in spelled_names(path, files, folders)]
    assert spelled == []


def test_the_layout_check_finds_a_spelled_name(tmp_path):
    """The check above can fail: a file that joins "runs" or names settings.json is caught."""
    offender = tmp_path / "offender.py"
    offender.write_text('from pathlib import Path\n\ndef f(root):\n    """settings.json in a docstring is fine."""\n'
                        '    return root / "runs" / "x" / "settings.json"\n')
    files, folders = folder_names()
    assert len(spelled_names(offender, files, folders)) == 2


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPOSITORY).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, at the top or inside a function (a lazy import
    still closes a circle). `from package import name` counts as importing package.name when that
    is a module, else the package."""
    modules = {module_name(path): path for path in project_files()}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                            for alias in node.names}
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle as a path of module names, or [] (depth-first search, colours)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "closed"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_no_import_circle():
    """Arrows point one way (DESIGN): train -> training, slurm; slurm -> training; utils never imports data."""
    graph = import_graph()
    assert "training" in graph["slurm.job"] and "slurm.launch" in graph["train"]
    assert find_cycle(graph) == []


def test_the_circle_check_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("module", ["train", "training", "analysis", "slurm.job", "utils", "data", "checkpointing"])
def test_each_entry_module_imports_first_in_a_fresh_interpreter(module):
    """`python -c "import X"`: whichever module is imported first, nothing is half-initialised."""
    import subprocess

    result = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPOSITORY, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_no_function_is_longer_than_a_screen():
    """Short functions (the house rule): the training loop, the CLIs and the engine included."""
    long = []
    for path in project_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > LONGEST_FUNCTION:
                    long.append(f"{path.relative_to(REPOSITORY)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def test_the_cli_and_training_files_stay_small():
    assert len((REPOSITORY / "train.py").read_text().splitlines()) <= 150
    assert len((REPOSITORY / "training.py").read_text().splitlines()) <= 300
