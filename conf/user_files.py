"""A user's Python file run as a module: a preset file (experiment=FILE.py, conf/experiments.py) or a model's
module file (arch=module:FILE:CLASS, models/user_module.py). Once per content, however often it is read."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable


class UserFileError(Exception):
    """Running the user's file raised `cause`: the caller says so in its own one line."""

    def __init__(self, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


def import_user_file(path: Path, prefix: str, digest: str = "", *, before: Callable[[], None] | None = None,
                     catching: tuple[type[BaseException], ...] = (Exception,)) -> ModuleType:
    """`import_user_file(path, "lab_experiment")`: the module `path` runs as, kept in sys.modules as
    `<prefix>_<its sha256's first 16 hex digits>` (`digest`: the file's sha256 when the caller has it), so a file
    read twice runs once and a changed file runs anew. `before` is called just before it first runs (a notice);
    UserFileError when running it raises one of `catching` (the user's file: theirs to fix)."""
    name = f"{prefix}_{(digest or hashlib.sha256(path.read_bytes()).hexdigest())[:16]}"
    if name not in sys.modules:
        if before is not None:
            before()
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except catching as error:
            raise UserFileError(error) from None
        sys.modules[name] = module
    return sys.modules[name]
