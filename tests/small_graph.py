"""One small end-to-end materialization per test process, shared by the hygiene, progress and
partition tests (tests that change a workspace work on a copy: `copy_workspace`).

The graph runs once on the built-in synthetic hospital (150 patients) with a GPT of 20 steps and
12 generated patients of at most 768 tokens (an untrained model writes long patients: the cap
keeps generation to seconds); about a minute on 2 idle cores.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dagster as dg


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


TINY_RUN_CONFIG = {
    "ops": {
        "token_sequences": {"config": {"n_ctx": 512}},
        "gpt_checkpoint": {"config": {"n_layer": 1, "n_head": 2, "n_embd": 32, "max_steps": 20, "batch_size": 8,
                                      "eval_every": 10, "progress_every_seconds": 0.0}},
        "synthetic_sequences": {"config": {"n_patients": 12, "batch_size": 12, "max_tokens_per_patient": 768,
                                           "progress_every_seconds": 0.0}},
    }
}


@functools.cache
def small_graph() -> SmallGraph:
    from orchestration.definitions import build_definitions
    from tests.test_end_to_end import failure_text

    home = Path(tempfile.mkdtemp(prefix="synehrgy_small_graph_"))
    atexit.register(shutil.rmtree, home, True)
    prebuilt = os.environ.get("SYNEHRGY_TEST_SMALL_GRAPH", "")
    if prebuilt:  # a workspace this module built before (copied; for iterating on the tests)
        shutil.copytree(prebuilt, home, dirs_exist_ok=True)
    defs = build_definitions(home=str(home), mimic_dir="", synthetic_patients=150)
    (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    instance = dg.DagsterInstance.local_temp(str(home / "dagster_home"))
    result = None
    if not prebuilt:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny model: threads only add OpenMP barriers (tests/tiny_models.py)
        try:
            result = defs.resolve_job_def("synehrgy_end_to_end").execute_in_process(
                instance=instance, run_config=TINY_RUN_CONFIG, raise_on_error=False)
        finally:
            torch.set_num_threads(threads)
        assert result.success, failure_text(result)
    return SmallGraph(home, defs, instance, result)


def copy_workspace(graph: SmallGraph, dst: Path) -> tuple[Path, dg.Definitions, dg.DagsterInstance]:
    """A copy of the small workspace at `dst` (DuckDB, artifacts, MLflow store, Dagster instance),
    with Definitions and an instance pointing at the copy."""
    from orchestration.definitions import build_definitions

    shutil.copytree(graph.home, dst, ignore=shutil.ignore_patterns("*.lock", "lock"))
    defs = build_definitions(home=str(dst), mimic_dir="", synthetic_patients=150)
    instance = dg.DagsterInstance.local_temp(str(dst / "dagster_home"))
    return dst, defs, instance
