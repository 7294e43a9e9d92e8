"""Stage 4: sample synthetic token sequences and decode them into a synthetic cohort."""


import json
import os
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from synehrgy_assets.core.exports import MART_TABLES
from synehrgy_assets.core.output_dirs import staged_dir
from synehrgy_assets.core.release_gates import GateThresholds
from synehrgy_assets.defs._metadata import Progress
from synehrgy_assets.defs.gates import cohort_fingerprint
from synehrgy_assets.defs.training import CANDIDATE_ALIAS, gpt_checkpoint
from synehrgy_assets.resources import MlflowResource, WorkspaceResource, write_json

SYNTHETIC_SCHEMA = "synthetic"  # marts-shaped synthetic tables (same shape as the real marts)
SYNTHETIC_MIMIC_SCHEMA = "synthetic_mimic"  # MIMIC-III-shaped synthetic tables


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
        "forced closure). 0 = the cap stored with the generator (the tokenizer's `max_tokens_per_patient_default`, "
        "at least the 99.9th percentile of train lengths), else 4 * n_ctx. Patients longer than n_ctx slide the "
        "window.",
    )
    batch_size: int = Field(
        default=64, description="Rows decoded together; a row whose patient ends takes the next patient at once."
    )
    seed: int = Field(default=0, description="Sampler seed: the same seed, device and config give the same sequences.")
    model_alias: str = Field(default=CANDIDATE_ALIAS, description="Registry alias of the generator to use.")
    device: str = Field(default="auto", description="'auto' (CUDA when available), 'cpu' or 'cuda[:i]'.")
    progress_every_seconds: float = Field(
        default=10.0, description="At most one progress observation (patients done / total, ETA) per this many seconds.")
    from_shards: int = Field(
        default=0, description="0 = sample here. k > 0 = sample nothing and assemble the first k partitions of "
        "synthetic_sequence_shards (shard-000 ... in key order; each must exist, from one generator and config) "
        "into these sequences, so many workers can generate one cohort (docs/architecture.md).")

    def sampling_params(self, seed: int):
        from synehrgy_assets.core.generation import SamplingParams

        return SamplingParams(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                              max_tokens_per_patient=self.max_tokens_per_patient, batch_size=self.batch_size,
                              seed=seed, device=self.device)


# At most this share of patients may reach the length cap before closing on their own (asset
# check `forced_closure_rate`): more means the cap truncates the model's distribution of lengths.
MAX_FORCED_CLOSURE_RATE = GateThresholds().max_forced_closure_rate


def load_generator(mlflow_tracking: MlflowResource, alias: str, device):
    """The registered generator by alias, as `core/generation.Generator` (the CLI's and the pyfunc's
    loader), and its model version."""
    import mlflow

    from synehrgy_assets.core.generation import Generator

    mv = mlflow_tracking.client().get_model_version_by_alias(mlflow_tracking.model_name, alias)
    uri = f"models:/{mlflow_tracking.model_name}@{alias}"
    return Generator.from_artifacts(mlflow.artifacts.download_artifacts(uri), device=device, source=uri), mv


@dg.asset(
    group_name="synthesis",
    deps=[gpt_checkpoint],
    kinds={"pytorch", "mlflow"},
    description="Synthetic token sequences from the registered generator (KV-cached, grammar-constrained).",
)
def synthetic_sequences(
    context: dg.AssetExecutionContext,
    config: SyntheticSequencesConfig,
    workspace: WorkspaceResource,
    mlflow_tracking: MlflowResource,
) -> dg.MaterializeResult:
    if config.from_shards:
        return dg.MaterializeResult(metadata=assemble_shards(workspace, config.from_shards, config.seed))
    summary_path = workspace.layout.token_summary
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    n = config.n_patients or summary["splits"]["train"]["patients"]
    metadata = sample_to(context, config, workspace, mlflow_tracking, n, config.seed,
                         workspace.layout.synthetic_sequences, summary)
    return dg.MaterializeResult(metadata=metadata)


