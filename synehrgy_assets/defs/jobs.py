"""Jobs and the executor: the whole graph, retraining from the staged data onward, generation shards.

The executor is in-process by default (the Definitions' executor, so ad-hoc materializations
from the UI use it too): every step shares one interpreter, and torch, GX, MLflow and the dbt
manifest load once per run instead of once per step. Multiprocess stays one run-config line away
(launchpad or `execute_in_process`/`dagster job launch` run config)::

    execution:
      config:
        multiprocess: {max_concurrent: 2}

Measured figures: docs/architecture.md, "Executor".
"""


import dagster as dg

_BASE = dg.multi_or_in_process_executor
# Dagster offers no public way to keep an executor's choices and change its default one. The one
# non-public read is the base's config type (the selector in_process | multiprocess); everything
# else is public. tests/test_definitions.py fails when Dagster changes that type or the requirements.
_CHOICES = _BASE.config_schema.config_type


def _requirements(executor_config) -> list:
    """What Dagster's executor requires for the chosen mode: multiprocess needs a reconstructable
    job and a persistent instance and outputs; in_process needs nothing."""
    return dg.multiple_process_executor_requirements() if "multiprocess" in executor_config else []


# Dagster's own multi_or_in_process executor with `in_process` as the default choice.
in_process_by_default_executor = dg.ExecutorDefinition(
    name="in_process_or_multiprocess",
    config_schema=dg.Field(_CHOICES, default_value={"in_process": {}}, is_required=False),
    requirements=_requirements,
    executor_creation_fn=_BASE.executor_creation_fn,
    description="In-process by default (one interpreter per run); `execution: config: multiprocess: {}` "
    "runs each step in its own process.",
)

# The generation shards are partitioned: they run in their own job (a backfill over shard keys).
_SHARDS = dg.AssetSelection.groups("synthesis_shards")

end_to_end_job = dg.define_asset_job(
    name="synehrgy_end_to_end",
    selection=dg.AssetSelection.all() - _SHARDS,
    executor_def=in_process_by_default_executor,
    description="Raw MIMIC-III (or the simulated hospital, when asked for) → dbt staging → tokens → GPT → synthetic release.",
)

retrain_job = dg.define_asset_job(
    name="synehrgy_retrain",
    selection=dg.AssetSelection.groups("tokens", "model", "synthesis", "evaluation", "release"),
    executor_def=in_process_by_default_executor,
    description="Refit the vocabulary, retrain the GPT, regenerate, evaluate and (if gated checks pass) release.",
)

generate_shards_job = dg.define_asset_job(
    name="synehrgy_generate_shards",
    selection=_SHARDS,
    executor_def=in_process_by_default_executor,
    description="One generation shard per run (partition = shard key); backfill several keys to generate in "
    "parallel, then materialize synthetic_sequences with from_shards=k.",
)
