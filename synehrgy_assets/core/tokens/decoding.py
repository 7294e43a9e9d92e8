"""Decoding: token sequences -> marts-shaped frames; invalid sequences are dropped, never repaired."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from synehrgy_assets.core.cohort import (
    CODE_COLUMNS,
    MEASUREMENT_COLUMNS,
    PHENOTYPE_COLUMNS,
    VISIT_COLUMNS,
    StagedCohort,
)
from synehrgy_assets.core.tokens.encoding import TokenSequences
from synehrgy_assets.core.tokens.grammar import TokenType, Violations, find_violations
from synehrgy_assets.core.tokens.relations import _cdf, _quantile, sample_row_values
from synehrgy_assets.core.tokens.stay_end import stay_length
from synehrgy_assets.core.tokens.vocabulary import AGE_CAP, COVARIATES, MIN_ROW_GAP_HOURS, TokenVocabulary

T = TokenType

# ----------------------------------------------------------------------------------------------
# Decoding


@dataclass
class DecodeReport:
    """Structural validity of decoded sequences; invalid ones are dropped, never repaired."""

    n_sequences: int
    n_valid: int
    n_invalid: int
    reasons: dict
    valid: np.ndarray  # bool per input sequence

    @property
    def validity_rate(self) -> float:
        return self.n_valid / self.n_sequences if self.n_sequences else 0.0

    def to_dict(self) -> dict:
        return {"n_sequences": self.n_sequences, "n_valid": self.n_valid,
                "n_invalid": self.n_invalid, "validity_rate": self.validity_rate,
                "reasons": dict(self.reasons)}


def _flatten(sequences) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if isinstance(sequences, TokenSequences):
        return (np.asarray(sequences.tokens, dtype=np.int64), np.asarray(sequences.offsets),
                np.asarray(sequences.subject_ids))
    arrays = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences]
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return flat, offsets, None


def _sample_bins(vocab: TokenVocabulary, tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF sample inside each token's bin, interpolating the stored quantiles."""
    table = vocab._qtable[vocab._qrow[tokens]]
    k = table.shape[1]
    u = rng.random(len(tokens)) * (k - 1)
    i = np.minimum(u.astype(np.int64), k - 2)
    frac = u - i
    rows = np.arange(len(tokens))
    lo, hi = table[rows, i], table[rows, i + 1]
    return lo + frac * (hi - lo)


_YEAR_HOURS = 365.2425 * 24.0
# Shifted dates like MIMIC-III's: each synthetic patient's first ICU stay starts in 2100-2180.
_FIRST_INTIME_RANGE = (np.datetime64("2100-01-01T00:00", "m"), np.datetime64("2180-01-01T00:00", "m"))