def sample_to(context, config: SyntheticSequencesConfig, workspace: WorkspaceResource,
              mlflow_tracking: MlflowResource, n: int, seed: int, out: Path, summary: dict,
              extra_provenance: dict | None = None) -> dict:
    """Sample `n` patients with `seed` and write them to `out` (tokens.npy, offsets.npy, forced.npy,
    provenance.json), atomically; returns the asset metadata."""
    from synehrgy_assets.core.generation import flatten

    params = config.sampling_params(seed)
    generator, mv = load_generator(mlflow_tracking, config.model_alias, params.device)
    vocab = generator.vocabulary
    cap, cap_source = generator.length_cap(params)
    progress = Progress(context, every_seconds=config.progress_every_seconds)
    progress.report(0.0, force=True, patients_done=0, patients_total=n)

    def on_progress(done: int, total: int) -> None:
        context.log.info(f"generated {done}/{total} patients")
        progress.report(done / max(total, 1), force=done == total, patients_done=done, patients_total=total)

    context.log.info(
        f"Sampling {n} patients with {mlflow_tracking.model_name} v{mv.version} on {generator.device} "
        f"({config.batch_size} rows, at most {cap} tokens per patient: {cap_source}, seed {seed})"
    )
    result = generator.sample(n, params, on_progress=on_progress)
    flat, offsets = flatten(result.sequences)
    with staged_dir(out) as tmp:
        np.save(tmp / "tokens.npy", flat)
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "forced.npy", result.forced)  # per patient: closed by the length cap
        write_json(
            tmp / "provenance.json",
            {"model_name": mlflow_tracking.model_name, "model_version": mv.version, "alias": config.model_alias,
             "vocabulary_version": vocab.version, "seed": seed, "temperature": config.temperature,
             "top_k": config.top_k, "top_p": config.top_p, "n_patients": n,
             "max_tokens_per_patient": cap, "max_tokens_per_patient_source": cap_source,
             "n_forced_closures": int(result.n_forced_closures),
             "forced_closure_rate": float(result.forced_closure_rate), "n_rolls": int(result.n_rolls),
             "sampler": result.summary(), **(extra_provenance or {})},
        )
    lengths = np.diff(offsets)
    return {
        "patients": n,
        "seed": seed,
        "forced_closures": int(result.n_forced_closures),
        "forced_closure_rate": float(result.forced_closure_rate),
        "rolls": int(result.n_rolls),
        "max_tokens_per_patient": cap,
        "max_tokens_per_patient_source": cap_source,
        "tokens": int(flat.size),
        "tokens_per_patient_mean": float(lengths.mean()) if n else 0.0,
        "tokens_per_patient_p50": float(np.median(lengths)) if n else 0.0,
        "patients_per_second": round(float(result.patients_per_second), 2),
        # sampling throughput (not the trainer's final_train_tokens_per_second)
        "generated_tokens_per_second": round(float(result.tokens_per_second), 1),
        "row_utilization": round(float(result.row_utilization), 4),
        "model_version": str(mv.version),
        "mlflow_model_version": mlflow_tracking.model_version_url(mlflow_tracking.model_name, mv.version),
        "vocabulary_version": vocab.version,
    }


@dg.asset_check(
    asset=synthetic_sequences,
    description=(
        f"At most {MAX_FORCED_CLOSURE_RATE:.0%} of the patients were closed by the length cap "
        "(max_tokens_per_patient) instead of ending on their own."
    ),
)
def forced_closure_rate(workspace: WorkspaceResource) -> dg.AssetCheckResult:
    path = workspace.layout.synthetic_sequences / "provenance.json"
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


# ---- Partitioned generation: static shards, each seeded from its key --------------------------
GENERATION_SHARDS = int(os.environ.get("SYNEHRGY_GENERATION_SHARDS", "8"))
shard_partitions = dg.StaticPartitionsDefinition([f"shard-{i:03d}" for i in range(GENERATION_SHARDS)])


def shard_index(key: str) -> int:
    if not key.startswith("shard-") or not key[6:].isdigit():
        raise ValueError(f"not a generation shard key: {key!r} (expected shard-000, shard-001, ...)")
    return int(key[6:])


def shard_seed(seed: int, key: str) -> int:
    """The sampler seed of one shard: independent streams from (config seed, shard index)."""
    return int(np.random.SeedSequence([int(seed), shard_index(key)]).generate_state(1, dtype=np.uint32)[0])


class SyntheticShardConfig(SyntheticSequencesConfig):
    n_patients: int = Field(
        default=0, description="Patients per shard; 0 = the train split's patients / the number of shards, rounded up.")


