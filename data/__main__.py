"""python -m data download cifar10 cifar100 [data_root=datasets] — prefetch datasets into data_root (on a login node with internet)."""

import sys
from pathlib import Path

import data
from utils import describe_environment_error, setup_logging


def main(arguments: list[str]) -> int:
    """`python -m data download NAME [NAME ...] [data_root=PATH]`."""
    usage = "usage: python -m data download NAME [NAME ...] [data_root=PATH]"
    if not arguments or arguments[0] != "download" or len(arguments) < 2:
        print(usage, file=sys.stderr)
        return 2
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
        except OSError as error:  # the environment: a read-only or full data_root
            print(f"error: {describe_environment_error(error)}", file=sys.stderr)
            return 1
        print(f"{name}: ready under {data_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
