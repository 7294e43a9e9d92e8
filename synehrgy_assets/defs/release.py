"""Stage 6: record the synthetic release in the MLflow registry; move `champion` only when gated checks pass."""


import json
import shutil
import tempfile
from pathlib import Path

import dagster as dg

from synehrgy_assets.core.datacard import champion_line, cohort_coverage, pull_instructions, release_datacard
from synehrgy_assets.defs.evaluation import evaluation, evaluation_checks
from synehrgy_assets.defs.gates import NOT_RUN, STALE, cohort_fingerprint, read_verdicts
from synehrgy_assets.defs.synthesis import synthetic_cohort
from synehrgy_assets.defs.training import CHAMPION_ALIAS
from synehrgy_assets.defs.validation import gx_checks
from synehrgy_assets.resources import MlflowResource, WorkspaceResource

# Every check that gates `champion`: the GX suites on the cohort and the evaluation gates.
GATING_CHECKS = [key.name for checks in (*gx_checks, *evaluation_checks) for key in checks.check_keys]


def gate_status(workspace: WorkspaceResource, cohort_dir: Path) -> tuple[str, dict[str, dict]]:
    """The cohort in the workspace and each gating check's verdict on it.

    Raises when the cohort's files no longer match its recorded id, or when a gating check has not
    judged this cohort (never run, or run on a cohort since regenerated): nothing that was not
    checked is recorded as a release, passed or failed.
    """
    provenance = json.loads((cohort_dir / "provenance.json").read_text())
    recorded, actual = provenance.get("cohort_id"), cohort_fingerprint(cohort_dir)
    if recorded != actual:
        raise dg.Failure(
            f"{cohort_dir}: the cohort's tables changed after synthetic_cohort wrote them (recorded id {recorded}, "
            f"files hash to {actual}); re-materialize synthetic_cohort, its checks and evaluation"
        )
    status = read_verdicts(workspace, GATING_CHECKS, actual)
    unjudged = {k: v for k, v in status.items() if v["status"] in (NOT_RUN, STALE)}
    if unjudged:
        lines = "\n".join(f"  - {k}: {v['status']} ({v['reason']})" for k, v in sorted(unjudged.items()))
        raise dg.Failure(
            f"synthetic_release refuses cohort {actual}: {len(unjudged)} gating check(s) did not judge it:\n{lines}\n"
            "Materialize synthetic_cohort's checks and evaluation with its checks (the end-to-end job runs them all), "
            "then the release."
        )
    return actual, status


@dg.asset(
    group_name="release",
    deps=[evaluation, synthetic_cohort],
    kinds={"mlflow"},
    description=(
        "The synthetic cohort recorded as a version of a registered MLflow model: Parquet tables, the MIMIC-III "
        "CSV layout, MEDS 0.4 and a datacard as artifacts; the datacard is also the registry description. "
        "Alias `champion` (on the release and on its generator) moves only when every GX and gate check passed."
    ),
)
def synthetic_release(
    context: dg.AssetExecutionContext, workspace: WorkspaceResource, mlflow_tracking: MlflowResource
) -> dg.MaterializeResult:
    import pyarrow.parquet as pq

    cohort_dir = workspace.layout.synthetic_cohort
    cohort_id, status = gate_status(workspace, cohort_dir)
    passed = all(s["passed"] for s in status.values())
    provenance = json.loads((cohort_dir / "provenance.json").read_text())
    metrics = evaluated_metrics(workspace, cohort_id)

    data_versions = staging_build(context)
    with tempfile.TemporaryDirectory() as tmp:
        tables = Path(tmp) / "tables"
        tables.mkdir()
        # Only synthetic tables travel: the MIMIC-shaped ones and the marts-shaped ones.
        for sub in ("mimic", "marts"):
            for f in (workspace.layout.synthetic_cohort / sub).glob("*.parquet"):
                shutil.copy(f, tables / f.name)
        exports = release_exports(tables, Path(tmp), cohort_id)
        contents = {f"tables/{f.name}": pq.read_metadata(f).num_rows for f in sorted(tables.glob("*.parquet"))}
        contents.update({f"{name}/{file}": n for name, result in exports.items() for file, n in result.rows.items()})
        card_args = release_card_args(mlflow_tracking, provenance, status, passed, data_versions, cohort_id,
                                      n_visits=contents.get("tables/visits.parquet", "?"))
        card_args["coverage"] = cohort_coverage(read_coverage_tables(tables), contents)
        card = Path(tmp) / "release_card.md"
        card.write_text(_release_card(provenance, metrics, status, passed))
        datacard = Path(tmp) / "datacard.md"
        datacard.write_text(release_datacard(release_version=None, contents=contents, **card_args))
        run, version = log_release_run(context, mlflow_tracking, card, metrics, card_args["training"], tables,
                                       exports, datacard)
    client = mlflow_tracking.client()
    tags = release_tags(context, mlflow_tracking, provenance, status, passed, cohort_id)
    tag_models(client, mlflow_tracking, version, str(provenance["model_version"]), tags, card_args["training"])
    describe_models(client, mlflow_tracking, version, card_args, contents)
    move_champion(context, client, mlflow_tracking, version, str(provenance["model_version"]), status, passed)
    return dg.MaterializeResult(
        metadata={
            "release_model": mlflow_tracking.release_name,
            "release_version": version,
            "promoted_to_champion": passed,
            "validation_status": tags["validation_status"],
            "cohort_id": cohort_id,
            "checks": dg.MetadataValue.json(status),
            "generator_version": str(provenance["model_version"]),
            "mlflow_run_id": run.info.run_id,
            "mlflow_run": mlflow_tracking.run_url(run.info.run_id, run.info.experiment_id),
            "mlflow_model_version": mlflow_tracking.model_version_url(mlflow_tracking.release_name, version),
            "released_files": dg.MetadataValue.md(
                "| file | rows |\n|---|---:|\n" + "\n".join(f"| `{k}` | {v:,} |" for k, v in sorted(contents.items()))),
            "meds_dataset_version": exports["meds"].details["dataset_version"],
            "consume": dg.MetadataValue.md("\n".join(pull_instructions(
                mlflow_tracking.resolved_tracking_uri, mlflow_tracking.release_name, str(version),
                mlflow_tracking.model_name, str(provenance["model_version"]))[2:])),
        }
    )


