"""Generate synthetic patients from a registered generator without the Dagster graph.

Used by `python -m orchestration.cli generate` and by the generator's MLflow pyfunc
(`mlflow_models/generator_model.py`), so both give the same tables for the same seed:

    sample (KV-cached, grammar-constrained) -> decode tokens -> marts-shaped cohort
    -> MIMIC-III-shaped tables (`core/decoder.py`) -> Parquet | MIMIC CSV | MEDS (`core/exports.py`)

The generator is read from any MLflow registry: `models:/synehrgy-gpt@champion`,
`models:/synehrgy-gpt@candidate`, `models:/synehrgy-gpt/3` (or the short forms `@champion`, `3`).
Its artifacts are a safetensors checkpoint (`config.json` + `model.safetensors`, loaded without
unpickling) and the token vocabulary (`token_vocabulary.json`).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

DEFAULT_GENERATOR = "synehrgy-gpt"


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the local workspace's store (`sqlite:///<SYNEHRGY_HOME>/mlflow.db`)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = Path(os.environ.get("SYNEHRGY_HOME") or Path.cwd() / ".synehrgy").resolve()
    return f"sqlite:///{home / 'mlflow.db'}"


def resolve_model_uri(model: str, default_name: str = DEFAULT_GENERATOR) -> str:
    """`models:/name@alias` and `models:/name/version` as given; `@alias`, `alias` or `version` of the
    default generator otherwise."""
    model = model.strip()
    if model.startswith("models:/"):
        if not re.fullmatch(r"models:/[^/@]+(@[\w.-]+|/\d+)", model):
            raise ValueError(f"model URI {model!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
        return model
    if model.isdigit():
        return f"models:/{default_name}/{model}"
    alias = model[1:] if model.startswith("@") else model
    if not re.fullmatch(r"[\w.-]+", alias):
        raise ValueError(f"model {model!r}: expected a models:/ URI, an @alias or a version number")
    return f"models:/{default_name}@{alias}"


@dataclass
class GeneratedCohort:
    """One generation: the marts-shaped tables, the MIMIC-III-shaped tables and the run's figures."""

    marts: dict[str, pd.DataFrame]
    mimic_tables: dict[str, pd.DataFrame]
    stats: dict = field(default_factory=dict)

    def table(self, name: str) -> pd.DataFrame:
        if name in self.marts:
            return self.marts[name]
        if name in self.mimic_tables:
            return self.mimic_tables[name]
        raise ValueError(f"no table {name!r}; available: {sorted(self.marts) + sorted(self.mimic_tables)}")


