"""python train.py key=value ... — the one reader of key=value words, for every command and subcommand.

train.py's and analysis.py's command lines (conf/cli.py), the subcommands' (conf/subcommands.py) and the analysis
options a row's `options` column names (conf/analysis.py) are all read here: a word is `key=value`, the key is
looked up in each group of readers in turn, the value read (and checked) by the key's reader, or the word is
refused in one line.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from conf.errors import SettingsError
from conf.global_settings import parse_value

Reader = Callable[[str], object]


def field_readers(fields: dict[str, dataclasses.Field], sweep: Callable[[str], list[str]] | None = None) -> dict[str, Reader]:
    """name -> a reader of its value's text (parse_value: typed and range-checked); with `sweep`, a list of
    values, one per part `sweep` splits the text into (a run setting's `depth=3,5`)."""
    if sweep is None:
        return {name: (lambda text, item=item: parse_value(item, text)) for name, item in fields.items()}
    return {name: (lambda text, item=item: [parse_value(item, part) for part in sweep(text)])
            for name, item in fields.items()}


def read_key_values(words: list[str], groups: dict[str, dict[str, Reader]], unknown: Callable[[str], SettingsError],
                    usage: str = "") -> dict[str, dict[str, object]]:
    """key=value words -> {group: {key: value}}, each key read by the first group that knows it; SettingsError
    for a word without `=` (`usage` after the line) or a key no group knows (`unknown(key)` words it)."""
    values: dict[str, dict[str, object]] = {group: {} for group in groups}
    for word in words:
        key, separator, text = word.partition("=")
        if not separator or not key:
            raise SettingsError(f"cannot read {word!r}; write key=value{usage}")
        group = next((group for group, readers in groups.items() if key in readers), None)
        if group is None:
            raise unknown(key)
        values[group][key] = groups[group][key](text)
    return values
