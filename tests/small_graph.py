"""One small end-to-end materialization per test process, shared by every test that reads a whole
graph's results: the release, export, `generate` CLI, browser, hygiene, progress, partition,
sensor and end-to-end tests (tests that change a workspace work on a copy: `copy_workspace`).

The graph runs once on the built-in synthetic hospital (asked for: `synthetic_hospital=True`; 150 patients) with a GPT of 30 steps and
40 generated patients of at most 300 tokens (an under-trained model writes long patients: the
cap keeps generation to seconds), judged by gates every cohort passes (`lax_gates`), so the
release is promoted and both registered models have a `champion`/`candidate` alias to look at.
About a minute on 2 idle cores. Tests that need the default gates re-run the evaluation on a copy.
"""

from __future__ import annotations

import atexit
import copy
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from tests.helpers.graph_runs import SMALL_RUN_CONFIG


@dataclass
class SmallGraph:
    home: Path
    defs: dg.Definitions
    instance: dg.DagsterInstance
    result: object  # ExecuteInProcessResult (None for a prebuilt workspace)

    def metadata(self, asset: str) -> dict:
        """The latest materialization's metadata of `asset`, as plain values (MetadataValue kept for URLs)."""
        record = self.instance.fetch_materializations(dg.AssetKey.from_user_string(asset), limit=1).records[0]
        return dict(record.asset_materialization.metadata)

    @functools.cached_property
    def mats(self) -> dict[str, dict]:
        """Every asset's latest metadata as plain values (`materialized` of the run)."""
        from tests.helpers.graph_runs import materialized

        return materialized(self.result)

    @property
    def mlflow(self):
        return self.defs.resources["mlflow_tracking"]

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.resolved_tracking_uri


SHARED_RUN_CONFIG = copy.deepcopy(SMALL_RUN_CONFIG)
SHARED_RUN_CONFIG["ops"]["gpt_checkpoint"]["config"]["progress_every_seconds"] = 0.0
SHARED_RUN_CONFIG["ops"]["synthetic_sequences"]["config"].update(
    {"max_tokens_per_patient": 300, "progress_every_seconds": 0.0})


def _definitions(home: Path) -> dg.Definitions:
    from synehrgy_assets.definitions import build_definitions
    from synehrgy_assets.resources import MLFLOW_URI_VARIABLES, mlflow_environment_kept
    from tests.helpers.graph_runs import lax_gates

    # Built without any MLFLOW_TRACKING_URI a test may have exported: the workspace's own store, always.
    with mlflow_environment_kept():
        for key in MLFLOW_URI_VARIABLES:
            os.environ.pop(key, None)
        defs = build_definitions(home=str(home), synthetic_hospital=True, synthetic_patients=150,
                                 release_gate=lax_gates())
    uri = defs.resources["mlflow_tracking"].resolved_tracking_uri
    assert str(home) in uri, f"the workspace at {home} tracks {uri}, not its own MLflow store"
    return defs


@functools.cache
def small_graph() -> SmallGraph:
    from tests.helpers.graph_runs import failure_text

    home = Path(tempfile.mkdtemp(prefix="synehrgy_small_graph_"))
    atexit.register(shutil.rmtree, home, True)
    prebuilt = os.environ.get("SYNEHRGY_TEST_SMALL_GRAPH", "")
    if prebuilt:  # a workspace this module built before (copied; for iterating on the tests)
        shutil.copytree(prebuilt, home, dirs_exist_ok=True)
    defs = _definitions(home)
    (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    instance = dg.DagsterInstance.local_temp(str(home / "dagster_home"))
    result = None
    if not prebuilt:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny model: threads only add OpenMP barriers (tests/tiny_models.py)
        try:
            result = defs.resolve_job_def("synehrgy_end_to_end").execute_in_process(
                instance=instance, run_config=SHARED_RUN_CONFIG, raise_on_error=False)
        finally:
            torch.set_num_threads(threads)
        assert result.success, failure_text(result)
    return SmallGraph(home, defs, instance, result)


def copy_workspace(graph: SmallGraph, dst: Path) -> tuple[Path, dg.Definitions, dg.DagsterInstance]:
    """A copy of the small workspace at `dst` (DuckDB, artifacts, MLflow store, Dagster instance),
    with Definitions (the same lax gates) and an instance pointing at the copy."""
    shutil.copytree(graph.home, dst, ignore=shutil.ignore_patterns("*.lock", "lock"))
    defs = _definitions(dst)  # its own store: a copy writing to the original's would re-tag the shared release
    instance = dg.DagsterInstance.local_temp(str(dst / "dagster_home"))
    return dst, defs, instance
