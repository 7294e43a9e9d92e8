"""Stage 2: patient split, token vocabulary and token sequences."""


import hashlib
import json
import math
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from synehrgy_assets.core.training_data import source_kind
from synehrgy_assets.defs._metadata import histogram_png, png_markdown
from synehrgy_assets.defs.staging import mart_key, published_build
from synehrgy_assets.resources import WorkspaceResource, owner_only_tree, write_json

SPLITS = ("train", "val", "test")
# Every asset that reads the real cohort depends on the four marts it reads.
REAL_MART_DEPS = [mart_key(m) for m in ("visits", "visit_codes", "visit_phenotypes", "measurements")]
SPLIT_TABLE = "synehrgy.patient_split"
# What the reference implementation keeps by truncating to its 1024-token context (its Results
# notebook, full MIMIC-III): shown beside our own fraction for comparison.
REFERENCE_FRACTION_AT_1024 = 0.449


class PatientSplitConfig(dg.Config):
    train_fraction: float = Field(default=0.8, description="Share of patients in train (less when the test share "
                                  "is raised above 1 - train_fraction - val_fraction: train gives up the difference).")
    val_fraction: float = Field(default=0.1, description="Share of patients in val; the rest is test.")
    test_fraction: float = Field(
        default=0.0, description="Share of patients in test; 0 = chosen from the data: 1 - train_fraction - "
        "val_fraction, raised until the expected in-hospital deaths in test reach min_test_positives plus two "
        "standard deviations (so the utility gate can judge mortality), at most max_test_fraction; left at the "
        "default when even that share could not hold them. The choice and its reason are in the metadata.")
    min_test_positives: int = Field(
        default=30, ge=1, description="Positive real test visits a utility task needs to be gated (see test_fraction).")
    max_test_fraction: float = Field(default=0.35, description="Cap of the test share chosen from the data.")
    salt: str = Field(default="synehrgy-v1", description="Changing it reshuffles the split.")


def split_fractions(config: PatientSplitConfig, n_patients: int, n_dead_patients: int) -> tuple[float, float, str]:
    """(train, test) shares and why that test share: set in the config, or chosen from the data."""
    from synehrgy_assets.core.metrics.utility import choose_test_fraction

    default_test = 1.0 - config.train_fraction - config.val_fraction
    if config.test_fraction:
        test, why = config.test_fraction, "set in the config"
    elif default_test <= 0:
        test, why = default_test, "1 - train_fraction - val_fraction"  # assign_splits names the problem
    else:
        test, why = choose_test_fraction(n_patients, n_dead_patients, default_test, config.max_test_fraction,
                                         config.min_test_positives)
    return 1.0 - config.val_fraction - test, test, why


def assign_splits(subject_ids: np.ndarray, train_fraction: float, val_fraction: float, salt: str) -> np.ndarray:
    """Deterministic split by patient: a salted SHA-256 of the id, independent of row order."""
    if not (0 < train_fraction < 1 and 0 <= val_fraction < 1 and train_fraction + val_fraction < 1):
        raise ValueError(
            f"patient_split: need 0 < train_fraction, 0 <= val_fraction and train+val < 1; "
            f"got train={train_fraction}, val={val_fraction}"
        )
    u = np.array(
        [int.from_bytes(hashlib.sha256(f"{salt}:{int(s)}".encode()).digest()[:8], "big") / 2**64 for s in subject_ids]
    )
    return np.where(u < train_fraction, "train", np.where(u < train_fraction + val_fraction, "val", "test"))


