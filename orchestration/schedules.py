"""Scheduled retraining."""


import dagster as dg

from orchestration.jobs import retrain_job

weekly_retraining_schedule = dg.ScheduleDefinition(
    name="weekly_retraining",
    job=retrain_job,
    cron_schedule="0 3 * * 1",  # Mondays 03:00, when the warehouse is quiet
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain and re-release weekly; turn on in the UI (Automation tab).",
)
