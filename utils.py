"""Small shared pieces: atomic writes, sha256, seeded generators, logging set-up. Every file this
project writes goes through `atomic_write_*` (a temporary name in the same folder, fsync, rename),
so a kill at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib
import io
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:  # torch loads where a tensor is saved or made: drawing figures never needs it (1.3 s)
    import torch

TEMPORARY_MARKER = ".tmp-"


def _temporary_path(path: Path) -> Path:
    """A new, empty file beside `path`, created with the permissions the umask gives (mkstemp's are
    always 0600: on a cluster's group-shared storage the group could neither read results nor resume)."""
    for _ in range(100):
        candidate = path.parent / f".{path.name}{TEMPORARY_MARKER}{secrets.token_hex(6)}"
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write_bytes(path: str | Path, payload: bytes) -> str:
    """Write `payload` to `path` atomically; return its sha256 (hex)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_path(path)
    try:
        with open(temporary, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:  # a write or fsync: name the file it was for
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    return hashlib.sha256(payload).hexdigest()


def atomic_write_text(path: str | Path, text: str) -> str:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, value: Any) -> str:
    return atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(value: Any, path: str | Path) -> str:
    """torch.save to memory, then an atomic write; return the file's sha256."""
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def set_cpu_threads(count: int) -> int:
    """torch's intra-op CPU threads set to `count` (0 keeps them), the count before returned: the one setter of
    `threads=` for the analysis (for its whole command) and training (per run, restored: training/devices.py).
    On a busy machine torch's own choice oversubscribes the cores and its threads spin-wait on each other."""
    import torch

    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    return before


def torch_load(path: str | Path, map_location="cpu") -> Any:
    """torch.load of tensors and plain containers only (weights_only: a checkpoint never runs code)."""
    import torch

    return torch.load(path, map_location=map_location, weights_only=True)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_stamp(path: str | Path) -> list[int] | None:
    """[size, modification time in ns], None for a missing file: what "changed" means for files that are
    only ever replaced whole (atomic writes)."""
    try:
        stat = Path(path).stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return [stat.st_size, stat.st_mtime_ns]


def signature(value) -> str:
    """The sha256 of a value's canonical JSON: what an incremental cache records it was built from (the table's
    parts, the similarity table's, the figures' record), so a later call compares one string."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def current_record(record_path: Path, built_from: str, output: Path | None = None) -> dict | None:
    """The one up-to-date rule of every incremental cache: the JSON record at `record_path` when it says it was
    built from `built_from` (a `signature`) and `output`, if given, is still the file written then (its
    file_stamp, recorded as "output"); None otherwise (missing, unreadable, stale, or the output replaced by hand)."""
    try:
        record = json.loads(record_path.read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("built_from") != built_from:
        return None
    return record if output is None or file_stamp(output) == record.get("output") else None


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporaries left by a writer that was killed mid-write (recursively)."""
    folder = Path(folder)
    stale = [path for path in folder.rglob(f"*{TEMPORARY_MARKER}*") if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def exclusive_lock(path: str | Path, *, wait: bool = False):
    """Yield True while this process holds an exclusive lock on `path` (created if missing); when
    another process holds it, False at once (or, with `wait`, True once it is released). The lock
    goes with the process, even one that is killed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


ENVIRONMENT_FIXES = {  # errno -> what the user can do about it (one line, with the path, on stderr; exit 1)
    errno.ENOSPC: "the disk is full: free space or choose another folder, then run the same command (finished "
                  "work is kept, partial runs resume)",
    errno.EDQUOT: "the disk quota is used up: free space or choose another folder, then run the same command",
    errno.EACCES: "no permission: fix the folder's permissions (e.g. chmod g+w) or choose another folder",
    errno.EPERM: "not permitted: fix the folder's permissions or choose another folder",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.ENOTDIR: "part of the path is a file, not a folder: choose another folder",
    errno.EEXIST: "a file of that name is in the way: choose another folder or move the file",
    errno.EISDIR: "that is a folder: name a file",
    errno.ENOENT: "it does not exist: check the path",
}


def one_line(error: Exception) -> str:
    """An error's message on one line: torch's unpickling errors and load_state_dict's span several."""
    return " ".join(str(error).split())


def describe_environment_error(error: OSError) -> str:
    """One line for a fault of the environment (full disk, read-only or misnamed folder): what
    failed, on which path, and the fix."""
    where = f" ({error.filename})" if error.filename else ""
    fix = ENVIRONMENT_FIXES.get(error.errno, "check the path and the machine, then run the same command")
    return f"{error.strerror or error}{where}: {fix}"


def ensure_writable_folder(path: str | Path) -> Path:
    """Create `path` (and its parents) and check a file can be written in it; OSError (naming the
    path) when it cannot: a file in the way, a read-only or full file system, no permission."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    try:
        _temporary_path(path / ".write-check").unlink()
    except OSError as error:  # name the folder the user chose, not our probe's name
        raise OSError(error.errno, error.strerror, str(path)) from None
    return path


def derive_seed(*keys: object) -> int:
    """A 63-bit seed from any tuple of keys, e.g. (seed, "epoch", 3): independent streams per purpose."""
    digest = hashlib.sha256(repr(keys).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seeded_generator(*keys: object) -> torch.Generator:
    """A CPU torch.Generator seeded from `keys`; CPU so that data order does not depend on the device."""
    import torch

    generator = torch.Generator()
    generator.manual_seed(derive_seed(*keys))
    return generator


def progress_bar(mode: str, total: int, initial: int, description: str, unit: str = "it"):
    """A tqdm bar for `progress=on`, or `auto` on a terminal; None otherwise (logs say it instead)."""
    if mode == "off" or (mode == "auto" and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit=unit, leave=False)


class InputError(Exception):
    """Bad input: a word, a file or a folder the user gave cannot be used. Its message is the one line naming it
    and the fix; the command exits 2 having written nothing (conf's SettingsError and DataError, folders'
    RunFolderError are ones)."""


class Stopped(Exception):
    """A signal stopped the command once its state was saved: it exits 128 + the signal's number, as a shell
    reports a signalled process (training's Interrupted is one)."""

    signal_number: int


def command_shell(body, arguments: list[str], subcommands: dict[str, str] | None = None) -> int:
    """`sys.exit(command_shell(main_body, sys.argv[1:], {"status": "slurm.runs:status_command"}))` — every command's
    one mapping of an exception to what the user sees and its exit code: bad input one line and 2, the environment
    (a full disk, a read-only folder) one line with the fix and 1, a signal after the state was saved a warning and
    128 + its number. A first argument naming one of `subcommands` ("module:function", imported only then: a
    subcommand loads only what it needs) runs that function on the rest instead of `body`."""
    try:
        if subcommands and arguments and arguments[0] in subcommands:
            module, _, function = subcommands[arguments[0]].partition(":")
            body, arguments = getattr(importlib.import_module(module), function), arguments[1:]
        return body(arguments)
    except InputError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {describe_environment_error(error)}", file=sys.stderr)
        return 1
    except Stopped as error:
        logging.getLogger("command").warning("%s; the state is saved: run the same command to resume", error)
        return 128 + error.signal_number


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