def evaluated_metrics(workspace: WorkspaceResource, cohort_id: str) -> dict:
    """The published metrics of the evaluation; raises when it evaluated another cohort than the
    workspace holds."""
    evaluated = json.loads((workspace.layout.evaluation / "metrics.json").read_text())
    metrics = evaluated["metrics"]
    if evaluated.get("cohort_id") != cohort_id:
        raise dg.Failure(f"evaluation is stale: it evaluated cohort {evaluated.get('cohort_id')}, the workspace holds "
                         f"{cohort_id}; re-materialize evaluation")
    return metrics


def log_release_run(context: dg.AssetExecutionContext, mlflow_tracking: MlflowResource, card: Path, metrics: dict,
                    training, tables: Path, exports: dict, datacard: Path):
    """The release's MLflow run: the release card, the evaluation's metrics, the generator's training
    data as an input, and the tables, exports and datacard as a registered pyfunc model. Returns the
    run and the new release version."""
    import mlflow
    import pandas as pd

    from synehrgy_assets.mlflow_models import (
        RELEASE_INPUT_EXAMPLE, RELEASE_MODEL_CODE, input_example, release_signature, training_dataset,
    )  # fmt: skip

    with mlflow_tracking.start_run(context, run_name="synthetic_release", tags={"synehrgy.stage": "release"}) as run:
        mlflow.log_artifact(str(card))
        mlflow.log_metrics({k.replace("/", "."): float(v) for k, v in metrics.items()})
        if training is not None:  # what the generator of these patients learned from
            mlflow.log_input(training_dataset(training), context="generator_training")
        example = input_example(RELEASE_INPUT_EXAMPLE)
        info = mlflow.pyfunc.log_model(
            name="synthetic_cohort",
            python_model=str(RELEASE_MODEL_CODE),
            artifacts={"tables": str(tables), "mimic_csv": str(exports["mimic_csv"].out_dir),
                       "meds": str(exports["meds"].out_dir), "datacard": str(datacard)},
            signature=release_signature(pd.read_parquet(tables / f"{example['table'].iloc[0]}.parquet")),
            input_example=example,
            registered_model_name=mlflow_tracking.release_name,
        )
    return run, str(info.registered_model_version)


def release_tags(context: dg.AssetExecutionContext, mlflow_tracking: MlflowResource, provenance: dict,
                 status: dict, passed: bool, cohort_id: str) -> dict:
    """The release version's verdict and what made it, as model-version tags."""
    return {
        "validation_status": "passed" if passed else "failed",
        "gates_passed": f"{sum(1 for s in status.values() if s['passed'])}/{len(status)}",
        "generator_model": mlflow_tracking.model_name,
        "generator_version": str(provenance["model_version"]),
        "vocabulary_version": provenance["vocabulary_version"],
        "dagster_run_id": context.run.run_id,
        "cohort_id": cohort_id,
    }


