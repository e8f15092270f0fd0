"""Exceptions for bad user input, in a module with no imports so the CLI can catch them cheaply."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field, the value and the range."""


class DataError(ValueError):
    """One or more data problems; ``problems`` holds one 'path:line:col: message' line each."""

    def __init__(self, problems: list[str], more: int = 0) -> None:
        self.problems = problems
        self.more = more
        lines = list(problems)
        if more:
            lines.append(f"... and {more} more problem(s)")
        super().__init__("\n".join(lines))
