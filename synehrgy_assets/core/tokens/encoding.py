"""Encoding: staged cohorts (or DuckDB marts) -> one flat int32 token array per split.

Encoding builds every token's flat position arithmetically from per-visit section counts and
scatters the ids into one int32 array: no per-patient or per-token Python loop.
"""

from __future__ import annotations

import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.tokens import kernels as _kernels
from synehrgy_assets.core.tokens.columns import (
    _Visits,
    _code_order,
    _excl_cumsum,
    _float_column,
    _group_rank,
    _int_column,
    _lookup,
    _prepare_visits,
    _to_arrow_strings,
)
from synehrgy_assets.core.tokens.vocab_fit import _check_code_types, _raise_unknown_variables, _visit_column
from synehrgy_assets.core.tokens.vocabulary import AGE_CAP, AGE_EDGES, COVARIATES, TokenVocabulary

# ----------------------------------------------------------------------------------------------
# Token sequences


@dataclass
class TokenSequences:
    """Flat token stream of many patients: patient i is ``tokens[offsets[i]:offsets[i+1]]``."""

    tokens: np.ndarray        # int32 [n_tokens]
    offsets: np.ndarray       # int64 [n_patients + 1]
    subject_ids: np.ndarray   # int64 [n_patients]
    visit_starts: np.ndarray  # int64 [n_visits]: flat position of each visit's first covariate
    vocab_version: str
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_patients(self) -> int:
        return len(self)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def patient(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]])

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("tokens", "offsets", "subject_ids", "visit_starts"):
            np.save(directory / f"{name}.npy", np.ascontiguousarray(getattr(self, name)))
        meta = {"vocab_version": self.vocab_version, "n_patients": len(self),
                "n_tokens": int(len(self.tokens)), "stats": self.stats}
        (directory / "sequences.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True) -> "TokenSequences":
        directory = Path(directory)
        meta_path = directory / "sequences.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path}: no token sequences saved here")
        meta = json.loads(meta_path.read_text())
        mode = "r" if mmap else None
        arrays = {name: np.load(directory / f"{name}.npy", mmap_mode=mode)
                  for name in ("tokens", "offsets", "subject_ids", "visit_starts")}
        seqs = cls(**arrays, vocab_version=meta["vocab_version"], stats=meta.get("stats", {}))
        if len(seqs) != meta["n_patients"] or len(seqs.tokens) != meta["n_tokens"]:
            raise ValueError(f"{directory}: arrays do not match sequences.json")
        return seqs


_MIN_CHUNK_ROWS = 1 << 18  # measurement rows below which splitting the cohort costs more than it saves


def encode(cohort: StagedCohort, vocab: TokenVocabulary, n_threads: int | None = None
           ) -> TokenSequences:
    """Tokenize a staged cohort; patients in ascending subject_id, visits by visit_index.

    `n_threads` (default: up to 2 cores) threads encode disjoint blocks of patients. Patients are
    independent, so when every mart is ordered by subject_id (the marts loader's order) the
    cohort is cut into contiguous patient blocks and the blocks' arrays are concatenated; the
    result is identical to encoding the whole cohort at once.
    """
    n_threads = n_threads or min(2, os.cpu_count() or 1)
    cohort.validate_columns("cohort")
    blocks = _patient_blocks(cohort, n_threads) or [cohort]
    return encode_blocks(blocks.__getitem__, len(blocks), vocab, n_threads)


def encode_blocks(load_block, n_blocks: int, vocab: TokenVocabulary, n_threads: int | None = None,
                  progress=None) -> TokenSequences:
    """Tokenize a cohort that arrives in `n_blocks` blocks of whole patients, block i being
    `load_block(i)` (a StagedCohort; blocks in ascending subject_id order, disjoint).

    `n_threads` threads each load and encode blocks, so reading the marts (DuckDB) overlaps
    with encoding and at most ~2 blocks per thread are in memory at once. `progress(done, total)`
    is called after each block.
    """
    n_threads = n_threads or min(2, os.cpu_count() or 1)
    done = [0]
    lock = threading.Lock()

    def run(i: int) -> TokenSequences:
        block = load_block(i)
        block.validate_columns(f"cohort block {i}")
        part = _encode_block(block, vocab)
        if progress is not None:
            with lock:
                done[0] += 1
                progress(done[0], n_blocks)
        return part

    if n_threads > 1 and n_blocks > 1:
        # The compiled loops, numpy and arrow release the GIL, so blocks run in parallel.
        with ThreadPoolExecutor(n_threads) as pool:
            parts = list(pool.map(run, range(n_blocks)))
    else:
        parts = [run(i) for i in range(n_blocks)]
    if not parts:
        raise ValueError("encode_blocks: no blocks to encode")
    return parts[0] if len(parts) == 1 else _concatenate(parts, vocab.version)


