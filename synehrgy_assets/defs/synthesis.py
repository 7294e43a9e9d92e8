"""Stage 4: sample synthetic token sequences and decode them into a synthetic cohort."""


import json
import shutil
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from synehrgy_assets.defs.gates import cohort_fingerprint
from synehrgy_assets.defs.tokens import tokens_dir, vocabulary_path
from synehrgy_assets.defs.training import CANDIDATE_ALIAS, gpt_checkpoint
from synehrgy_assets.resources import MlflowResource, WorkspaceResource, write_json

SYNTHETIC_SCHEMA = "synthetic"  # marts-shaped synthetic tables (same shape as the real marts)
SYNTHETIC_MIMIC_SCHEMA = "synthetic_mimic"  # MIMIC-III-shaped synthetic tables
MART_TABLES = ("visits", "visit_codes", "visit_phenotypes", "measurements")


class SyntheticSequencesConfig(dg.Config):
    n_patients: int = Field(default=0, description="Patients to generate; 0 = as many as in the train split.")
    temperature: float = Field(default=1.0, description="Sampling temperature; 0 = greedy.")
    top_k: int = Field(default=0, description="Sample among the k most likely tokens; 0 = no top-k truncation.")
    top_p: float = Field(
        default=0.0,
        description="Nucleus sampling after top-k: the smallest set of most likely tokens holding probability "
        "top_p, in (0, 1]; 0 = off.",
    )
    max_tokens_per_patient: int = Field(
        default=0,
        description="Cap on each patient's generated tokens; the grammar closes a patient that reaches it (a "
        "forced closure). 0 = the tokenizer's `max_tokens_per_patient_default` in tokens summary.json (at least "
        "the 99.9th percentile of train lengths), else 4 * n_ctx. Patients longer than n_ctx slide the window.",
    )
    batch_size: int = Field(
        default=64, description="Rows decoded together; a row whose patient ends takes the next patient at once."
    )
    seed: int = Field(default=0, description="Sampler seed: the same seed, device and config give the same sequences.")
    model_alias: str = Field(default=CANDIDATE_ALIAS, description="Registry alias of the generator to use.")
    device: str = Field(default="auto", description="'auto' (CUDA when available), 'cpu' or 'cuda[:i]'.")


# At most this share of patients may reach the length cap before closing on their own (asset
# check `forced_closure_rate`): more means the cap truncates the model's distribution of lengths.
MAX_FORCED_CLOSURE_RATE = 0.01


def synthetic_dir(workspace: WorkspaceResource) -> Path:
    return workspace.artifacts_dir / "synthetic"


def load_generator(mlflow_tracking: MlflowResource, alias: str, device):
    """Download the registered generator by alias and load its safetensors checkpoint."""
    import mlflow

    from synehrgy_assets.core.model import load_checkpoint
    from synehrgy_assets.core.tokens import TokenVocabulary

    client = mlflow_tracking.client()
    mv = client.get_model_version_by_alias(mlflow_tracking.model_name, alias)
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{mlflow_tracking.model_name}@{alias}")
    )
    ckpt = next(local.rglob("config.json")).parent
    vocab_file = next(local.rglob("token_vocabulary.json"))
    return load_checkpoint(ckpt, device=device), TokenVocabulary.from_json(vocab_file), mv