def _sample_quantiles(quantiles, n: int, rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF draws from stored quantiles; zeros when none were stored (too few values)."""
    if quantiles is None or n == 0:
        return np.zeros(n)
    q = np.asarray(quantiles, dtype=float)
    u = rng.random(n) * (len(q) - 1)
    i = np.minimum(u.astype(np.int64), len(q) - 2)
    return q[i] + (u - i) * (q[i + 1] - q[i])


def visit_times(vocab: TokenVocabulary, first: np.ndarray, los: np.ndarray, gap: np.ndarray,
                died: np.ndarray, rng: np.random.Generator) -> dict:
    """intime, outtime, admittime, dischtime (datetime64[us]) of visits sorted by patient and visit.

    The ICU stays are laid out from each patient's first intime: intime_k = outtime_(k-1) + gap_k.
    The hospital admission wraps the stay with the learned offsets (admission -> ICU in, ICU out ->
    discharge, the latter by outcome); where a gap is too short for both neighbouring offsets they
    are shrunk together, so a later admission never starts before the earlier discharge. A death
    is at discharge. Also returns `years_since_first` (intime_k - intime_0 in years).
    """
    n = len(first)
    last = np.r_[first[1:], True] if n else first
    los = np.where(np.isnan(los), 0.0, los)
    gap = np.where(first, 0.0, np.nan_to_num(np.maximum(gap, 0.0)))
    step = np.where(first, 0.0, np.r_[0.0, los[:-1]] + gap) if n else gap
    total = np.cumsum(step)
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    offset_h = total - total[start] if n else total
    before = _sample_quantiles(vocab.stay_offsets.get("admit_to_icu_hours"), n, rng)
    after = np.where(died, _sample_quantiles(vocab.stay_offsets.get("icu_to_discharge_hours_died"), n, rng),
                     _sample_quantiles(vocab.stay_offsets.get("icu_to_discharge_hours_survived"), n, rng))
    # Shrink this discharge offset and the next admission offset together into the gap between.
    next_gap = np.r_[gap[1:], np.inf] if n else gap
    next_before = np.r_[before[1:], 0.0] if n else before
    room = np.where(last, np.inf, np.maximum(next_gap - 1.0 / 60, 0.0))
    need = after + next_before
    scale = np.where(need > room, room / np.maximum(need, 1e-9), 1.0)
    after = after * scale
    before = before * np.r_[1.0, scale[:-1]] if n else before
    n_patients = int(first.sum())
    lo, hi = (d.astype(np.int64) for d in _FIRST_INTIME_RANGE)
    base_min = rng.integers(lo, hi, n_patients)[np.cumsum(first) - 1] if n else np.zeros(0, np.int64)

    def stamp(hours):
        seconds = np.round(hours * 3600.0).astype(np.int64)  # MIMIC charts to the second at most
        return pd.Series((base_min * 60 + seconds) * 1_000_000).astype("datetime64[us]")

    return {"intime": stamp(offset_h), "outtime": stamp(offset_h + los),
            "admittime": stamp(offset_h - before), "dischtime": stamp(offset_h + los + after),
            "years_since_first": offset_h / _YEAR_HOURS}


def _first_ages_fitting_every_bin(vocab, age_tok, age_years, years, first, rng):
    """The first visit's age, redrawn (inside its bin's distribution) where one birth date can put
    every later visit's age (first age + elapsed years) inside that visit's AGE bin too; patients
    whose bins admit no single birth date keep the first draw. A real patient's tokens always admit
    one, so decoding and re-encoding a real patient gives back its AGE tokens."""
    low, high = vocab.bin_low[age_tok].copy(), vocab.bin_high[age_tok].copy()
    capped = age_tok == vocab.age_base + vocab.scales["AGE"].n_bins - 1
    low[capped], high[capped] = AGE_CAP, np.inf  # the capped bucket holds every age >= 90
    n_patients = int(first.sum())
    patient = np.cumsum(first) - 1
    lo = np.full(n_patients, -np.inf)
    hi = np.full(n_patients, np.inf)
    np.maximum.at(lo, patient, low - years)
    np.minimum.at(hi, patient, np.nextafter(high, -np.inf) - years)
    first_idx = np.flatnonzero(first)
    fit = (lo < hi) & ~capped[first_idx]
    fit &= (lo > low[first_idx]) | (hi < high[first_idx])  # only where a later visit narrows it
    if fit.any():
        rows = first_idx[fit]
        table = vocab._qtable[vocab._qrow[age_tok[rows]]]
        u_lo, u_hi = _cdf(table, lo[fit]), _cdf(table, hi[fit])
        draw = _quantile(table, u_lo + rng.random(len(rows)) * (u_hi - u_lo))
        age_years = age_years.copy()
        age_years[rows] = np.clip(draw, lo[fit], hi[fit])
    return age_years


def decode(
    sequences,
    vocab: TokenVocabulary,
    seed: int = 0,
    subject_ids: np.ndarray | None = None,
) -> tuple[StagedCohort, DecodeReport]:
    """Parse token sequences back into marts-shaped frames; invalid sequences are dropped.

    Subject ids: `subject_ids` if given, else the TokenSequences' own, else 0..n-1 (position of
    the sequence in the input). Stays get synthetic ids 0..n_visits-1 (`hadm_id` the same).
    Every visit gets times (`visit_times`): the ICU stay from the gaps and its length, the hospital
    admission around it from the learned offsets; ages after the first visit follow from the first
    age and the time that passed. Values charted together keep the vocabulary's relations
    (`relations.sample_row_values`).
    """
    flat, offsets, own_ids = _flatten(sequences)
    n_seq = len(offsets) - 1
    if subject_ids is None:
        subject_ids = own_ids if own_ids is not None else np.arange(n_seq, dtype=np.int64)
    subject_ids = np.asarray(subject_ids, dtype=np.int64)
    if len(subject_ids) != n_seq:
        raise ValueError(f"decode: {len(subject_ids)} subject ids for {n_seq} sequences")
    if isinstance(sequences, TokenSequences) and sequences.vocab_version != vocab.version:
        raise ValueError(f"decode: sequences use vocabulary {sequences.vocab_version}, "
                         f"got vocabulary {vocab.version}")
    violations: Violations = find_violations(flat, offsets, vocab.token_types, vocab.value_rank)
    valid = violations.valid
    reasons = violations.counts()
    report = DecodeReport(n_seq, int(valid.sum()), int((~valid).sum()), reasons, valid)

    lengths = np.diff(offsets)
    s = _Stream(vocab, flat[np.repeat(valid, lengths)], np.repeat(np.flatnonzero(valid), lengths[valid]))
    rng = np.random.default_rng(seed)
    # The draws happen in this order, so a seed decodes the same cohort.
    age_years = _sample_bins(vocab, s.age_tok, rng)
    gap = np.full(s.n_visits, np.nan)
    gap[~s.v_first] = _sample_bins(vocab, s.per_visit(T.GAP_VISIT), rng)
    rows = _Rows(s, rng)
    los = np.full(s.n_visits, np.nan)
    tail = vocab.stay_offsets.get("last_row_to_outtime_hours")
    last_hours = rows.row_hours[rows.row_last]
    los[rows.row_visit[rows.row_last]] = last_hours if tail is None else stay_length(
        last_hours, _sample_quantiles(tail, len(last_hours), rng), vocab.los_quantiles)
    empty = np.isnan(los)
    if empty.any():
        if vocab.los_quantiles is not None:
            los[empty] = _sample_quantiles(vocab.los_quantiles, int(empty.sum()), rng)

    subj = subject_ids[s.v_seq]
    icustay = np.arange(s.n_visits, dtype=np.int64)
    visits = _visits_frame(s, subj, icustay, age_years, gap, los, rng)
    return StagedCohort(visits, _codes_frame(s, subj, icustay), _phenotypes_frame(s, subj, icustay),
                        _measurements_frame(s, rows, subj, icustay)), report


class _Stream:
    """The valid sequences' tokens, flat, with their types and each token's visit."""

    def __init__(self, vocab: TokenVocabulary, tokens: np.ndarray, seq_of: np.ndarray):
        self.vocab, self.tokens = vocab, tokens
        self.types = types = vocab.token_types[tokens]
        # Visits: one AGE token each.
        is_age = types == T.AGE
        self.visit_of = np.cumsum(is_age) - 1  # valid for every token from its visit's AGE onwards
        age_pos = np.flatnonzero(is_age)
        self.n_visits = n_visits = len(age_pos)
        self.v_seq = v_seq = seq_of[age_pos]
        self.v_first = v_first = np.ones(n_visits, dtype=bool)
        v_first[1:] = v_seq[1:] != v_seq[:-1]
        self.v_index = np.arange(n_visits) - np.maximum.accumulate(np.where(v_first, np.arange(n_visits), 0))
        self.age_tok = tokens[age_pos]

    def per_visit(self, kind: TokenType) -> np.ndarray:
        return self.tokens[self.types == kind]


class _Rows:
    """The measurement rows (each ends with a DT token; values belong to the next DT) and their
    values, drawn inside their bins and kept consistent within a row."""

    def __init__(self, s: _Stream, rng: np.random.Generator):
        vocab, tokens, types = s.vocab, s.tokens, s.types
        is_dt = types == T.DT
        dt_pos = np.flatnonzero(is_dt)
        self.row_visit = row_visit = s.visit_of[dt_pos]
        row_gap = _sample_bins(vocab, tokens[dt_pos], rng)
        row_first = np.ones(len(dt_pos), dtype=bool)
        row_first[1:] = row_visit[1:] != row_visit[:-1]
        # Rows are distinct times: a later row comes at least one second after the previous one
        # (a zero gap only occurs for a stay's first row in training data).
        row_gap[~row_first] = np.maximum(row_gap[~row_first], MIN_ROW_GAP_HOURS)
        csum = np.cumsum(row_gap)
        base = np.maximum.accumulate(np.where(row_first, np.arange(len(dt_pos)), 0))
        self.row_hours = csum - (csum[base] - row_gap[base]) if len(dt_pos) else csum
        self.row_last = np.ones(len(dt_pos), dtype=bool)
        self.row_last[:-1] = row_visit[1:] != row_visit[:-1]
        val_pos = np.flatnonzero(types == T.VALUE)
        val_tok = tokens[val_pos]
        self.val_row = val_row = np.cumsum(is_dt)[val_pos]  # DT tokens before the value = its row index
        self.var_idx = var_idx = vocab.value_var[val_tok]
        continuous = vocab._var_continuous[var_idx]
        values = np.where(continuous, 0.0, vocab._number[val_tok])
        cont = np.flatnonzero(continuous)
        values[cont] = _sample_bins(vocab, val_tok[cont], rng)
        self.values = sample_row_values(vocab, val_tok, val_row, values, rng)
        self.value_text = np.where(continuous, None, vocab._text[val_tok])


def _visits_frame(s: _Stream, subj: np.ndarray, icustay: np.ndarray, age_years: np.ndarray, gap: np.ndarray,
                  los: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    vocab, v_first, n_visits = s.vocab, s.v_first, s.n_visits
    age_capped = s.age_tok == vocab.age_base + vocab.scales["AGE"].n_bins - 1
    died = s.per_visit(T.MORTALITY) - vocab.mortality_base == 1
    times = visit_times(vocab, v_first, los, gap, died, rng)
    # Ages after the first visit follow from the first age and the time since (one birth date).
    first_of = np.maximum.accumulate(np.where(v_first, np.arange(n_visits), 0))
    years = times.pop("years_since_first")
    age_years = _first_ages_fitting_every_bin(vocab, s.age_tok, age_years, years, v_first, rng)
    later_age = age_years[first_of] + years
    age_years = np.where(v_first, age_years, later_age)
    age_capped = np.where(v_first, age_capped, age_capped[first_of] | (later_age >= AGE_CAP))
    visits = pd.DataFrame({
        "subject_id": subj,
        "hadm_id": icustay.copy(),
        "icustay_id": icustay,
        "visit_index": s.v_index.astype(np.int32),
        **times,
        "los_hours": los,
        "hours_since_previous_visit": gap,
        "age_years": np.where(age_capped, AGE_CAP, age_years),
        "age_is_capped": age_capped,
    })
    for col, kind in COVARIATES:
        visits[col] = pd.Series(vocab._text[s.per_visit(kind)], dtype=object)
    visits["mortality_inhospital"] = died.astype(np.int32)
    return visits[VISIT_COLUMNS]


def _phenotypes_frame(s: _Stream, subj: np.ndarray, icustay: np.ndarray) -> pd.DataFrame:
    ph_pos = np.flatnonzero(s.types == T.PHENOTYPE)
    ph_visit = s.visit_of[ph_pos]
    return pd.DataFrame({
        "subject_id": subj[ph_visit], "icustay_id": icustay[ph_visit],
        "phenotype": pd.Series(s.vocab._text[s.tokens[ph_pos]], dtype=object),
    })[PHENOTYPE_COLUMNS]


def _codes_frame(s: _Stream, subj: np.ndarray, icustay: np.ndarray) -> pd.DataFrame:
    """Diagnoses and procedures in token order; `seq_num` counts within a visit's codes of one type."""
    types = s.types
    cd_pos = np.flatnonzero((types == T.DX) | (types == T.PX))
    cd_visit = s.visit_of[cd_pos]
    cd_px = types[cd_pos] == T.PX
    group = cd_visit * 2 + cd_px
    g_first = np.ones(len(cd_pos), dtype=bool)
    g_first[1:] = group[1:] != group[:-1]
    g_start = np.maximum.accumulate(np.where(g_first, np.arange(len(cd_pos)), 0))
    return pd.DataFrame({
        "subject_id": subj[cd_visit], "icustay_id": icustay[cd_visit],
        "code_type": np.where(cd_px, "procedure", "diagnosis").astype(object),
        "icd9_code": pd.Series(s.vocab._text[s.tokens[cd_pos]], dtype=object),
        "seq_num": (np.arange(len(cd_pos)) - g_start + 1).astype(np.int64),
    })[CODE_COLUMNS]


def _measurements_frame(s: _Stream, rows: _Rows, subj: np.ndarray, icustay: np.ndarray) -> pd.DataFrame:
    mv_visit = rows.row_visit[rows.val_row]
    return pd.DataFrame({
        "subject_id": subj[mv_visit], "icustay_id": icustay[mv_visit],
        "hours": rows.row_hours[rows.val_row],
        "variable": pd.Series(np.asarray(s.vocab.variable_names, dtype=object)[rows.var_idx], dtype=object),
        "value": rows.values,
        "value_text": pd.Series(rows.value_text, dtype=object),
    })[MEASUREMENT_COLUMNS]
