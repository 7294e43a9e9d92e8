"""Pure core: plain Python modules, testable without Dagster."""
