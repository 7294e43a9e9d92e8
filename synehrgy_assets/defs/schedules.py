"""Scheduled retraining.

The tick starts the retrain job only when the workspace's newest staging build is the published
one: a build that failed its blocking checks, or still waits for them, skips the tick with a reason
naming it (and `patient_split`, the job's first asset, refuses it too if the job is started by hand).
"""


import dagster as dg

from synehrgy_assets.defs.jobs import retrain_job
from synehrgy_assets.resources import WorkspaceResource


def retraining_refusal(workspace: WorkspaceResource) -> str | None:
    """Why the newest staging build must not be retrained on, or None."""
    import duckdb

    from synehrgy_assets.core.staging_build import read_marker, read_state, refusal

    state = read_state(workspace.root)
    if not state or state.get("status") == "published":
        return None
    published = None
    if workspace.layout.duckdb.exists():
        try:
            with duckdb.connect(str(workspace.layout.duckdb), read_only=True) as con:
                published = read_marker(con, require_complete=False).build_id
        except Exception:  # held by a running job, or no marker: the state alone decides
            published = None
    return refusal(state, published)


@dg.schedule(
    name="weekly_retraining",
    job=retrain_job,
    cron_schedule="0 3 * * 1",  # Mondays 03:00, when the warehouse is quiet
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain and re-release weekly on the published staging build; a tick is skipped, with the "
    "reason, while the newest staging build failed or waits for its checks. Turn on in the UI (Automation tab).",
)
def weekly_retraining_schedule(context: dg.ScheduleEvaluationContext, workspace: WorkspaceResource):
    why = retraining_refusal(workspace)
    if why:
        context.log.warning(f"weekly_retraining skipped: {why}")
        return dg.SkipReason(f"Refusing to retrain: {why}")
    return dg.RunRequest()
