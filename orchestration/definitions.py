"""The one place the Definitions are loaded (`dagster dev -w workspace.yaml`)."""


import dagster as dg

from orchestration.jobs import end_to_end_job, generate_shards_job, in_process_by_default_executor, retrain_job
from orchestration.resources import build_resources
from orchestration.schedules import weekly_retraining_schedule
from orchestration.sensors import mimic_files_sensor, release_announcement_sensor
from synehrgy_assets.defs import (
    evaluation, meds, raw, release, staging, staging_checks, synthesis, tokens, training, validation,
)  # fmt: skip


def build_definitions(**resource_overrides) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            raw.mimic_raw_files,
            staging.dbt_mimic_models,
            tokens.patient_split,
            meds.meds_export,
            tokens.token_vocabulary,
            tokens.token_sequences,
            training.gpt_checkpoint,
            synthesis.synthetic_sequences,
            synthesis.synthetic_sequence_shards,
            synthesis.synthetic_cohort,
            evaluation.evaluation,
            release.synthetic_release,
        ],
        asset_checks=[*staging_checks.staging_loss_checks, *tokens.token_sequences_checks, *validation.gx_checks, *evaluation.evaluation_checks,
                      *synthesis.synthesis_checks, *meds.meds_checks],
        jobs=[end_to_end_job, retrain_job, generate_shards_job],
        schedules=[weekly_retraining_schedule],
        sensors=[mimic_files_sensor, release_announcement_sensor],
        resources=build_resources(**resource_overrides),
        # ad-hoc materializations (UI, `dagster asset materialize`) run in one process too
        executor=in_process_by_default_executor,
    )


defs = build_definitions()