def move_champion(context: dg.AssetExecutionContext, client, mlflow_tracking: MlflowResource, version: str,
                  gen_version: str, status: dict, passed: bool) -> None:
    """Point `champion` at the release and its generator when every gate passed; otherwise leave it
    where it was and log the failing gates."""
    if passed:
        client.set_registered_model_alias(mlflow_tracking.release_name, CHAMPION_ALIAS, version)
        client.set_registered_model_alias(mlflow_tracking.model_name, CHAMPION_ALIAS, gen_version)
        context.log.info(f"All checks passed: {mlflow_tracking.release_name} v{version} is now @{CHAMPION_ALIAS}")
    else:
        failed = "\n".join(f"  - {k}: {s['reason']}" for k, s in sorted(status.items()) if not s["passed"])
        context.log.warning(f"Release v{version} recorded as failed, @{CHAMPION_ALIAS} stays where it was. "
                            f"Failing gates:\n{failed}")


def read_coverage_tables(tables: Path) -> dict:
    """The columns of the released tables that `cohort_coverage` counts (Parquet files the release lacks
    are left out: counted as empty)."""
    import pandas as pd

    columns = {"visits": ["subject_id", "icu_database", "mortality_inhospital"],
               "visit_codes": ["subject_id", "code_type", "icd9_code"], "visit_phenotypes": ["subject_id", "phenotype"],
               "ICUSTAYS": ["subject_id", "first_careunit", "last_careunit"],
               "CHARTEVENTS": ["subject_id", "itemid"], "LABEVENTS": ["subject_id", "itemid"]}
    return {name: pd.read_parquet(tables / f"{name}.parquet", columns=cols)
            for name, cols in columns.items() if (tables / f"{name}.parquet").exists()}


def tag_models(client, mlflow_tracking: MlflowResource, version: str, gen_version: str, tags: dict,
               training) -> None:
    """The release version's tags (its verdict, what made it and its generator's training data), the
    generator version's verdict, and both registered models' tags; the release's `champion` tag names
    the version `@champion` points at once this release is judged, or says why none does."""
    from synehrgy_assets.mlflow_models import registered_model_tags, synehrgy_version

    release, generator = mlflow_tracking.release_name, mlflow_tracking.model_name
    for k, v in {**(training.tags() if training else {}), **tags, "synehrgy_version": synehrgy_version()}.items():
        client.set_model_version_tag(release, version, k, v)
    for k in ("validation_status", "gates_passed"):
        client.set_model_version_tag(generator, gen_version, k, tags[k])
    champion = version if tags["validation_status"] == "passed" else champion_version(client, release)
    for k, v in {**registered_model_tags("synthetic release", training),
                 "champion": champion or "none: no release has passed every gate"}.items():
        client.set_registered_model_tag(release, k, v)


def champion_version(client, name: str) -> str | None:
    try:
        return (client.get_registered_model(name).aliases or {}).get(CHAMPION_ALIAS)
    except Exception:  # noqa: BLE001 - a model without aliases
        return None


def staging_build(context: dg.AssetExecutionContext) -> dict[str, str]:
    """Which staging build the generator's data came from, read through the public instance API: the
    build marker recorded by `token_vocabulary` (`staging_build_id`, when recorded) and the Dagster run
    that last materialized the `visits` mart."""
    from synehrgy_assets.defs.staging import mart_key

    out = {}
    vocab = context.instance.get_latest_materialization_event(dg.AssetKey("token_vocabulary"))
    mat = vocab.asset_materialization if vocab is not None else None
    if mat is not None:
        for key in ("staging_build_id", "staging_built_at"):
            if key in mat.metadata:
                out[f"{key.replace('_', ' ')} (of the vocabulary's training data)"] = str(mat.metadata[key].value)
    event = context.instance.get_latest_materialization_event(mart_key("visits"))
    if event is not None:
        out["staging build (Dagster run of the `visits` mart)"] = event.run_id
    return out


