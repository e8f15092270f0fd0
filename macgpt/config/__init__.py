"""Configuration: presets, typed fields with ranges, job specifications, resource limits."""
