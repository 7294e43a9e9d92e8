"""How the suite's tests are split between pytest-xdist workers (scripts/test.sh runs two).

The modules that read the session's shared workspace (tests/small_graph.py, the fixture
`released_workspace`) form one work unit, so the workspace is built once; every other module is a
unit of its own, so its module-scoped fixtures are built once.

xdist's public grouping, `--dist loadgroup` with `xdist_group` marks, groups nothing with this
pytest: xdist 3.8 writes the group into `item._nodeid`, which pytest 9 no longer reads (reported
upstream; open at xdist 3.8.0). So this is an adapter: xdist's load-scope scheduler with our scope
function, through the public hook `pytest_xdist_make_scheduler`. Its one non-public piece is the
method it overrides, `LoadScopeScheduling._split_scope`; tests/test_xdist_units.py fails when
xdist stops calling it.
"""

from __future__ import annotations

from pathlib import Path

SHARED_WORKSPACE_MODULES = frozenset({
    "test_cli_generate.py", "test_definitions.py", "test_end_to_end.py", "test_exports.py", "test_gate_metadata.py",
    "test_meds_clients.py", "test_mlflow_hygiene.py", "test_partitions.py", "test_progress.py", "test_registry.py",
    "test_training_budget.py", "test_ui_browser.py", "test_workspace_moves.py",
})


def xdist_work_unit(nodeid: str) -> str:
    """The work unit of a test: the shared-workspace modules together, every other module alone."""
    module = nodeid.split("::")[0]
    return "shared_workspace" if Path(module).name in SHARED_WORKSPACE_MODULES else module


def work_unit_scheduler(config, log=None):
    """xdist's load-scope scheduling with `xdist_work_unit` as the scope."""
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_work_unit(nodeid)

    return WorkUnitScheduling(config, log)