def encode_marts(con, vocab: TokenVocabulary, subject_ids=None, schema: str = "main",
                 n_threads: int | None = None, patients_per_block: int = 3000,
                 progress=None) -> TokenSequences:
    """Staged DuckDB marts -> token arrays, for `subject_ids` (None: every patient).

    The patients are read and encoded in blocks of about `patients_per_block` by `n_threads`
    threads (see `encode_blocks`); the result is identical to
    `encode(load_staged_cohort(con, subject_ids), vocab)`. While the threads run, DuckDB uses
    one thread per query: two queries with two DuckDB threads each on two cores lose ~20 % to
    oversubscription.
    """
    from synehrgy_assets.core.cohort import MartReader

    n_threads = n_threads or min(2, os.cpu_count() or 1)
    with MartReader(con, subject_ids, schema) as reader:
        n_patients = len(reader.all_subjects if reader.ids is None else reader.ids)
        blocks = reader.blocks(max(1, math.ceil(n_patients / max(patients_per_block, 1))))
        pipelined = n_threads > 1 and len(blocks) > 1
        threads_before = con.sql("select current_setting('threads')").fetchall()[0][0]
        if pipelined:
            con.execute("set threads = 1")
        try:
            return encode_blocks(lambda i: reader.load(blocks[i], check_order=False),
                                 len(blocks), vocab, n_threads, progress)
        finally:
            if pipelined:
                con.execute(f"set threads = {int(threads_before)}")


def _subject_column(frame: pd.DataFrame) -> np.ndarray | None:
    """subject_id as int64 if the frame is ordered by it (no NULLs), else None."""
    try:
        subject = frame["subject_id"].to_numpy(dtype=np.int64)
    except (TypeError, ValueError):
        return None  # NULL or non-numeric subject_id: the one-block path names the problem
    if len(subject) > 1 and np.any(subject[1:] < subject[:-1]):
        return None
    return subject


def _patient_blocks(cohort: StagedCohort, n_threads: int) -> list[StagedCohort]:
    """Contiguous blocks of patients with about equal measurement rows, or [] to encode whole."""
    n_rows = len(cohort.measurements)
    n_blocks = min(4 * n_threads, n_rows // _MIN_CHUNK_ROWS)
    if n_threads < 2 or n_blocks < 2:
        return []
    subjects = []
    for frame in cohort.frames():
        subject = _subject_column(frame)
        if subject is None:
            return []
        subjects.append(subject)
    m_subject = subjects[3]
    # Cut at the first row of a patient, near equal shares of the measurement rows.
    cuts = np.unique(m_subject[np.linspace(0, n_rows, n_blocks + 1)[1:-1].astype(np.int64)])
    cuts = cuts[cuts > m_subject[0]]
    if len(cuts) == 0:
        return []
    blocks = []
    bounds = [np.concatenate([[0], np.searchsorted(s, cuts), [len(s)]]) for s in subjects]
    for b in range(len(cuts) + 1):
        blocks.append(StagedCohort(*(frame.iloc[bound[b]:bound[b + 1]]
                                     for frame, bound in zip(cohort.frames(), bounds))))
    return blocks


def _concatenate(parts: list[TokenSequences], vocab_version: str) -> TokenSequences:
    lengths = [len(p.tokens) for p in parts]
    shift = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    offsets = [parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shift)]
    stats: dict = {}
    for p in parts:
        for key, value in p.stats.items():
            stats[key] = stats.get(key, 0) + value
    return TokenSequences(
        np.concatenate([p.tokens for p in parts]),
        np.concatenate(offsets),
        np.concatenate([p.subject_ids for p in parts]),
        np.concatenate([p.visit_starts + s for p, s in zip(parts, shift)]),
        vocab_version, stats,
    )