@dg.asset(
    group_name="synthesis_shards",
    deps=[gpt_checkpoint],
    kinds={"pytorch", "mlflow"},
    partitions_def=shard_partitions,
    description=(
        "Synthetic token sequences in static shards of N patients (partitions shard-000 ...; "
        "SYNEHRGY_GENERATION_SHARDS, default 8), each sampled with a seed derived from the config seed and its "
        "key, so shards can be generated in parallel (a backfill) and their union is reproducible. "
        "`synthetic_sequences` with from_shards=k assembles them. Not part of the end-to-end job."
    ),
)
def synthetic_sequence_shards(
    context: dg.AssetExecutionContext,
    config: SyntheticShardConfig,
    workspace: WorkspaceResource,
    mlflow_tracking: MlflowResource,
) -> dg.MaterializeResult:
    key = context.partition_key
    summary_path = workspace.layout.token_summary
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    n = config.n_patients or -(-int(summary["splits"]["train"]["patients"]) // len(shard_partitions.get_partition_keys()))
    seed = shard_seed(config.seed, key)
    metadata = sample_to(context, config, workspace, mlflow_tracking, n, seed, workspace.layout.synthetic_shards / key, summary,
                         extra_provenance={"shard": key, "base_seed": config.seed})
    return dg.MaterializeResult(metadata={"shard": key, "base_seed": config.seed, **metadata})


# Provenance fields every assembled shard must share.
_SHARED = ("model_name", "model_version", "alias", "vocabulary_version", "base_seed", "temperature", "top_k",
           "top_p", "max_tokens_per_patient")


def assemble_shards(workspace: WorkspaceResource, k: int, seed: int) -> dict:
    """Concatenate shard-000 ... shard-(k-1) into `synthetic/sequences` (the layout synthetic_cohort
    reads), atomically. Fails naming the shard when one is missing or differs in generator/config."""
    keys = [f"shard-{i:03d}" for i in range(int(k))]
    provs, parts = [], []
    for key in keys:
        d = workspace.layout.synthetic_shards / key
        if not (d / "provenance.json").is_file():
            raise FileNotFoundError(f"from_shards={k}: {d} is missing: materialize partition {key} of "
                                    "synthetic_sequence_shards first")
        prov = json.loads((d / "provenance.json").read_text())
        if prov.get("base_seed") != seed:
            raise ValueError(f"from_shards: {key} was sampled with seed {prov.get('base_seed')}, this config has "
                             f"seed {seed}: materialize the shards with the same seed")
        if provs and any(prov.get(f) != provs[0].get(f) for f in _SHARED):
            diff = {f: (provs[0].get(f), prov.get(f)) for f in _SHARED if prov.get(f) != provs[0].get(f)}
            raise ValueError(f"from_shards: {key} differs from {keys[0]} in {diff}: re-materialize the shards "
                             "with one generator and config")
        provs.append(prov)
        parts.append((np.load(d / "tokens.npy"), np.load(d / "offsets.npy"), np.load(d / "forced.npy")))
    flat = np.concatenate([p[0] for p in parts])
    starts = np.cumsum([0] + [len(p[0]) for p in parts[:-1]])
    offsets = np.concatenate([parts[0][1][:1]] + [p[1][1:] + s for p, s in zip(parts, starts)])
    forced = np.concatenate([p[2] for p in parts])
    n = int(len(offsets) - 1)
    provenance = {f: provs[0].get(f) for f in _SHARED if f != "base_seed"}
    provenance.update({
        "seed": seed, "n_patients": n, "max_tokens_per_patient_source": provs[0].get("max_tokens_per_patient_source"),
        "n_forced_closures": int(forced.sum()), "forced_closure_rate": float(forced.mean()) if n else 0.0,
        "n_rolls": int(sum(p.get("n_rolls", 0) for p in provs)),
        "shards": [{"shard": p["shard"], "seed": p["seed"], "n_patients": p["n_patients"]} for p in provs],
    })
    with staged_dir(workspace.layout.synthetic_sequences) as tmp:
        np.save(tmp / "tokens.npy", flat)
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "forced.npy", forced)
        write_json(tmp / "provenance.json", provenance)
    return {"patients": n, "seed": seed, "shards": len(keys), "forced_closures": int(forced.sum()),
            "forced_closure_rate": provenance["forced_closure_rate"], "tokens": int(flat.size),
            "model_version": str(provenance["model_version"]), "vocabulary_version": provenance["vocabulary_version"]}


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
    from synehrgy_assets.core.mimic_writer import cohort_to_mimic_tables
    from synehrgy_assets.core.generation import unflatten
    from synehrgy_assets.core.tokens import TokenVocabulary, decode

    seq_dir = workspace.layout.synthetic_sequences
    provenance = json.loads((seq_dir / "provenance.json").read_text())
    vocab = TokenVocabulary.from_json(workspace.layout.vocabulary)
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

    parquet_dir = workspace.layout.synthetic_cohort
    with staged_dir(parquet_dir) as tmp:
        (tmp / "mimic").mkdir()
        (tmp / "marts").mkdir()
        for name, frame in mimic_tables.items():
            frame.to_parquet(tmp / "mimic" / f"{name}.parquet", index=False)
        for name, frame in marts.items():
            frame.to_parquet(tmp / "marts" / f"{name}.parquet", index=False)
        # What the gates judge and the release promotes: a hash of exactly these tables (defs/gates.py).
        cohort_id = cohort_fingerprint(tmp)
        write_json(tmp / "provenance.json",
                   {**provenance, "decode_report": _report_dict(report), "cohort_id": cohort_id})

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

    parquet_dir = workspace.layout.synthetic_cohort / "marts"
    return StagedCohort(*(pd.read_parquet(parquet_dir / f"{t}.parquet") for t in MART_TABLES))