@dg.asset(
    group_name="tokens",
    # Every mart with a blocking check: the checks publish the build, so they must all have run.
    deps=[mart_key("cohort"), *REAL_MART_DEPS],
    kinds={"duckdb"},
    description="Train/val/test assignment by patient (never by visit), deterministic by a salted hash.",
)
def patient_split(
    context: dg.AssetExecutionContext, config: PatientSplitConfig, workspace: WorkspaceResource
) -> dg.MaterializeResult:
    with workspace.connect() as con:
        build = published_build(con)  # refuses marts of a failed or partial staging build
        ids = con.sql("select subject_id from main.cohort order by subject_id").fetchnumpy()["subject_id"]
        if len(ids) < 3:
            raise ValueError(f"patient_split: main.cohort has {len(ids)} patients; at least 3 are needed")
        n_dead = con.execute("select count(distinct subject_id) from main.visits "
                             "where mortality_inhospital = 1").fetchone()[0]
        train_fraction, test_fraction, why = split_fractions(config, len(ids), int(n_dead))
        context.log.info(f"patient_split: test share {test_fraction:.3f}, train {train_fraction:.3f} ({why})")
        split = assign_splits(ids, train_fraction, config.val_fraction, config.salt)
        frame = pd.DataFrame({"subject_id": ids.astype("int64"), "split": split})
        con.execute("create schema if not exists synehrgy")
        con.register("_split", frame)
        con.execute(f"create or replace table {SPLIT_TABLE} as select * from _split")
        con.unregister("_split")
        stats = con.sql(
            f"""select s.split, count(distinct s.subject_id) as patients, count(v.icustay_id) as visits,
                       round(avg(v.mortality_inhospital), 4) as mortality_rate
                from {SPLIT_TABLE} s join main.visits v using (subject_id)
                group by s.split order by s.split"""
        ).df()
    counts = dict(zip(stats["split"], stats["patients"].astype(int)))
    for s in SPLITS:
        if counts.get(s, 0) == 0:
            raise ValueError(f"patient_split: split '{s}' is empty with {len(ids)} patients; adjust the fractions")
    return dg.MaterializeResult(
        metadata={
            "table": SPLIT_TABLE,
            **build.metadata(),
            **{f"patients/{s}": int(counts.get(s, 0)) for s in SPLITS},
            "fractions": dg.MetadataValue.json({"train": round(train_fraction, 4), "val": config.val_fraction,
                                                "test": round(test_fraction, 4)}),
            "test_fraction_reason": why,
            "by_split": dg.MetadataValue.md(stats.to_markdown(index=False)),
        }
    )


def split_subject_ids(con, split: str) -> np.ndarray:
    return con.sql(
        f"select subject_id from {SPLIT_TABLE} where split = '{split}' order by subject_id"
    ).fetchnumpy()["subject_id"]


def load_split(workspace: WorkspaceResource, split: str, max_patients: int | None = None, seed: int = 0):
    """The staged real cohort for one split (optionally a seeded sample of patients)."""
    from synehrgy_assets.core.cohort import load_staged_cohort

    with workspace.connect(read_only=True) as con:
        ids = split_subject_ids(con, split)
        if max_patients is not None and len(ids) > max_patients:
            ids = np.sort(np.random.default_rng(seed).choice(ids, size=max_patients, replace=False))
        return load_staged_cohort(con, ids)


class TokenVocabularyConfig(dg.Config):
    binning: str = Field(default="quantile", description="quantile | uniform (reference) | clinical")
    n_bins: int = Field(default=10, description="Bins per continuous variable.")
    min_code_count: int = Field(default=5, description="ICD codes seen fewer times in train go to UNK.")
    min_patients: int = Field(
        default=10,
        description="Privacy: every number the vocabulary stores (bin edges, within-bin and LOS quantiles, "
        "category scores) depends on at least this many distinct train patients, and every code, phenotype "
        "and category with a token is held by at least this many (docs/tokens.md section 2).",
    )


@dg.asset(
    group_name="tokens",
    deps=[patient_split, *REAL_MART_DEPS],
    kinds={"json"},
    description="The SynEHRgy token vocabulary fitted on the train split only (JSON, content-hash version).",
)
def token_vocabulary(
    context: dg.AssetExecutionContext, config: TokenVocabularyConfig, workspace: WorkspaceResource
) -> dg.MaterializeResult:
    from synehrgy_assets.core.tokens import TokenVocabulary, VocabularyConfig

    with workspace.connect(read_only=True) as con:
        build = published_build(con)
    train = load_split(workspace, "train")
    vocab = TokenVocabulary.fit(
        train,
        VocabularyConfig(binning=config.binning, n_bins=config.n_bins, min_code_count=config.min_code_count,
                         min_patients=config.min_patients),
    )
    path = vocab.to_json(workspace.layout.vocabulary)
    summary = vocab.summary()
    context.log.info(f"Vocabulary {vocab.version}: {vocab.size} tokens")
    return dg.MaterializeResult(
        metadata={
            "version": vocab.version,
            "size": vocab.size,
            "path": dg.MetadataValue.path(str(path)),
            "summary": dg.MetadataValue.json(summary),
            "train_patients": int(train.n_patients),
            **build.metadata(),
        }
    )


# Defaults of the context checks on the training windows (docs/tokens.md section 6).
MIN_HEADER_IN_CONTEXT_SHARE = 0.99
MIN_HISTORY_IN_CONTEXT_SHARE = 0.95


