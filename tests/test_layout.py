"""The code's shape: one owner for the folders' file names, no import circle, short functions."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from folders import CurvesFolder, ExperimentFolder, RunFolder

REPOSITORY = Path(__file__).resolve().parent.parent
# folders/ names what is inside an experiment or run folder; the store names the files inside its own folders
# (cells, snapshots, the tables' parts and locks), which the experiment folder gives it.
OWNERS = {REPOSITORY / "folders" / "__init__.py", REPOSITORY / "folders" / "curves.py",
          REPOSITORY / "measuring" / "layout.py"}
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
    """folders/ alone names what is inside an experiment or run folder, and measuring/layout.py the
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
    """Arrows point one way (docs/design.md): train -> slurm -> training; no module imports one that imports it."""
    graph = import_graph()
    assert "training.loop" in graph["slurm.job"] and "slurm.launch" in graph["train"]
    assert find_cycle(graph) == []


def test_the_circle_check_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


# The rooms (docs/design.md, the README's code map): the top level is the user's three scripts and one package per
# stage. Each room may import the rooms named here and no other: the stages follow the data (settings -> a run
# folder -> measured rows -> read-out -> figures), and a stage never reaches into a later one.
SCRIPTS = {"train", "analysis", "utils"}
ROOMS = {
    "utils": set(),  # file and process primitives: imports nothing of the project
    "conf": {"utils"},  # settings, command lines, errors (utils.InputError): torch-free
    "models": {"conf"},
    "data": {"conf", "utils"},
    "folders": {"conf", "utils"},  # the run folder's owner: every path and side file
    "metrics": {"conf", "data", "models", "utils"},  # tensors in, rows out: no file of a run read or written
    "training": {"conf", "data", "folders", "models", "utils"},  # never the measuring, the read-out or figures
    "measuring": {"conf", "data", "folders", "metrics", "models", "utils"},  # never figures, findings or training
    "findings": {"conf"},  # the read-out: tables in, sentences out
    "figures": {"conf", "findings", "folders", "utils"},  # drawing and the report: never torch's stages
    "slurm": {"conf", "data", "folders", "measuring", "training", "utils"},
    "train": {"conf", "data", "folders", "slurm", "training", "utils"},
    "analysis": {"conf", "figures", "findings", "folders", "measuring", "metrics", "slurm", "utils"},
    "studies": {"conf"},
}


def room_of(module: str) -> str:
    return module.split(".")[0]


def crossings(graph: dict[str, set[str]]) -> list[str]:
    """`module -> target` for every import from one room into a room it may not import (ROOMS)."""
    return sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                  if room_of(module) in ROOMS and room_of(target) != room_of(module)
                  and room_of(target) not in ROOMS[room_of(module)])


def test_the_top_level_is_the_scripts_and_one_package_per_stage():
    """`ls` is the map: the user's scripts and a package per stage, nothing else that runs (benchmarks and tests
    aside); every package opens with a docstring that says what it holds."""
    top = {path.stem for path in REPOSITORY.glob("*.py")}
    packages = {path.parent.name for path in REPOSITORY.glob("*/__init__.py")} - {"tests"}
    assert top == SCRIPTS
    assert packages == set(ROOMS) - SCRIPTS - {"studies"}
    for package in packages:
        assert ast.get_docstring(ast.parse((REPOSITORY / package / "__init__.py").read_text())), package


def test_each_room_imports_only_the_rooms_below_it():
    """Training never imports measuring, measuring never imports figures, metrics read no run folder, utils
    imports nothing of the project (ROOMS)."""
    graph = {module: targets for module, targets in import_graph().items() if room_of(module) != "benchmarks"}
    assert {room_of(module) for module in graph} <= set(ROOMS)
    assert crossings(graph) == []


def test_the_room_check_finds_a_crossing():
    assert crossings({"training.loop": {"measuring.store", "folders"}, "utils": {"conf"}}) == [
        "training.loop -> measuring.store", "utils -> conf"]


@pytest.mark.parametrize("module", ["train", "training.loop", "analysis", "slurm.job", "utils", "data", "folders",
                                    "measuring.protocol", "findings", "figures.publish"])
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
    assert len((REPOSITORY / "training" / "loop.py").read_text().splitlines()) <= 300
