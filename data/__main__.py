"""python -m data download cifar10 cifar100 [data_root=datasets] — prefetch datasets into data_root (on a login node with internet)."""

import sys
from pathlib import Path

import data
from utils import command_shell, setup_logging


def main(arguments: list[str]) -> int:
    """`python -m data download NAME [NAME ...] [data_root=PATH]` (exit codes as utils.command_shell's)."""
    return command_shell(download_command, arguments)


def download_command(arguments: list[str]) -> int:
    """Download each dataset named, or refuse the command line in one line (exit 2) before any download."""
    if not arguments or arguments[0] != "download" or len(arguments) < 2:
        raise data.DataError("usage: python -m data download NAME [NAME ...] [data_root=PATH]")
    data_root = Path("datasets")
    names = []
    for argument in arguments[1:]:
        if argument.startswith("data_root="):
            data_root = Path(argument.split("=", 1)[1])
        else:
            names.append(argument)
    unknown = [name for name in names if name not in data.TORCHVISION_DATASETS]
    if unknown:
        raise data.DataError(f"unknown dataset {unknown[0]!r}; accepted: {', '.join(data.TORCHVISION_DATASETS)}")
    setup_logging()
    for name in names:
        data.download(name, data_root=data_root)
        print(f"{name}: ready under {data_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