class TokenSequencesConfig(dg.Config):
    n_ctx: int = Field(
        default=512,
        description="Model context in tokens. Longer patients become windows in the context format "
        "(history + current header + recent rows, docs/tokens.md section 6).",
    )


def max_tokens_per_patient_default(train_lengths: np.ndarray) -> int:
    """The generation cap: 1.25 x the 99.9th percentile of train lengths, rounded up to a multiple
    of 1,024, so it is at least that percentile and reveals no single patient's length."""
    if len(train_lengths) == 0:
        return 1024
    p999 = float(np.percentile(train_lengths, 99.9))
    return int(math.ceil(1.25 * p999 / 1024) * 1024)


def _progress_logger(context: dg.AssetExecutionContext, split: str):
    """Log block progress at most about every 10 % (large cohorts take tens of blocks)."""
    last = [0.0]

    def report(done: int, total: int) -> None:
        if total > 1 and (done == total or done / total - last[0] >= 0.1):
            last[0] = done / total
            context.log.info(f"{split}: encoded {done}/{total} patient blocks")

    return report


@dg.asset(
    group_name="tokens",
    deps=[token_vocabulary, patient_split, *REAL_MART_DEPS],
    kinds={"numpy"},
    description=(
        "Per split: one flat int32 token array + per-patient offsets (memory-mappable .npy in the private "
        "folder), and the training context windows (nothing silently truncated)."
    ),
)
def token_sequences(
    context: dg.AssetExecutionContext, config: TokenSequencesConfig, workspace: WorkspaceResource
) -> dg.MaterializeResult:
    from synehrgy_assets.core.tokens import TokenVocabulary, context_windows, encode_marts
    from synehrgy_assets.core.tokens.context import ContextFormat

    vocab = TokenVocabulary.from_json(workspace.layout.vocabulary)
    out = workspace.layout.tokens
    with workspace.connect(read_only=True) as con:
        build = published_build(con)
    meta: dict = {"vocabulary_version": vocab.version, "n_ctx": config.n_ctx, **build.metadata()}
    stats = {}
    train_lengths = None
    fmt = ContextFormat(vocab, config.n_ctx)
    for split in SPLITS:
        started = time.perf_counter()
        with workspace.connect(read_only=True) as con:
            ids = split_subject_ids(con, split)
            # Blocks of patients are read and encoded on two threads (staged marts -> arrays).
            seqs = encode_marts(con, vocab, ids, progress=_progress_logger(context, split))
        seconds = time.perf_counter() - started
        context.log.info(f"{split}: {len(seqs):,} patients, {len(seqs.tokens):,} tokens "
                         f"in {seconds:.1f} s ({len(seqs) / max(seconds, 1e-9):,.0f} patients/s)")
        seqs.save(out / split)
        lengths = np.diff(seqs.offsets)
        windows = context_windows(seqs, vocab, config.n_ctx, fmt=fmt)
        stats[split] = split_stats(lengths, windows, config.n_ctx, seconds)
        windows.save(out / split / "windows")
        if split == "train":
            train_lengths = lengths
    owner_only_tree(out)  # token arrays of real patients: 0600 files, 0700 folders
    cap = max_tokens_per_patient_default(train_lengths)
    # The staging build these sequences were encoded from, for the generator's record of its
    # training data (the raw folder's name only, never its path).
    staging = {"build_id": build.build_id, "source_folder": Path(build.source_dir).name,
               "source_kind": source_kind(build.source_dir), "source_fingerprint": build.source_fingerprint}
    write_json(out / "summary.json", {"n_ctx": config.n_ctx, "vocabulary_version": vocab.version, "staging": staging,
                                      "max_tokens_per_patient_default": cap, "splits": stats})
    meta.update(token_sequences_metadata(stats, train_lengths, cap))
    return dg.MaterializeResult(metadata=meta)


def split_stats(lengths: np.ndarray, windows, n_ctx: int, seconds: float) -> dict:
    """One split's figures in summary.json and the `by_split` table: sizes, the context windows'
    coverage and the encoding speed. No maximum length: on a small cohort it is one patient's length."""
    return {
        "patients": int(len(lengths)),
        "tokens": int(lengths.sum()),
        "tokens_per_patient_p50": _k_anonymous_median(lengths),
        "windows": int(windows.n_windows),
        "patients_longer_than_context": int(np.sum(lengths > n_ctx + 1)),
        "header_in_context_share": float(windows.header_in_context_share),
        "history_in_context_share": float(windows.history_in_context_share),
        "windows_rejected_by_grammar": int(windows.stats["n_windows_rejected_by_grammar"]),
        "window_tokens_per_target": round(windows.stats["n_window_tokens"]
                                          / max(windows.stats["n_target_tokens"], 1), 3),
        "fraction_kept_by_plain_truncation": float(windows.stats["reference_fraction"]),
        "encode_patients_per_second": round(len(lengths) / max(seconds, 1e-9), 1),
    }