def _encode_block(cohort: StagedCohort, vocab: TokenVocabulary) -> TokenSequences:
    stats: dict = {}
    visits = cohort.visits
    vis = _prepare_visits(visits)

    header, header_len = _header_tokens(visits, vis, vocab, stats)
    width = header.shape[1]
    later = ~vis.is_first
    ph_gv, ph_tok, n_ph, ph_rank = _phenotype_tokens(cohort.visit_phenotypes, vis, vocab, stats)
    cd_gv, cd_tok, n_cd, cd_rank = _code_tokens(cohort.visit_codes, vis, vocab, stats)
    m = _measurement_tokens(cohort.measurements, vocab, vis, stats)
    n_val, n_row = m.n_val, m.n_row

    # Positions: every section's start is arithmetic on the per-visit counts.
    visit_len = header_len + n_ph + 1 + n_cd + 1 + n_val + n_row + 2
    patient_len = np.bincount(vis.patient, weights=visit_len, minlength=len(vis.patient_subject))
    patient_len = patient_len.astype(np.int64) + 2
    offsets = np.concatenate([[0], np.cumsum(patient_len)]).astype(np.int64)
    visit_start = _excl_cumsum(visit_len) + 2 * vis.patient + 1
    out = np.empty(int(offsets[-1]), dtype=np.int32)
    out[offsets[:-1]] = vocab.bos_id
    out[offsets[1:] - 1] = vocab.eos_id
    first_v = np.flatnonzero(vis.is_first)
    later_v = np.flatnonzero(later)
    out[(visit_start[first_v, None] + np.arange(width - 1)).ravel()] = header[first_v, 1:].ravel()
    out[(visit_start[later_v, None] + np.arange(width)).ravel()] = header[later_v].ravel()
    ph_start = visit_start + header_len
    out[ph_start[ph_gv] + ph_rank] = ph_tok
    out[ph_start + n_ph] = vocab.end_label_id
    cd_start = ph_start + n_ph + 1
    out[cd_start[cd_gv] + cd_rank] = cd_tok
    out[cd_start + n_cd] = vocab.end_code_id
    m_start = cd_start + n_cd + 1
    if len(m.stream):
        # Each visit's segment moves as a block: position = stream position + segment shift.
        shift = m_start[m.seg_gv] - m.seg_start
        if len(shift) == 1 or np.all(shift[1:] == shift[:-1]):
            out[shift[0]:shift[0] + len(m.stream)] = m.stream
        else:
            pos = np.repeat(shift, m.seg_len)
            pos += np.arange(len(m.stream))
            out[pos] = m.stream
    ts_end = m_start + n_val + n_row
    out[ts_end] = vocab.end_ts_id
    out[ts_end + 1] = vocab.end_adm_id
    return TokenSequences(out, offsets, vis.patient_subject.astype(np.int64), visit_start,
                          vocab.version, stats)


