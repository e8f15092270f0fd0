"""The built-in dataset shipped with the package, and the readers that validate training text."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

BUILTIN_TRAIN = "pretrain_200.jsonl"
BUILTIN_TEST = "pretrain_test.jsonl"


def builtin_path(name: str) -> Path:
    """Filesystem path of a built-in data file (the package is installed unzipped)."""
    with as_file(files(__package__) / name) as path:
        return Path(path)