def token_sequences_metadata(stats: dict, train_lengths: np.ndarray, cap: int) -> dict:
    """The asset's metadata after the vocabulary and build keys: the train split's context figures,
    the generation cap, every split's table and the train length histogram."""
    train = stats["train"]
    return {
        "train/header_in_context_share": train["header_in_context_share"],
        "train/history_in_context_share": train["history_in_context_share"],
        "train/windows_rejected_by_grammar": train["windows_rejected_by_grammar"],
        "train/patients_longer_than_context": train["patients_longer_than_context"],
        "train/fraction_kept_by_plain_truncation": train["fraction_kept_by_plain_truncation"],
        "reference_fraction_kept_at_1024": REFERENCE_FRACTION_AT_1024,
        "max_tokens_per_patient_default": cap,
        "train/tokens": train["tokens"],
        "train/windows": train["windows"],
        "by_split": dg.MetadataValue.md(pd.DataFrame(stats).T.to_markdown()),
        "tokens_per_patient": png_markdown(
            histogram_png(_clipped_to_k_anonymous_range(train_lengths), "Tokens per train patient", "tokens"),
            "tokens per patient",
        ),
    }


def _k_anonymous_median(lengths: np.ndarray) -> float | None:
    """A median over >= 10 patients (one length per patient), not one patient's length."""
    from synehrgy_assets.core.privacy_aggregates import k_anonymous_quantiles

    median = k_anonymous_quantiles(lengths, np.arange(len(lengths)), [0.5]) if len(lengths) else None
    return None if median is None else round(median[0], 1)


def _clipped_to_k_anonymous_range(lengths: np.ndarray) -> np.ndarray:
    """Lengths clipped to their k-anonymous range, so the plot's axis ends are no patient's length."""
    from synehrgy_assets.core.privacy_aggregates import k_anonymous_range

    bounds = k_anonymous_range(lengths, np.arange(len(lengths))) if len(lengths) else None
    return np.zeros(0) if bounds is None else np.clip(lengths, *bounds)


def _train_summary(workspace: WorkspaceResource) -> dict:
    summary = json.loads((workspace.layout.token_summary).read_text())
    return {**summary["splits"]["train"], "n_ctx": summary["n_ctx"]}


def _share_check(name: str, field: str, threshold: float, what: str):
    """A check that a share of the train target tokens (in summary.json) reaches `threshold`."""

    @dg.asset_check(name=name, asset=token_sequences,
                    description=f"At least {threshold:.0%} of train tokens are predicted with {what} in context.")
    def _check(workspace: WorkspaceResource) -> dg.AssetCheckResult:
        train = _train_summary(workspace)
        return dg.AssetCheckResult(
            passed=bool(train[field] >= threshold),
            metadata={field: train[field], "threshold": threshold, "n_ctx": train["n_ctx"]},
        )

    return _check


train_tokens_with_visit_header = _share_check(
    "train_tokens_with_visit_header", "header_in_context_share", MIN_HEADER_IN_CONTEXT_SHARE,
    "their own visit's header (covariates, labels, codes); fails when n_ctx is too small for the headers")
train_tokens_with_full_history = _share_check(
    "train_tokens_with_full_history", "history_in_context_share", MIN_HISTORY_IN_CONTEXT_SHARE,
    "the patient's whole history (every earlier visit's header) and their own visit's header")


@dg.asset_check(
    asset=token_sequences,
    description="The grammar accepts every training window (context markers included).",
)
def training_windows_parse(workspace: WorkspaceResource) -> dg.AssetCheckResult:
    train = _train_summary(workspace)
    rejected = int(train["windows_rejected_by_grammar"])
    return dg.AssetCheckResult(
        passed=rejected == 0,
        metadata={"windows_rejected_by_grammar": rejected, "windows": int(train["windows"]),
                  "n_ctx": train["n_ctx"]},
    )


token_sequences_checks = [train_tokens_with_visit_header, train_tokens_with_full_history, training_windows_parse]
