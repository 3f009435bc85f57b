"""python utils.py download cifar10 cifar100 [data_root=datasets] — prefetch datasets into data_root.

Small shared pieces: atomic writes, sha256, seeded generators, logging set-up. Every file this
project writes goes through `atomic_write_*` (a temporary name in the same folder, fsync, rename),
so a kill at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

TEMPORARY_MARKER = ".tmp-"


def _temporary_path(path: Path) -> Path:
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}{TEMPORARY_MARKER}", dir=path.parent)
    os.close(descriptor)
    return Path(name)


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
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return hashlib.sha256(payload).hexdigest()


def atomic_write_text(path: str | Path, text: str) -> str:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, value: Any) -> str:
    return atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(value: Any, path: str | Path) -> str:
    """torch.save to memory, then an atomic write; return the file's sha256."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def derive_seed(*keys: object) -> int:
    """A 63-bit seed from any tuple of keys, e.g. (seed, "epoch", 3): independent streams per purpose."""
    digest = hashlib.sha256(repr(keys).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seeded_generator(*keys: object) -> torch.Generator:
    """A CPU torch.Generator seeded from `keys`; CPU so that data order does not depend on the device."""
    generator = torch.Generator()
    generator.manual_seed(derive_seed(*keys))
    return generator


def stable_hash(value: Any, length: int = 10) -> str:
    """Hex hash of a JSON-serialisable value with sorted keys (the run id's suffix)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:length]


def progress_bar(mode: str, total: int, initial: int, description: str, unit: str = "it"):
    """A tqdm bar for `progress=on`, or `auto` on a terminal; None otherwise (logs say it instead)."""
    if mode == "off" or (mode == "auto" and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit=unit, leave=False)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def main(arguments: list[str]) -> int:
    """CLI: `python utils.py download NAME [NAME ...] [data_root=PATH]`."""
    usage = "usage: python utils.py download NAME [NAME ...] [data_root=PATH]"
    if not arguments or arguments[0] != "download" or len(arguments) < 2:
        print(usage, file=sys.stderr)
        return 2
    import data  # here, not at the top: data imports this module

    data_root = Path("datasets")
    names = []
    for argument in arguments[1:]:
        if argument.startswith("data_root="):
            data_root = Path(argument.split("=", 1)[1])
        else:
            names.append(argument)
    unknown = [name for name in names if name not in data.TORCHVISION_DATASETS]
    if unknown:
        print(f"error: unknown dataset {unknown[0]!r}; accepted: {', '.join(data.TORCHVISION_DATASETS)}",
              file=sys.stderr)
        return 2
    setup_logging()
    for name in names:
        try:
            data.download(name, data_root=data_root)
        except data.DataError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"{name}: ready under {data_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
