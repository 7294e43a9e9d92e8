"""The command line (`python -m orchestration.cli`): materialize the graph as runs of the code location
`synehrgy` (synehrgy_assets/definitions.py), generate from a registered model, pull a release."""