def release_exports(tables: Path, tmp: Path, cohort_id: str) -> dict:
    """The release's MIMIC-III CSV folder and MEDS 0.4 dataset, built from its Parquet tables."""
    from synehrgy_assets.core.exports import SYNTHETIC_DATASET_NAME, read_parquet_cohort, write_meds, write_mimic_csv

    marts, mimic_tables = read_parquet_cohort(tables)
    return {
        "mimic_csv": write_mimic_csv(mimic_tables, tmp / "mimic_csv"),
        "meds": write_meds(marts, tmp / "meds", mimic_tables=mimic_tables,
                           dataset_name=f"{SYNTHETIC_DATASET_NAME} {cohort_id}"),
    }


def release_card_args(mlflow_tracking: MlflowResource, provenance: dict, status: dict, passed: bool,
                      data_versions: dict, cohort_id: str, n_visits="?") -> dict:
    from synehrgy_assets.core.training_data import TrainingData

    report = provenance.get("decode_report", {})
    gen_version = str(provenance["model_version"])
    run_id, training = "", None
    try:
        generator = mlflow_tracking.client().get_model_version(mlflow_tracking.model_name, gen_version)
        run_id = generator.run_id or ""
        training = TrainingData.from_tags(generator.tags or {})  # what the generator recorded when trained
    except Exception:  # noqa: BLE001 - the card then says '?' and "not recorded"
        pass
    return {
        "release_name": mlflow_tracking.release_name,
        "tracking_uri": mlflow_tracking.resolved_tracking_uri,
        "passed": passed,
        "gates": status,
        "cohort": {"cohort_id": cohort_id, "patients": provenance.get("n_patients"),
                   "visits": n_visits, "valid_sequences": report.get("n_valid"),
                   "sequences": report.get("n_sequences"), "seed": provenance.get("seed"),
                   "temperature": provenance.get("temperature"), "top_k": provenance.get("top_k"),
                   "top_p": provenance.get("top_p")},
        "generator": {"name": mlflow_tracking.model_name, "version": gen_version, "mlflow_run_id": run_id,
                      "vocabulary_version": provenance.get("vocabulary_version")},
        "data_versions": data_versions,
        "training": training,
    }


def describe_models(client, mlflow_tracking: MlflowResource, version: str, card_args: dict,
                    contents: dict) -> None:
    """The datacards as registry descriptions: the release's registered model (latest release) and
    version, and the generator's registered model and the version that made this release."""
    from synehrgy_assets.core.datacard import generator_datacard, release_datacard

    champion = version if card_args["passed"] else champion_version(client, mlflow_tracking.release_name)
    statuses = {str(v.version): (v.tags or {}).get("validation_status", "untagged")
                for v in client.search_model_versions(f"name = '{mlflow_tracking.release_name}'")}
    card = release_datacard(release_version=version, contents=contents,
                            champion=champion_line(mlflow_tracking.release_name, champion, statuses), **card_args)
    client.update_registered_model(mlflow_tracking.release_name, description=card)
    client.update_model_version(mlflow_tracking.release_name, version, description=card)
    gen = card_args["generator"]
    common = dict(generator_name=gen["name"], tracking_uri=card_args["tracking_uri"],
                  release_name=mlflow_tracking.release_name)
    client.update_registered_model(gen["name"], description=generator_datacard(
        generator_version=None, training=card_args["training"], **common))
    client.update_model_version(gen["name"], gen["version"], description=generator_datacard(
        generator_version=gen["version"], vocabulary_version=gen["vocabulary_version"],
        mlflow_run_id=gen["mlflow_run_id"], data_versions=card_args["data_versions"],
        release={"version": version, "cohort_id": card_args["cohort"]["cohort_id"]}, gates=card_args["gates"],
        training=card_args["training"], **common))


def _release_card(provenance: dict, metrics: dict, status: dict, passed: bool) -> str:
    lines = [
        "# Synthetic MIMIC-III release (SynEHRgy)",
        "",
        f"- validation: **{'passed' if passed else 'FAILED'}**",
        f"- cohort: {provenance['cohort_id']}",
        f"- generator: version {provenance['model_version']}, vocabulary {provenance['vocabulary_version']}",
        f"- sampling: seed {provenance['seed']}, temperature {provenance['temperature']}, top_k {provenance['top_k']}",
        f"- decoded: {provenance['decode_report']['n_valid']} of {provenance['decode_report']['n_sequences']} sequences valid",
        "",
        "Every row is synthetic. No real patient row is part of this release.",
        "",
        "## Checks",
        *[f"- {k}: {v['status']} ({v['reason']})" for k, v in sorted(status.items())],
        "",
        "## Metrics",
        *[f"- {k}: {float(v):.4f}" for k, v in sorted(metrics.items())],
    ]
    return "\n".join(lines) + "\n"
