"""``python -m macgpt.worker``: run one job's worker process (started by a supervisor)."""

from macgpt.worker.process import run

run()
