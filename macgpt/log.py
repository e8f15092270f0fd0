"""Logging setup: structlog events as JSON lines in a rotated file, human-readable on a terminal."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

import structlog

_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    structlog.processors.format_exc_info,
]


def setup(
    log_file: Path | None = None,
    console: bool | None = None,
    level: int = logging.INFO,
    json_console: bool = False,
    max_bytes: int = 5 * 1024 * 1024,
    backups: int = 3,
) -> None:
    """Route structlog through stdlib logging: JSON to ``log_file`` (rotated), and to stderr
    as coloured text when it is a terminal (or JSON when ``json_console``)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(level)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(log_file, maxBytes=max_bytes, backupCount=backups,
                                                  encoding="utf-8")
        fh.setFormatter(structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(ensure_ascii=False), foreign_pre_chain=_SHARED))
        root.addHandler(fh)
    if console is None:
        console = sys.stderr.isatty()
    if console or json_console:
        sh = logging.StreamHandler(sys.stderr)
        renderer = (structlog.processors.JSONRenderer(ensure_ascii=False) if json_console
                    else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
        sh.setFormatter(structlog.stdlib.ProcessorFormatter(processor=renderer, foreign_pre_chain=_SHARED))
        root.addHandler(sh)
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get(name: str = "macgpt") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