@dg.asset(
    group_name="synthesis",
    deps=[gpt_checkpoint],
    kinds={"pytorch"},
    description="Synthetic token sequences from the registered generator (KV-cached, grammar-constrained).",
)
def synthetic_sequences(
    context: dg.AssetExecutionContext,
    config: SyntheticSequencesConfig,
    workspace: WorkspaceResource,
    mlflow_tracking: MlflowResource,
) -> dg.MaterializeResult:
    from synehrgy_assets.core.generation import flatten, generate_sequences
    from synehrgy_assets.core.trainer import resolve_device

    device = resolve_device(config.device)
    model, vocab, mv = load_generator(mlflow_tracking, config.model_alias, device)
    summary_path = tokens_dir(workspace) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    n = config.n_patients or summary["splits"]["train"]["patients"]
    cap, cap_source = max_tokens_per_patient(config, summary, model.config.n_ctx)

    def on_progress(done: int, total: int) -> None:
        context.log.info(f"generated {done}/{total} patients")

    context.log.info(
        f"Sampling {n} patients with {mlflow_tracking.model_name} v{mv.version} on {device} "
        f"({config.batch_size} rows, at most {cap} tokens per patient: {cap_source})"
    )
    result = generate_sequences(
        model,
        vocab,
        n,
        seed=config.seed,
        temperature=config.temperature,
        top_k=config.top_k or None,
        top_p=config.top_p or None,
        batch_size=config.batch_size,
        device=device,
        max_tokens_per_patient=cap,
        on_progress=on_progress,
    )
    flat, offsets = flatten(result.sequences)
    out = synthetic_dir(workspace) / "sequences"
    tmp = out.with_name("sequences.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "tokens.npy", flat)
    np.save(tmp / "offsets.npy", offsets)
    np.save(tmp / "forced.npy", result.forced)  # per patient: closed by the length cap
    write_json(
        tmp / "provenance.json",
        {"model_name": mlflow_tracking.model_name, "model_version": mv.version, "alias": config.model_alias,
         "vocabulary_version": vocab.version, "seed": config.seed, "temperature": config.temperature,
         "top_k": config.top_k, "top_p": config.top_p, "n_patients": n,
         "max_tokens_per_patient": cap, "max_tokens_per_patient_source": cap_source,
         "n_forced_closures": int(result.n_forced_closures),
         "forced_closure_rate": float(result.forced_closure_rate), "n_rolls": int(result.n_rolls),
         "sampler": result.summary()},
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    lengths = np.diff(offsets)
    return dg.MaterializeResult(
        metadata={
            "patients": n,
            "forced_closures": int(result.n_forced_closures),
            "forced_closure_rate": float(result.forced_closure_rate),
            "rolls": int(result.n_rolls),
            "max_tokens_per_patient": cap,
            "max_tokens_per_patient_source": cap_source,
            "tokens": int(flat.size),
            "tokens_per_patient_mean": float(lengths.mean()) if n else 0.0,
            "tokens_per_patient_p50": float(np.median(lengths)) if n else 0.0,
            "patients_per_second": round(float(result.patients_per_second), 2),
            "tokens_per_second": round(float(result.tokens_per_second), 1),
            "row_utilization": round(float(result.row_utilization), 4),
            "model_version": str(mv.version),
            "vocabulary_version": vocab.version,
        }
    )


def max_tokens_per_patient(config: SyntheticSequencesConfig, summary: dict, n_ctx: int) -> tuple[int, str]:
    """The length cap and where it came from: the config, the tokenizer's default, or 4 * n_ctx."""
    if config.max_tokens_per_patient < 0:
        raise ValueError(f"max_tokens_per_patient must be >= 0 (0 = default), got {config.max_tokens_per_patient}")
    if config.max_tokens_per_patient:
        return int(config.max_tokens_per_patient), "config"
    if summary.get("max_tokens_per_patient_default"):
        return int(summary["max_tokens_per_patient_default"]), "tokens summary.json"
    return 4 * int(n_ctx), "4 * n_ctx"


@dg.asset_check(
    asset=synthetic_sequences,
    description=(
        f"At most {MAX_FORCED_CLOSURE_RATE:.0%} of the patients were closed by the length cap "
        "(max_tokens_per_patient) instead of ending on their own."
    ),
)
def forced_closure_rate(workspace: WorkspaceResource) -> dg.AssetCheckResult:
    path = synthetic_dir(workspace) / "sequences" / "provenance.json"
    provenance = json.loads(path.read_text())
    if "forced_closure_rate" not in provenance:
        return dg.AssetCheckResult(
            passed=False, description=f"{path} records no forced_closure_rate: re-materialize synthetic_sequences"
        )
    rate = float(provenance["forced_closure_rate"])
    return dg.AssetCheckResult(
        passed=bool(rate <= MAX_FORCED_CLOSURE_RATE),
        metadata={
            "forced_closure_rate": rate,
            "n_forced_closures": int(provenance.get("n_forced_closures", -1)),
            "n_patients": int(provenance.get("n_patients", -1)),
            "max_forced_closure_rate": MAX_FORCED_CLOSURE_RATE,
            "max_tokens_per_patient": int(provenance.get("max_tokens_per_patient", -1)),
        },
    )


synthesis_checks = [forced_closure_rate]


@dg.asset(
    group_name="synthesis",
    deps=[synthetic_sequences],
    kinds={"duckdb", "parquet"},
    description=(
        "The decoded synthetic cohort: marts-shaped tables (schema `synthetic`) and MIMIC-III-shaped tables "
        "(schema `synthetic_mimic`) in DuckDB, plus Parquet copies."
    ),
)
def synthetic_cohort(
    context: dg.AssetExecutionContext, workspace: WorkspaceResource, mlflow_tracking: MlflowResource
) -> dg.MaterializeResult:
    from synehrgy_assets.core.decoder import cohort_to_mimic_tables
    from synehrgy_assets.core.generation import unflatten
    from synehrgy_assets.core.tokens import TokenVocabulary, decode

    seq_dir = synthetic_dir(workspace) / "sequences"
    provenance = json.loads((seq_dir / "provenance.json").read_text())
    vocab = TokenVocabulary.from_json(vocabulary_path(workspace))
    if vocab.version != provenance["vocabulary_version"]:
        raise ValueError(
            f"synthetic_sequences used vocabulary {provenance['vocabulary_version']}, the workspace has "
            f"{vocab.version}: re-materialize synthetic_sequences"
        )
    started = time.perf_counter()
    sequences = unflatten(np.load(seq_dir / "tokens.npy"), np.load(seq_dir / "offsets.npy"))
    cohort, report = decode(sequences, vocab, seed=int(provenance["seed"]))
    mimic_tables = cohort_to_mimic_tables(cohort, seed=int(provenance["seed"]))
    marts = dict(zip(MART_TABLES, cohort.frames()))

    parquet_dir = synthetic_dir(workspace) / "cohort"
    tmp = parquet_dir.with_name("cohort.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "mimic").mkdir(parents=True)
    (tmp / "marts").mkdir(parents=True)
    for name, frame in mimic_tables.items():
        frame.to_parquet(tmp / "mimic" / f"{name}.parquet", index=False)
    for name, frame in marts.items():
        frame.to_parquet(tmp / "marts" / f"{name}.parquet", index=False)
    # What the gates judge and the release promotes: a hash of exactly these tables (defs/gates.py).
    cohort_id = cohort_fingerprint(tmp)
    write_json(tmp / "provenance.json", {**provenance, "decode_report": _report_dict(report), "cohort_id": cohort_id})

    # One transaction: readers see either the previous synthetic cohort or the new one, never half.
    with workspace.connect() as con:
        con.execute("begin transaction")
        try:
            for schema, tables in ((SYNTHETIC_SCHEMA, marts), (SYNTHETIC_MIMIC_SCHEMA, mimic_tables)):
                con.execute(f"create schema if not exists {schema}")
                for name, frame in tables.items():
                    con.register("_frame", frame)
                    con.execute(f'create or replace table {schema}."{name}" as select * from _frame')
                    con.unregister("_frame")
            con.execute("commit")
        except Exception:
            con.execute("rollback")
            raise
    shutil.rmtree(parquet_dir, ignore_errors=True)
    tmp.rename(parquet_dir)
    counts = {f"rows/{SYNTHETIC_MIMIC_SCHEMA}.{k}": int(len(v)) for k, v in mimic_tables.items()}
    return dg.MaterializeResult(
        data_version=dg.DataVersion(cohort_id),
        metadata={
            "cohort_id": cohort_id,
            "patients": int(cohort.n_patients),
            "visits": int(len(cohort.visits)),
            "valid_sequences": int(report.n_valid),
            "invalid_sequences": int(report.n_invalid),
            "validity_rate": float(report.n_valid / max(report.n_sequences, 1)),
            "invalid_reasons": dg.MetadataValue.json(dict(report.reasons)),
            **counts,
            "parquet_dir": dg.MetadataValue.path(str(parquet_dir)),
            "duckdb_schemas": f"{SYNTHETIC_SCHEMA}, {SYNTHETIC_MIMIC_SCHEMA}",
            "model_version": str(provenance["model_version"]),
            "seconds": round(time.perf_counter() - started, 2),
            "preview_visits": dg.MetadataValue.md(cohort.visits.head(10).to_markdown(index=False)),
        }
    )


def _report_dict(report) -> dict:
    return {
        "n_sequences": int(report.n_sequences),
        "n_valid": int(report.n_valid),
        "n_invalid": int(report.n_invalid),
        "reasons": {str(k): int(v) for k, v in dict(report.reasons).items()},
    }


def load_synthetic_cohort(workspace: WorkspaceResource):
    from synehrgy_assets.core.cohort import StagedCohort

    parquet_dir = synthetic_dir(workspace) / "cohort" / "marts"
    return StagedCohort(*(pd.read_parquet(parquet_dir / f"{t}.parquet") for t in MART_TABLES))