class Generator:
    """A loaded generator: the GPT on its device, the vocabulary and the length cap it was trained with."""

    def __init__(self, checkpoint_dir: str | Path, vocabulary_file: str | Path, device: str = "auto",
                 source: str = ""):
        from synehrgy_assets.core.model import load_checkpoint, read_checkpoint_config
        from synehrgy_assets.core.tokens import TokenVocabulary
        from synehrgy_assets.core.trainer import resolve_device

        self.device = resolve_device(device)
        self.model = load_checkpoint(checkpoint_dir, device=self.device)
        extra = read_checkpoint_config(checkpoint_dir).get("extra", {})
        self.max_tokens_per_patient = extra.get("max_tokens_per_patient")
        self.mlflow_run_id = extra.get("mlflow_run_id")
        self.vocabulary = TokenVocabulary.from_json(vocabulary_file)
        self.source = source

    def to(self, device: str) -> "Generator":
        """Move the model to `device` (auto|cpu|cuda)."""
        from synehrgy_assets.core.trainer import resolve_device

        self.device = resolve_device(device)
        self.model.to(self.device)
        return self

    @classmethod
    def from_artifacts(cls, local_dir: str | Path, device: str = "auto", source: str = "") -> "Generator":
        """From a downloaded model folder: the checkpoint is the folder holding `config.json` and
        `model.safetensors`, the vocabulary is `token_vocabulary.json`."""
        local = Path(local_dir)
        ckpts = [p.parent for p in local.rglob("config.json") if (p.parent / "model.safetensors").is_file()]
        vocabs = list(local.rglob("token_vocabulary.json"))
        if not ckpts or not vocabs:
            raise FileNotFoundError(
                f"{local}: not a synehrgy generator (expected a checkpoint folder with config.json and "
                f"model.safetensors, and token_vocabulary.json; found {len(ckpts)} and {len(vocabs)})")
        return cls(ckpts[0], vocabs[0], device=device, source=source)

    def generate(self, n_patients: int, *, seed: int = 0, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, batch_size: int = 64, max_tokens_per_patient: int | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> GeneratedCohort:
        """Sample `n_patients`, decode them and build every table (the synthesis assets' steps).

        `max_tokens_per_patient` caps each patient's tokens (None = the cap stored with the weights: the
        tokenizer's default the graph used); the grammar closes a patient that reaches it."""
        from synehrgy_assets.core.decoder import cohort_to_mimic_tables
        from synehrgy_assets.core.exports import MART_TABLES
        from synehrgy_assets.core.generation import generate_sequences
        from synehrgy_assets.core.tokens import decode

        if n_patients < 1:
            raise ValueError(f"n_patients must be >= 1, got {n_patients}")
        started = time.perf_counter()
        result = generate_sequences(
            self.model, self.vocabulary, int(n_patients), seed=int(seed), temperature=float(temperature),
            top_k=top_k or None, top_p=top_p or None, batch_size=int(batch_size), device=self.device,
            max_tokens_per_patient=max_tokens_per_patient or self.max_tokens_per_patient, on_progress=on_progress,
        )
        sampled = time.perf_counter()
        cohort, report = decode(result.sequences, self.vocabulary, seed=int(seed))
        mimic_tables = cohort_to_mimic_tables(cohort, seed=int(seed))
        stats = {
            "n_patients": int(n_patients), "seed": int(seed), "device": str(self.device),
            "valid_sequences": int(report.n_valid), "invalid_sequences": int(report.n_invalid),
            "forced_closures": int(result.n_forced_closures), "sample_seconds": round(sampled - started, 2),
            "decode_seconds": round(time.perf_counter() - sampled, 2),
            "tokens_per_second": round(float(result.tokens_per_second), 1),
        }
        return GeneratedCohort(dict(zip(MART_TABLES, cohort.frames())), mimic_tables, stats)


def load_generator(model: str, *, tracking_uri: str | None = None, device: str = "auto",
                   dst_path: str | Path | None = None) -> Generator:
    """Download a registered generator (any MLflow registry) and load it on `device` (auto|cpu|cuda)."""
    import mlflow

    uri = resolve_model_uri(model)
    tracking_uri = tracking_uri or default_tracking_uri()
    from synehrgy_assets.resources import point_mlflow_at

    point_mlflow_at(tracking_uri)
    try:
        local = mlflow.artifacts.download_artifacts(uri, dst_path=str(dst_path) if dst_path else None,
                                                    tracking_uri=tracking_uri)
    except Exception as exc:  # MlflowException / RestException: say what was asked, where
        raise ValueError(f"cannot read {uri} from {tracking_uri}: {exc}") from exc
    return Generator.from_artifacts(local, device=device, source=uri)


def progress_printer(total: int, label: str = "patients"):
    """A progress callback (done, total): a tqdm bar on stderr (tqdm comes with dagster), else a plain
    stderr line. Returns (callback, close)."""
    import sys

    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency of dagster
        tqdm = None
    if tqdm is not None:
        bar = tqdm(total=total, unit=label[:-1] if label.endswith("s") else label, file=sys.stderr,
                   dynamic_ncols=True, mininterval=0.5)

        def update(done: int, _total: int) -> None:
            bar.update(max(0, int(done) - bar.n))

        return update, bar.close

    def line(done: int, _total: int) -> None:
        print(f"\r{done:,}/{total:,} {label}", end="", file=sys.stderr, flush=True)

    return line, lambda: print(file=sys.stderr)


def generate_to(out_dir: str | Path, fmt: str, *, model: str, n_patients: int, seed: int = 0,
                tracking_uri: str | None = None, device: str = "auto", temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, batch_size: int = 64,
                max_tokens_per_patient: int | None = None, progress: bool = True):
    """Load the generator, generate and write `fmt` (core/exports.FORMATS) into `out_dir`.

    Returns (ExportResult, stats)."""
    from synehrgy_assets.core.exports import FORMATS, export_cohort

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")
    generator = load_generator(model, tracking_uri=tracking_uri, device=device)
    callback, close = progress_printer(n_patients) if progress else (None, lambda: None)
    try:
        cohort = generator.generate(n_patients, seed=seed, temperature=temperature, top_k=top_k, top_p=top_p,
                                    batch_size=batch_size, max_tokens_per_patient=max_tokens_per_patient,
                                    on_progress=callback)
    finally:
        close()
    started = time.perf_counter()
    result = export_cohort(fmt, out_dir, cohort.marts, cohort.mimic_tables)
    stats = {**cohort.stats, "model": generator.source, "write_seconds": round(time.perf_counter() - started, 2)}
    return result, stats