def _header_tokens(visits: pd.DataFrame, vis, vocab: TokenVocabulary, stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """Header tokens per visit (in visit order): [gap] age, the COVARIATES, </covar>, mortality;
    and each header's length (a patient's first visit has no gap token)."""
    n_visits, fo = vis.n, vis.frame_order
    age = _float_column(visits, "visits", "age_years", allow_null=False)[fo]
    capped = visits["age_is_capped"].to_numpy(dtype=bool, na_value=False)[fo] | (age >= AGE_CAP)
    stats["n_ages_below_18"] = int(np.sum(age < AGE_EDGES[0]))
    age_bin = vocab.scales["AGE"].assign(np.where(capped, AGE_CAP, age))
    n_cov = len(COVARIATES)
    width = 4 + n_cov  # gap, age, covariates, </covar>, mortality
    header = np.empty((n_visits, width), dtype=np.int64)
    gap = _float_column(visits, "visits", "hours_since_previous_visit", allow_null=True)[fo]
    later = ~vis.is_first
    if np.isnan(gap[later]).any():
        raise ValueError("table 'visits': column 'hours_since_previous_visit' is NULL for "
                         f"{int(np.isnan(gap[later]).sum())} visit(s) that are not a patient's first")
    gap_scale = vocab.scales["GAP_VISIT"]
    stats["n_visit_gaps_clipped"] = int(np.sum(later & ((gap < 0) | (gap > gap_scale.edges[-1]))))
    header[:, 0] = vocab.gap_visit_base + gap_scale.assign(np.nan_to_num(gap))
    header[:, 1] = vocab.age_base + age_bin
    for c, (col, _) in enumerate(COVARIATES):
        cats = vocab.covariates[col]
        pos = _lookup(_visit_column(visits, col), cats, "visits", col)[fo]
        unk = vocab.covariate_id(col, None)
        header[:, 2 + c] = np.where(pos >= 0, unk + 1 + pos, unk)
        stats[f"n_unknown_{col}"] = int(np.sum(pos < 0))
    header[:, 2 + n_cov] = vocab.end_covar_id
    mort = _float_column(visits, "visits", "mortality_inhospital", allow_null=False)[fo]
    if not np.isin(mort, (0.0, 1.0)).all():
        raise ValueError("table 'visits': column 'mortality_inhospital' must be 0 or 1")
    header[:, 3 + n_cov] = vocab.mortality_base + mort.astype(np.int64)
    return header, np.where(later, width, width - 1)


def _phenotype_tokens(ph: pd.DataFrame, vis, vocab: TokenVocabulary, stats: dict):
    """Phenotype tokens per visit: ascending token id, no duplicates, with each one's rank in its visit."""
    ph_pos = _lookup(ph["phenotype"], vocab.phenotypes, "visit_phenotypes", "phenotype")
    ph_gv = vis.position_of(_int_column(ph, "visit_phenotypes", "icustay_id"), "visit_phenotypes")
    stats["n_unknown_phenotypes"] = int(np.sum(ph_pos < 0))
    keep = ph_pos >= 0
    ph_tok = vocab.phenotype_base + ph_pos[keep]
    ph_gv = ph_gv[keep]
    key = np.sort(ph_gv * vocab.size + ph_tok)
    key = key[np.append(True, key[1:] != key[:-1])] if len(key) else key  # deduplicated
    ph_gv, ph_tok = key // vocab.size, key % vocab.size
    n_ph, ph_rank = _group_rank(ph_gv, vis.n)
    return ph_gv, ph_tok, n_ph, ph_rank


def _code_tokens(cd: pd.DataFrame, vis, vocab: TokenVocabulary, stats: dict):
    """Code tokens per visit: diagnoses by seq_num, then procedures by seq_num; first occurrence kept."""
    _check_code_types(cd["code_type"])
    is_px = (cd["code_type"] == "procedure").to_numpy(dtype=bool, na_value=False)
    dx_pos = _lookup(cd["icd9_code"], vocab.codes["diagnosis"], "visit_codes", "icd9_code")
    px_pos = _lookup(cd["icd9_code"], vocab.codes["procedure"], "visit_codes", "icd9_code")
    pos = np.where(is_px, px_pos, dx_pos)
    base = np.where(is_px, vocab._code_base["procedure"], vocab._code_base["diagnosis"])
    cd_tok = base + 1 + pos  # pos == -1 gives the type's UNK token (base)
    null_code = cd["icd9_code"].isna().to_numpy()
    stats["n_null_codes"] = int(null_code.sum())
    stats["n_unknown_codes"] = int(np.sum((pos < 0) & ~null_code))
    cd_gv = vis.position_of(_int_column(cd, "visit_codes", "icustay_id"), "visit_codes")
    seq = _float_column(cd, "visit_codes", "seq_num", allow_null=True)
    seq = np.where(np.isnan(seq), np.inf, seq)
    keep = ~null_code
    cd_gv, cd_tok, cd_px, seq = cd_gv[keep], cd_tok[keep], is_px[keep], seq[keep]
    order = _code_order(cd_gv, cd_px, seq, cd_tok, vis.n, vocab.size)
    cd_gv, cd_tok = cd_gv[order], cd_tok[order]
    _, first = np.unique(cd_gv * vocab.size + cd_tok, return_index=True)
    first_mask = np.zeros(len(cd_gv), dtype=bool)
    first_mask[first] = True
    stats["n_duplicate_codes"] = int(len(cd_gv) - first_mask.sum())
    cd_gv, cd_tok = cd_gv[first_mask], cd_tok[first_mask]
    n_cd, cd_rank = _group_rank(cd_gv, vis.n)
    return cd_gv, cd_tok, n_cd, cd_rank


@dataclass
class _Measured:
    """Measurement section of every visit: one int32 stream of value and DT tokens.

    The stream holds one contiguous segment per visit (values, each row closed by its DT token);
    segments come in the input's visit order, which need not be the sorted-visit order.
    """

    n_val: np.ndarray      # values per visit
    n_row: np.ndarray      # rows (= DT tokens) per visit
    stream: np.ndarray     # int32 [n_values + n_rows]
    seg_gv: np.ndarray     # visit of each segment
    seg_start: np.ndarray  # first stream position of each segment
    seg_len: np.ndarray


def _codes(series: pd.Series, table: str, column: str) -> tuple[np.ndarray, list[str]]:
    """int32 codes (-1: NULL) and their categories for a text column of any representation.

    Categoricals (the marts loader's measurement text) cost nothing; arrow dictionary columns
    cost a concatenation; plain strings are dictionary-encoded once."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return (series.cat.codes.to_numpy().astype(np.int32, copy=False),
                [str(c) for c in series.cat.categories])
    arr = _to_arrow_strings(series, table, column, keep_dictionary=True)
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    chunks = arr.unify_dictionaries().chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    chunks = [ch for ch in chunks if len(ch)]
    if not chunks:
        return np.zeros(0, dtype=np.int32), []
    codes = np.concatenate([
        ch.indices.cast(pa.int32()).fill_null(-1).to_numpy(zero_copy_only=False) for ch in chunks])
    return codes.astype(np.int32, copy=False), [str(c) for c in chunks[0].dictionary.to_pylist()]


def _positions(categories: list[str], values: Sequence[str], absent: int) -> np.ndarray:
    index = {v: i for i, v in enumerate(values)}
    return np.array([index.get(c, absent) for c in categories] or [absent], dtype=np.int32)


def _value_tokens(meas: pd.DataFrame, vocab: TokenVocabulary, stats: dict):
    """Token id of every measurement row (-1: missing or unknown category) and variable rank."""
    n = len(meas)
    var_code, var_cats = _codes(meas["variable"], "measurements", "variable")
    text_code, text_cats = _codes(meas["value_text"], "measurements", "value_text")
    value = _float_column(meas, "measurements", "value", allow_null=True)
    var_map = _positions(var_cats, vocab.variable_names, -1)
    text_map = _positions(text_cats, vocab._category_union, -2)
    token = np.empty(n, dtype=np.int32)
    rank = np.empty(n, dtype=np.int16)
    counts = np.zeros(4, dtype=np.int64)
    grid = vocab._grid
    _kernels.value_tokens(*map(_kernels.readonly, (
        var_code, var_map, value, text_code, text_map, vocab._var_continuous, grid.low,
        grid.scale)), int(grid.size), *map(_kernels.readonly, (
        grid.base, grid.edge, vocab._value_base32, vocab._valid_low, vocab._valid_high,
        vocab._category_token, vocab._rank_of_var)), token, rank, counts)
    if counts[0]:
        var = _lookup(meas["variable"], vocab.variable_names, "measurements", "variable")
        _raise_unknown_variables(meas, var)
    if counts[3]:
        # A categorical value without text: its score names the category ("%g" of the score).
        rows = np.flatnonzero(token == _kernels.NEEDS_SCORE_LOOKUP)
        formatted = pd.Series(np.char.mod("%g", value[rows]))
        pos = _lookup(formatted, vocab._category_union, "measurements", "value")
        var = var_map[var_code[rows]]
        cat_tok = np.where(pos >= 0, vocab._category_token[var, np.maximum(pos, 0)], -1)
        counts[2] += int(np.count_nonzero(cat_tok < 0))
        token[rows] = cat_tok
    stats["n_values_clipped"] = int(counts[1])
    stats["n_unknown_categories"] = int(counts[2])
    return token, rank


def _measurement_tokens(meas: pd.DataFrame, vocab: TokenVocabulary, vis: _Visits,
                        stats: dict) -> _Measured:
    """Value and DT tokens of every visit, ordered (hours, variable rank) within the visit.

    Rows in the marts loader's order (a stay's rows contiguous, by hours, then variable name,
    which is the rank order) go through one compiled pass. Any other order costs one lexsort
    first and gives the same tokens.
    """
    hours = _float_column(meas, "measurements", "hours", allow_null=False)
    gv = vis.position_of(_int_column(meas, "measurements", "icustay_id"), "measurements")
    token, rank = _value_tokens(meas, vocab, stats)
    dt = vocab.scales["DT"]
    args = (_kernels.readonly(dt.edges[1:-1]), float(dt.edges[-1]), int(vocab.dt_base), int(vis.n))
    rows = tuple(map(_kernels.readonly, (gv, hours, rank, token)))
    ok, stream, seg_gv, seg_start, seg_len, n_val, n_row, counts = _kernels.measurement_stream(
        *rows, *args)
    if not ok:
        keep = np.flatnonzero(token >= 0)
        order = keep[np.lexsort((token[keep], rank[keep], hours[keep], gv[keep]))]
        rows = tuple(_kernels.readonly(a[order]) for a in (gv, hours, rank, token))
        ok, stream, seg_gv, seg_start, seg_len, n_val, n_row, counts = _kernels.measurement_stream(
            *rows, *args)
        assert ok, "measurement rows still out of order after sorting"
    stats["n_duplicate_values"] = int(counts[0])
    stats["n_negative_first_gaps"] = int(counts[1])
    stats["n_gaps_clipped"] = int(counts[2])
    return _Measured(n_val=n_val, n_row=n_row, stream=stream, seg_gv=seg_gv,
                     seg_start=seg_start, seg_len=seg_len)


