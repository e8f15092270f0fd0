"""Exit codes of ``macgpt`` and ``macgptd``."""

from enum import IntEnum


class Exit(IntEnum):
    OK = 0  # success
    FAILURE = 1  # the command ran and failed (a job failed, a worker could not answer, ...)
    USAGE = 2  # bad input: an unknown config, a value out of range, a bad data file, ...
    NO_DAEMON = 3  # the daemon is not running: start it with `macgptd start`
    INTERRUPTED = 130  # stopped by Ctrl+C (the job was checkpointed)
