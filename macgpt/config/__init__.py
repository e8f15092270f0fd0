"""Configuration: presets, typed fields with ranges, job specifications, resource limits."""

BATTERY_POLICIES = ("pause", "throttle", "run")  # strictest first; here, not in limits: the CLI needs it without the schema
