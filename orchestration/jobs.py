"""Jobs: the whole graph, and retraining from the staged data onward."""


import dagster as dg

# In-process: every step shares one interpreter, so torch/GX/MLflow import once per run.
end_to_end_job = dg.define_asset_job(
    name="synehrgy_end_to_end",
    selection=dg.AssetSelection.all(),
    executor_def=dg.in_process_executor,
    description="Raw MIMIC-III (or the synthetic hospital) → dbt staging → tokens → GPT → synthetic release.",
)

retrain_job = dg.define_asset_job(
    name="synehrgy_retrain",
    selection=dg.AssetSelection.groups("tokens", "model", "synthesis", "evaluation", "release"),
    executor_def=dg.in_process_executor,
    description="Refit the vocabulary, retrain the GPT, regenerate, evaluate and (if gated checks pass) release.",
)
