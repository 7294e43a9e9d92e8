"""The CLI's runs, recorded as runs of the code location `synehrgy`, so the UI lists them everywhere.

`JobDefinition.execute_in_process` records a run without a code-location origin, and the UI's
overview (the timeline, each job's and each asset's runs) only shows runs whose origin names a
location it has loaded: the CLI's runs appeared under Runs alone. Dagster has no public way to
execute a job in this process as a run of a named location, so this module is the one small adapter
over the internals it needs; `tests/test_definitions.py` runs it and fails when they change.

Only the origin differs from `execute_in_process`: same instance, same in-process execution (the
job's own executor, in-process by default), same loggers and run config. The origin carries the
location name only, which the UI (and "Re-execute" from it) resolves against its loaded locations.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

LOCATION_NAME = "synehrgy"  # pyproject.toml [tool.dg.project] code_location_name
REPOSITORY_NAME = "__repository__"  # the single repository of a Definitions object


def execute_as_location_run(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    *,
    run_id: str,
    run_config: Mapping,
    tags: Mapping[str, str],
    location_name: str = LOCATION_NAME,
):
    """Create the run with `location_name` as its origin and execute it here; returns the
    `ExecutionResult` (`success`, `run_id`, `all_events`, `get_asset_materialization_events()`)."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import create_execution_plan, execute_run
    from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin

    in_memory = InMemoryJob(job)
    plan = create_execution_plan(in_memory, run_config=run_config, instance_ref=instance.get_ref() if instance.is_persistent else None)
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin(location_name), REPOSITORY_NAME),
                             job.name)
    run = instance.create_run_for_job(
        job_def=job, execution_plan=plan, run_id=run_id, run_config=run_config,
        tags={**job.run_tags, **tags}, remote_job_origin=origin,
    )
    return execute_run(in_memory, run, instance, raise_on_error=False)
