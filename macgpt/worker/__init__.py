"""The worker: one process per job that trains the model and obeys its supervisor."""
