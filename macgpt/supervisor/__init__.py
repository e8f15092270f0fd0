"""The supervisor: daemon, job queue, worker processes and the resource governor (no torch here)."""
