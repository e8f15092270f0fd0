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


def job_files(data: tuple[str, ...] | list[str], eval_data: tuple[str, ...] | list[str]) -> tuple[list[str], list[str]]:
    """The files a job trains and evaluates on: its own, else the built-in ones. The built-in test
    set goes only with the built-in training data (own data without eval files holds some out)."""
    train = [str(p) for p in data] or [str(builtin_path(BUILTIN_TRAIN))]
    evals = [str(p) for p in eval_data] or ([] if data else [str(builtin_path(BUILTIN_TEST))])
    return train, evals
