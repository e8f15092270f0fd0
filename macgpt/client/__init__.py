"""The client: a fast command line (no torch at import) that talks to the daemon."""
