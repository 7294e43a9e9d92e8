"""Orchestration: the Definitions (jobs, schedule, sensors, resources) for `dagster dev`."""
