"""Tests of the SynEHRgy tokenizer: vocabulary, encode/decode round trip, grammar, windows.

Run the encode benchmark with `SYNEHRGY_BENCH=20000 pytest tests/test_tokenizer.py -k throughput -s`.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import synehrgy_assets.core.tokens.encoding as tokenizer_module
from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.tokens.grammar import REASONS, TokenType, find_violations
from synehrgy_assets.core.tokens import (
    AGE_CAP,
    AGE_EDGES,
    DT_EDGES,
    UNK,
    GrammarConstraint,
    TokenSequences,
    TokenVocabulary,
    VocabularyConfig,
    decode,
    encode,
)
from tests.helpers.toy_cohort import (
    ADMISSIONS, CAREUNITS, CATEGORIES, ETHNICITIES, GENDERS, INSURANCES, PHENOTYPES, VARIABLES, synthetic_cohort,
)
from tests.leak_scan import RealSample


@pytest.fixture(scope="module")
def train() -> StagedCohort:
    return synthetic_cohort(400, seed=1)


@pytest.fixture(scope="module")
def vocab(train) -> TokenVocabulary:
    return TokenVocabulary.fit(train, VocabularyConfig())


# ----------------------------------------------------------------------------------------------
# Vocabulary


def test_vocabulary_layout(vocab, train):
    types = vocab.token_types
    assert vocab.tokens[:8] == ["<pad>", "<s>", "</s>", "</covar>", "</label>", "</code>", "</ts>",
                                "</adm>"]
    assert vocab.pad_id == 0 and vocab.bos_id == 1 and vocab.eos_id == 2
    assert np.all(np.diff(types.astype(int)) >= 0), "ids must be grouped by token type"
    assert vocab.size == len(vocab.tokens) == len(set(vocab.tokens))
    for i in (0, 17, vocab.size - 1):
        assert vocab.id_of(vocab.token_of(i)) == i
    # Phenotypes are what the train split holds, sorted.
    assert vocab.phenotypes == sorted(set(train.visit_phenotypes["phenotype"]))
    # Diagnosis and procedure code 0000 are different tokens; each type has its own UNK.
    assert vocab.id_of("DX//0000") != vocab.id_of("PX//0000")
    assert vocab.id_of("DX//UNK") != vocab.id_of("PX//UNK")
    assert len(vocab.ids_of_type(TokenType.AGE)) == len(AGE_EDGES)  # 15 bins + capped 90
    assert len(vocab.ids_of_type(TokenType.DT)) == len(DT_EDGES) - 1
    summary = vocab.summary()
    assert summary["size"] == vocab.size
    assert sum(summary["size_by_type"].values()) == vocab.size
    assert 0 < summary["coverage"]["diagnosis_occurrences"] < 1


def test_code_vocabulary_respects_min_count(train):
    cfg = VocabularyConfig(min_code_count=20)
    vocab = TokenVocabulary.fit(train, cfg)
    codes = train.visit_codes
    for code_type in ("diagnosis", "procedure"):
        part = codes[codes["code_type"] == code_type]
        counts = part["icd9_code"].value_counts()
        people = part.groupby("icd9_code")["subject_id"].nunique().reindex(counts.index)
        ok = (counts >= 20) & (people >= cfg.min_patients)
        assert vocab.codes[code_type] == sorted(counts.index[ok])
        kept = counts[ok].sum() / counts.sum()
        assert vocab.fit_stats[f"{code_type}_coverage"] == pytest.approx(kept)


@pytest.mark.parametrize("binning", ["quantile", "uniform", "clinical"])
def test_bin_edges_increasing_and_bins_populated(train, binning):
    cfg = VocabularyConfig(binning=binning, n_bins=10, min_bin_count=5)
    vocab = TokenVocabulary.fit(train, cfg)
    meas = train.measurements
    for var in vocab.variables:
        if var.kind != "continuous":
            assert var.bins is None and var.categories
            continue
        edges = var.bins.edges
        assert np.all(np.diff(edges) > 0), var.name
        assert edges[0] == var.valid_low and edges[-1] == var.valid_high
        part = meas[(meas["variable"] == var.name) & meas["value"].notna()]
        values = np.clip(part["value"].to_numpy(), var.valid_low, var.valid_high)
        counts = np.bincount(var.bins.assign(values), minlength=var.bins.n_bins)
        bin_of = var.bins.assign(values)
        people = pd.Series(part["subject_id"].to_numpy()).groupby(bin_of).nunique().reindex(
            range(var.bins.n_bins), fill_value=0).to_numpy()
        low, high = var.bins.bounds()
        if len(values) >= cfg.min_bin_count and part["subject_id"].nunique() >= cfg.min_patients:
            # Sparse bins were merged: every bin holds values of min_patients patients.
            assert counts.min() >= cfg.min_bin_count and people.min() >= cfg.min_patients, (var.name, people)
        real = RealSample(values, part["subject_id"].to_numpy())
        for i, (q, lo, hi, n) in enumerate(zip(var.bins.quantiles, low, high, counts)):
            if n < max(cfg.min_bin_count, 2 * cfg.tail_count + 1) or people[i] < cfg.min_patients:
                assert q is None  # no quantiles of a handful of values or patients
            elif q is not None:
                q = np.asarray(q)
                assert len(q) == cfg.within_bin_quantiles
                assert np.all(np.diff(q) >= 0) and lo <= q[0] and q[-1] <= hi
                # No real extreme, no one patient's value: each depends on min_patients patients.
                assert min(real.patients_behind(x)[0] for x in q) >= cfg.min_patients
        if binning == "clinical":
            clinical = VARIABLES.set_index("variable").loc[var.name, "clinical_edges"]  # parsed floats
            assert set(edges[1:-1]) <= set(clinical)
        if binning == "uniform" and len(edges) == 11:
            assert np.allclose(np.diff(edges), (var.valid_high - var.valid_low) / 10)


def test_fixed_scales_keep_bins_but_no_small_quantiles(train, vocab):
    visits = train.visits
    later = visits["hours_since_previous_visit"].notna()
    young = ~visits["age_is_capped"]
    for name, values, who in (("AGE", visits.loc[young, "age_years"], visits.loc[young, "subject_id"]),
                              ("GAP_VISIT", visits.loc[later, "hours_since_previous_visit"],
                               visits.loc[later, "subject_id"])):
        bins = vocab.scales[name]
        bin_of = bins.assign(values.to_numpy())
        counts = np.bincount(bin_of, minlength=bins.n_bins)
        people = pd.Series(who.to_numpy()).groupby(bin_of).nunique().reindex(range(bins.n_bins), fill_value=0)
        assert any(c < 5 for c in counts), "the test needs a sparse bin"
        cfg = vocab.config
        for q, c, p in zip(bins.quantiles, counts, people):
            if c < max(cfg.min_bin_count, 2 * cfg.tail_count + 1) or p < cfg.min_patients:
                assert q is None, (name, c, p)


def test_vocabulary_stores_no_real_extreme_and_no_rare_category(train, tmp_path):
    """The JSON logged to MLflow: no variable's train minimum or maximum, no LOS extreme, no
    covariate category seen fewer than min_code_count times, and none held by fewer than
    min_patients patients however many visits (they become UNK)."""
    visits = train.visits.copy()
    visits.loc[visits.index[:2], "insurance"] = "Rare plan"  # 2 visits < min_code_count
    many = visits["subject_id"].value_counts().index[:3]  # 3 patients, >= min_code_count visits
    few = visits["subject_id"].isin(many)
    assert few.sum() >= VocabularyConfig().min_code_count
    visits.loc[few, "first_careunit"] = "Few patients unit"
    cohort = StagedCohort(visits, train.visit_codes, train.visit_phenotypes, train.measurements)
    vocab = TokenVocabulary.fit(cohort)
    text = vocab.to_json(tmp_path / "vocabulary.json").read_text()
    assert "Rare plan" not in text and vocab.fit_stats["n_rare_categories_dropped"] >= 2
    assert "Few patients unit" not in text
    assert vocab.covariate_id("insurance", "Rare plan") == vocab.covariate_id("insurance", None)
    stored = json.loads(text)
    meas = train.measurements
    for var in stored["variables"]:
        if var["kind"] != "continuous":
            continue
        values = meas.loc[meas["variable"] == var["name"], "value"].dropna()
        values = values.clip(var["valid_low"], var["valid_high"])
        quantiles = {x for q in var["bins"]["quantiles"] if q for x in q}
        for extreme in (values.min(), values.max()):
            if (values == extreme).sum() <= vocab.config.tail_count:
                assert extreme not in quantiles, (var["name"], extreme)
    los = visits["los_hours"].dropna()
    assert los.min() not in stored["los_quantiles"] and los.max() not in stored["los_quantiles"]


def test_sparse_variable_gets_no_quantiles(train):
    sparse = train.measurements["variable"] == "lactate"
    keep = ~sparse | (np.cumsum(sparse) <= 3)  # only 3 lactate values left
    cohort = StagedCohort(train.visits, train.visit_codes, train.visit_phenotypes,
                          train.measurements[keep.to_numpy()].reset_index(drop=True))
    vocab = TokenVocabulary.fit(cohort)
    lactate = vocab.variable("lactate")
    assert lactate.bins.n_bins == 1 and lactate.bins.quantiles == [None]
    # Nothing in the JSON equals one of those three values.
    raw = set(cohort.measurements.loc[cohort.measurements["variable"] == "lactate", "value"])
    stored = set(lactate.bins.edges.tolist())
    assert not (raw & stored - {lactate.valid_low, lactate.valid_high})


def test_vocabulary_ids_stable_under_shuffled_input(train, vocab):
    rng = np.random.default_rng(7)
    shuffled = StagedCohort(*(f.iloc[rng.permutation(len(f))].reset_index(drop=True)
                              for f in train.frames()))
    again = TokenVocabulary.fit(shuffled, VocabularyConfig())
    assert again.tokens == vocab.tokens
    assert again.version == vocab.version


def test_vocabulary_json_round_trip(vocab, tmp_path):
    path = vocab.to_json(tmp_path / "vocab.json")
    text = path.read_text()
    json.loads(text)  # plain JSON, no NaN/Infinity
    assert "NaN" not in text and "Infinity" not in text
    loaded = TokenVocabulary.from_json(path)
    assert loaded.version == vocab.version
    assert loaded.tokens == vocab.tokens
    np.testing.assert_array_equal(loaded._qtable, vocab._qtable)
    # An edited file no longer matches its version.
    d = json.loads(text)
    d["variables"][5]["bins"]["edges"][1] += 0.001
    (tmp_path / "edited.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="version"):
        TokenVocabulary.from_json(tmp_path / "edited.json")


def test_config_versions_differ(train, vocab):
    other = TokenVocabulary.fit(train, VocabularyConfig(binning="clinical"))
    assert other.version != vocab.version


# ----------------------------------------------------------------------------------------------
# Encoding


def test_encode_structure(vocab, train):
    seqs = encode(train, vocab)
    assert seqs.tokens.dtype == np.int32 and seqs.offsets.dtype == np.int64
    assert len(seqs) == train.n_patients
    assert np.all(np.diff(seqs.subject_ids) > 0)
    assert seqs.vocab_version == vocab.version
    toks = seqs.tokens
    assert np.all(toks[seqs.offsets[:-1]] == vocab.bos_id)
    assert np.all(toks[seqs.offsets[1:] - 1] == vocab.eos_id)
    assert len(seqs.visit_starts) == len(train.visits)
    first_types = vocab.token_types[toks[seqs.visit_starts]]
    assert set(first_types.tolist()) <= {TokenType.AGE, TokenType.GAP_VISIT}
    # One visit per </adm>, one AGE per visit.
    assert np.sum(toks == vocab.end_adm_id) == len(train.visits)
    assert np.sum(vocab.token_types[toks] == TokenType.AGE) == len(train.visits)
    v = find_violations(toks, seqs.offsets, vocab.token_types, vocab.value_rank)
    assert v.valid.all(), v.counts()
    # Every measurement row ends in exactly one DT token: rows == distinct (stay, hours).
    n_rows = train.measurements.groupby(["icustay_id", "hours"]).ngroups
    assert np.sum(vocab.token_types[toks] == TokenType.DT) == n_rows


def test_encode_independent_of_row_order(vocab, train):
    rng = np.random.default_rng(3)
    shuffled = StagedCohort(*(f.iloc[rng.permutation(len(f))].reset_index(drop=True)
                              for f in train.frames()))
    a, b = encode(train, vocab), encode(shuffled, vocab)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.visit_starts, b.visit_starts)


def test_parallel_patient_blocks_give_the_same_sequences(vocab, train, monkeypatch):
    import synehrgy_assets.core.tokens.encoding as tokenizer

    whole = encode(train, vocab, n_threads=1)
    monkeypatch.setattr(tokenizer, "_MIN_CHUNK_ROWS", 500)  # force many blocks on a small cohort
    assert len(tokenizer._patient_blocks(train, 2)) > 2
    blocked = encode(train, vocab, n_threads=2)
    for name in ("tokens", "offsets", "subject_ids", "visit_starts"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(blocked, name), err_msg=name)
    assert blocked.stats == whole.stats
    # Frames not ordered by subject_id are encoded in one block, with the same result.
    shuffled = StagedCohort(*(f.iloc[::-1].reset_index(drop=True) for f in train.frames()))
    assert tokenizer._patient_blocks(shuffled, 2) == []
    np.testing.assert_array_equal(encode(shuffled, vocab, n_threads=2).tokens, whole.tokens)


def test_sequences_save_load(vocab, train, tmp_path):
    seqs = encode(train, vocab)
    seqs.save(tmp_path / "seqs")
    loaded = TokenSequences.load(tmp_path / "seqs", mmap=True)
    assert isinstance(loaded.tokens, np.memmap)
    np.testing.assert_array_equal(loaded.tokens, seqs.tokens)
    np.testing.assert_array_equal(loaded.patient(3), seqs.patient(3))
    assert loaded.vocab_version == vocab.version and loaded.stats == seqs.stats


def _drop_column(cohort: StagedCohort, table: str, column: str) -> StagedCohort:
    frames = dict(zip(["visits", "visit_codes", "visit_phenotypes", "measurements"],
                      cohort.frames()))
    frames[table] = frames[table].drop(columns=[column])
    return StagedCohort(**frames)


@pytest.mark.parametrize("table,column", [("visits", "age_years"), ("visit_codes", "seq_num"),
                                          ("visit_phenotypes", "phenotype"),
                                          ("measurements", "value_text")])
def test_missing_column_is_a_clear_error(vocab, train, table, column):
    small = train.subset(train.visits["subject_id"].unique()[:5])
    bad = _drop_column(small, table, column)
    for call in (lambda: encode(bad, vocab), lambda: TokenVocabulary.fit(bad)):
        with pytest.raises(ValueError, match=rf"{table}.*{column}"):
            call()


def test_unknown_variable_is_a_clear_error(vocab, train):
    small = train.subset(train.visits["subject_id"].unique()[:5])
    meas = small.measurements.copy()
    meas["variable"] = meas["variable"].astype(object)
    meas.loc[3, "variable"] = "blood_unicorn_level"
    bad = StagedCohort(small.visits, small.visit_codes, small.visit_phenotypes, meas)
    with pytest.raises(ValueError, match=r"measurements.*variable.*blood_unicorn_level"):
        encode(bad, vocab)
    with pytest.raises(ValueError, match=r"measurements.*variable.*blood_unicorn_level"):
        TokenVocabulary.fit(bad)


def test_orphan_rows_and_bad_values_are_clear_errors(vocab, train):
    small = train.subset(train.visits["subject_id"].unique()[:5])
    meas = small.measurements.copy()
    meas.loc[0, "icustay_id"] = -1
    with pytest.raises(ValueError, match=r"measurements.*icustay_id"):
        encode(StagedCohort(small.visits, small.visit_codes, small.visit_phenotypes, meas), vocab)
    codes = small.visit_codes.copy()
    codes.loc[0, "code_type"] = "drug"
    with pytest.raises(ValueError, match=r"visit_codes.*code_type"):
        encode(StagedCohort(small.visits, codes, small.visit_phenotypes, small.measurements), vocab)
    visits = small.visits.copy()
    visits.loc[0, "mortality_inhospital"] = 3
    with pytest.raises(ValueError, match=r"visits.*mortality_inhospital"):
        encode(StagedCohort(visits, small.visit_codes, small.visit_phenotypes, small.measurements),
               vocab)
    with pytest.raises(ValueError, match="variables table"):
        TokenVocabulary.fit(small, variables=VARIABLES.drop(columns=["valid_high"]))


# ----------------------------------------------------------------------------------------------
# Round trip: encode -> decode keeps everything the tokens can represent

CONT_VARS = ["heart_rate", "ph", "glucose", "oxygen_saturation", "temperature"]
CAT_VARS = ["gcs_total", "capillary_refill_rate"]
FREQUENT_DX = ["0000", "0001", "0002"]  # Zipf head: always in the vocabulary
RARE_CODES = ["E9999", "V0000"]          # never in train: UNK


def _cat_choice(values):
    return st.sampled_from(list(values) + ["NEVER SEEN", None])


@st.composite
def measurement_row(draw):
    names = draw(st.lists(st.sampled_from(CONT_VARS + CAT_VARS), min_size=0, max_size=4,
                          unique=True))
    row = {}
    for name in names:
        if name in CAT_VARS:
            text, score = draw(st.sampled_from(CATEGORIES[name] + [("weird", 99.0)]))
            row[name] = (score, text)
        else:
            spec = VARIABLES.set_index("variable").loc[name]
            span = spec.valid_high - spec.valid_low
            value = draw(st.one_of(
                st.floats(spec.valid_low - 0.1 * span, spec.valid_high + 0.1 * span),
                st.just(float("nan"))))
            row[name] = (value, None)
    return row


@st.composite
def visit(draw):
    return {
        "age": draw(st.one_of(st.floats(10, 99.99), st.just(90.0))),
        "capped": draw(st.booleans()),
        "gap": draw(st.floats(-5, 200000)),
        "gender": draw(_cat_choice(GENDERS)),
        "ethnicity_group": draw(_cat_choice(ETHNICITIES)),
        "insurance": draw(_cat_choice(INSURANCES)),
        "admission_type": draw(_cat_choice(ADMISSIONS)),
        "first_careunit": draw(_cat_choice(CAREUNITS)),
        "mortality": draw(st.integers(0, 1)),
        "phenotypes": draw(st.lists(st.sampled_from(list(PHENOTYPES[:6]) + ["Not a phenotype"]),
                                    max_size=4)),
        "codes": draw(st.lists(st.tuples(st.sampled_from(["diagnosis", "procedure"]),
                                         st.sampled_from(FREQUENT_DX + RARE_CODES)), max_size=6)),
        "first_hour": draw(st.floats(-2, 30)),
        "row_gaps": draw(st.lists(st.one_of(st.floats(0.001, 300), st.sampled_from([0.25, 1.0])),
                                  max_size=5)),
        "rows": draw(st.lists(measurement_row(), min_size=6, max_size=6)),
    }


@st.composite
def small_cohort(draw):
    patients = draw(st.lists(st.lists(visit(), min_size=1, max_size=3), min_size=1, max_size=3))
    v_rows, c_rows, p_rows, m_rows = [], [], [], []
    icustay = 500
    for p, visits in enumerate(patients):
        for k, v in enumerate(visits):
            icustay += draw(st.integers(1, 3))
            subject = 1000 + p
            v_rows.append({
                "subject_id": subject, "hadm_id": icustay + 1, "icustay_id": icustay,
                "visit_index": k, "intime": pd.NaT, "outtime": pd.NaT, "los_hours": 10.0,
                "hours_since_previous_visit": np.nan if k == 0 else v["gap"],
                "age_years": 90.0 if v["capped"] else v["age"], "age_is_capped": v["capped"],
                "gender": v["gender"], "ethnicity_group": v["ethnicity_group"],
                "insurance": v["insurance"], "admission_type": v["admission_type"],
                "first_careunit": v["first_careunit"], "mortality_inhospital": v["mortality"],
            })
            for seq_num, (code_type, code) in enumerate(v["codes"], start=1):
                c_rows.append({"subject_id": subject, "icustay_id": icustay,
                               "code_type": code_type, "icd9_code": code, "seq_num": seq_num})
            p_rows += [{"subject_id": subject, "icustay_id": icustay, "phenotype": name}
                       for name in v["phenotypes"]]
            hours = v["first_hour"] + np.concatenate([[0.0], np.cumsum(v["row_gaps"])])
            for h, row in zip(hours, v["rows"]):
                for name, (value, text) in row.items():
                    m_rows.append({"subject_id": subject, "icustay_id": icustay, "hours": h,
                                   "variable": name, "value": value, "value_text": text})
    from synehrgy_assets.core.cohort import MART_COLUMNS
    frames = [pd.DataFrame(rows, columns=MART_COLUMNS[name]) for rows, name in
              zip((v_rows, c_rows, p_rows, m_rows), MART_COLUMNS)]
    frames[3]["value"] = frames[3]["value"].astype(float)
    frames[3]["hours"] = frames[3]["hours"].astype(float)
    frames[1]["seq_num"] = frames[1]["seq_num"].astype(np.int64)
    return StagedCohort(*frames)


def _bin_bounds(bins, value):
    low, high = bins.bounds()
    i = int(bins.assign(np.array([value]))[0])
    return low[i], high[i]


def _expected_codes(codes: pd.DataFrame, vocab, code_type):
    sub = codes[codes["code_type"] == code_type].sort_values("seq_num", kind="stable")
    out = []
    for code in sub["icd9_code"]:
        token = code if code in vocab.codes[code_type] else UNK
        if token not in out:
            out.append(token)
    return out


def _expected_rows(meas: pd.DataFrame, vocab):
    rows = []
    for hours, group in meas.groupby("hours", sort=True):
        row = {}
        for name, value, text in zip(group["variable"], group["value"], group["value_text"]):
            spec = vocab.variable(name)
            if spec.kind == "categorical":
                if text in spec.categories:
                    row[name] = text
            elif not np.isnan(value):
                row[name] = value
        if row:
            rows.append((hours, row))
    return rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohort=small_cohort(), seed=st.integers(0, 2**16))
def test_round_trip(vocab, cohort, seed):
    seqs = encode(cohort, vocab)
    decoded, report = decode(seqs, vocab, seed=seed)
    assert report.n_valid == report.n_sequences == cohort.n_patients
    orig_v = cohort.visits.sort_values(["subject_id", "visit_index"]).reset_index(drop=True)
    dec_v = decoded.visits.sort_values(["subject_id", "visit_index"]).reset_index(drop=True)
    assert len(orig_v) == len(dec_v)
    np.testing.assert_array_equal(orig_v["subject_id"], dec_v["subject_id"])
    age_bins, gap_bins, dt_bins = (vocab.scales[k] for k in ("AGE", "GAP_VISIT", "DT"))
    for o, d in zip(orig_v.itertuples(), dec_v.itertuples()):
        for col in ("gender", "ethnicity_group", "insurance", "admission_type", "first_careunit"):
            expected = getattr(o, col) if getattr(o, col) in vocab.covariates[col] else None
            assert getattr(d, col) == expected, col
        assert d.mortality_inhospital == o.mortality_inhospital
        if o.visit_index > 0:
            # one birth date: a later age is the first age plus the time since the first intime
            first = dec_v[(dec_v["subject_id"] == d.subject_id) & (dec_v["visit_index"] == 0)].iloc[0]
            years = (d.intime - first.intime).total_seconds() / (365.2425 * 86400)
            assert d.age_years == pytest.approx(min(first.age_years + years, AGE_CAP), abs=1e-6) or (
                d.age_is_capped and d.age_years == AGE_CAP)
        elif o.age_is_capped or o.age_years >= AGE_CAP:
            assert d.age_is_capped and d.age_years == AGE_CAP
        else:
            lo, hi = _bin_bounds(age_bins, o.age_years)
            assert not d.age_is_capped and lo <= d.age_years <= hi
        if o.visit_index == 0:
            assert np.isnan(d.hours_since_previous_visit)
        else:
            lo, hi = _bin_bounds(gap_bins, o.hours_since_previous_visit)
            assert lo <= d.hours_since_previous_visit <= hi
        o_ph = cohort.visit_phenotypes[cohort.visit_phenotypes["icustay_id"] == o.icustay_id]
        d_ph = decoded.visit_phenotypes[decoded.visit_phenotypes["icustay_id"] == d.icustay_id]
        assert set(d_ph["phenotype"]) == set(o_ph["phenotype"]) & set(vocab.phenotypes)
        o_cd = cohort.visit_codes[cohort.visit_codes["icustay_id"] == o.icustay_id]
        d_cd = decoded.visit_codes[decoded.visit_codes["icustay_id"] == d.icustay_id]
        for code_type in ("diagnosis", "procedure"):
            got = d_cd[d_cd["code_type"] == code_type].sort_values("seq_num")
            assert got["icd9_code"].tolist() == _expected_codes(o_cd, vocab, code_type)
            assert got["seq_num"].tolist() == list(range(1, len(got) + 1))
        expected_rows = _expected_rows(
            cohort.measurements[cohort.measurements["icustay_id"] == o.icustay_id], vocab)
        d_m = decoded.measurements[decoded.measurements["icustay_id"] == d.icustay_id]
        got_rows = list(d_m.groupby("hours", sort=True))
        assert len(got_rows) == len(expected_rows)
        prev_o, prev_d = 0.0, 0.0
        for i, ((o_hours, o_row), (d_hours, d_row)) in enumerate(zip(expected_rows, got_rows)):
            lo, hi = _bin_bounds(dt_bins, max(o_hours - prev_o, 0.0))
            gap = d_hours - prev_d
            assert lo - 1e-9 <= gap <= hi + 1e-9, (i, o_hours - prev_o, gap)
            prev_o, prev_d = o_hours, d_hours
            assert d_row["variable"].tolist() == sorted(o_row)
            for name, value, text in zip(d_row["variable"], d_row["value"], d_row["value_text"]):
                spec = vocab.variable(name)
                if spec.kind == "categorical":
                    assert text == o_row[name]
                    assert value == dict(CATEGORIES[name])[text]
                else:
                    assert text is None
                    lo, hi = _bin_bounds(spec.bins, o_row[name])
                    assert lo <= value <= hi
                    assert spec.valid_low <= value <= spec.valid_high
        if expected_rows:
            # a stay ends after its last row (a drawn tail), within the real LOS range unless its
            # rows already run past it
            last_row = got_rows[-1][0]
            assert last_row <= d.los_hours <= max(last_row, vocab.los_quantiles[-1])


def test_decode_sampling_follows_within_bin_distribution(vocab, train):
    seqs = encode(train, vocab)
    decoded, _ = decode(seqs, vocab, seed=0)
    again, _ = decode(seqs, vocab, seed=0)
    pd.testing.assert_frame_equal(decoded.measurements, again.measurements)
    real = train.measurements.loc[train.measurements["variable"] == "heart_rate", "value"]
    fake = decoded.measurements.loc[decoded.measurements["variable"] == "heart_rate", "value"]
    # Quantile-matched sampling: decoded quartiles sit close to the real ones.
    q_real, q_fake = np.quantile(real, [0.25, 0.5, 0.75]), np.quantile(fake, [0.25, 0.5, 0.75])
    assert np.allclose(q_real, q_fake, atol=0.02 * (q_real[2] - q_real[0]) + 0.5)


# ----------------------------------------------------------------------------------------------
# Grammar: decoder validation and the sampling constraint


def _walk(constraint, batch, limit, rng):
    """Sample uniformly among allowed tokens, with the length limit passed as `remaining`."""
    state = constraint.start(batch)
    out = np.zeros((batch, limit), dtype=np.int64)
    for t in range(limit):
        mask = constraint.allowed(state, remaining=np.full(batch, limit - t))
        assert mask.any(axis=1).all(), "a sequence was left with no allowed token"
        # Uniform choice among allowed tokens, vectorized with the Gumbel-max trick.
        scores = np.where(mask, rng.random(mask.shape), -1.0)
        tokens = scores.argmax(axis=1)
        out[:, t] = tokens
        state = constraint.advance(state, tokens)
    return out, constraint.finished(state)


@pytest.mark.parametrize("limit,max_visits", [(60, 16), (400, 3)])
def test_grammar_random_walks_always_decode(vocab, limit, max_visits):
    rng = np.random.default_rng(limit)
    constraint = GrammarConstraint(vocab, max_visits=max_visits)
    assert limit >= constraint.min_length
    seqs, finished = _walk(constraint, 64, limit, rng)
    assert finished.all(), "the length limit must force every sequence to close"
    decoded, report = decode(list(seqs), vocab, seed=1)
    assert report.n_valid == 64, report.reasons
    assert decoded.visits.groupby("subject_id").size().max() <= max_visits
    # Trailing padding after </s> only.
    for s in seqs:
        end = int(np.flatnonzero(s == vocab.eos_id)[0])
        assert np.all(s[end + 1:] == vocab.pad_id)


def test_sampling_never_generates_unknown_tokens(vocab):
    """`X//UNK` stands for real values unseen in train: generating it would make NULL covariates."""
    unknown = np.array([t.endswith("//UNK") for t in vocab.tokens])
    assert unknown.any()
    constraint = GrammarConstraint(vocab)
    seqs, finished = _walk(constraint, 64, 400, np.random.default_rng(3))
    assert finished.all()
    assert not np.isin(np.concatenate(list(seqs)), np.flatnonzero(unknown)).any()
    decoded, report = decode(list(seqs), vocab, seed=0)
    assert report.n_valid == 64
    assert decoded.visits[["gender", "insurance", "admission_type", "first_careunit"]].notna().all().all()
    # Right where a gender comes: M is allowed, GENDER//UNK is neither allowed nor accepted.
    state = constraint.start(1)
    constraint.advance(state, np.array([vocab.bos_id]))
    constraint.advance(state, np.array([int(np.flatnonzero(constraint.allowed(state)[0])[0])]))  # an age bin
    mask = constraint.allowed(state)[0]
    assert mask[vocab.id_of("GENDER//M")] and not mask[vocab.id_of("GENDER//UNK")]
    with pytest.raises(ValueError, match="not allowed"):
        constraint.advance(state, np.array([vocab.id_of("GENDER//UNK")]))


def test_constraint_rejects_what_it_masks(vocab):
    constraint = GrammarConstraint(vocab)
    state = constraint.start(2)
    mask = constraint.allowed(state)
    assert mask[:, vocab.bos_id].all() and mask.sum() == 2
    with pytest.raises(ValueError, match="not allowed"):
        constraint.advance(state, np.array([vocab.bos_id, vocab.eos_id]))


def _constraint_accepts(constraint, seq) -> bool:
    state = constraint.start(1)
    for token in seq:
        if not constraint.allowed(state)[0, token]:
            # advance() enforces the same rules as the mask
            with pytest.raises(ValueError, match="not allowed"):
                constraint.advance(state, np.array([token]))
            return False
        state = constraint.advance(state, np.array([token]))
    return bool(constraint.finished(state)[0])


def test_advance_enforces_exactly_the_mask(vocab, train):
    import copy

    seqs = encode(train.subset(train.visits["subject_id"].unique()[:2]), vocab)
    # Real sequences may hold UNK tokens and break the patient rules (which shape sampling only).
    constraint = GrammarConstraint(vocab, allow_unknown=True, consistency=False)
    rng = np.random.default_rng(2)
    state = constraint.start(1)
    checked = 0
    emitted: list[int] = []
    for token in seqs.patient(1):
        mask = constraint.allowed(state)[0]
        assert mask[token]
        for candidate in rng.choice(vocab.size, 6, replace=False):
            trial = copy.deepcopy(state)
            if mask[candidate]:
                constraint.advance(trial, np.array([candidate]))
            else:
                with pytest.raises(ValueError, match="not allowed"):
                    constraint.advance(trial, np.array([candidate]))
            checked += 1
        # Same-type alternatives and tokens already emitted probe the ordering/duplicate rules.
        same = vocab.ids_of_type(TokenType(int(vocab.token_types[token])))
        candidates = list(rng.choice(same, min(4, len(same)), replace=False)) + emitted[-3:]
        for candidate in candidates:
            trial = copy.deepcopy(state)
            if mask[candidate]:
                constraint.advance(trial, np.array([candidate]))
            else:
                with pytest.raises(ValueError, match="not allowed"):
                    constraint.advance(trial, np.array([candidate]))
        state = constraint.advance(state, np.array([token]))
        emitted = [] if token == vocab.end_adm_id else emitted + [int(token)]
    assert constraint.finished(state)[0] and checked > 500


def test_constraint_and_decoder_agree_on_mutations(vocab, train):
    """Mutated real sequences: the decoder rejects exactly what the constraint would forbid."""
    seqs = encode(train.subset(train.visits["subject_id"].unique()[:40]), vocab)
    constraint = GrammarConstraint(vocab, max_visits=100, allow_unknown=True, consistency=False)
    rng = np.random.default_rng(5)
    mutated = []
    for i in range(len(seqs)):
        s = seqs.patient(i).astype(np.int64).copy()
        kind = i % 4
        if kind == 0:   # replace a token with a random one
            s[rng.integers(len(s))] = rng.integers(vocab.size)
        elif kind == 1:  # replace with a token of the same type
            p = rng.integers(len(s))
            same = vocab.ids_of_type(TokenType(int(vocab.token_types[s[p]])))
            s[p] = rng.choice(same)
        elif kind == 2:  # drop a token
            s = np.delete(s, rng.integers(len(s)))
        else:            # duplicate a token
            p = rng.integers(len(s))
            s = np.insert(s, p, s[p])
        mutated.append(s)
    _, report = decode(mutated, vocab)
    expected = np.array([_constraint_accepts(constraint, s) for s in mutated])
    np.testing.assert_array_equal(report.valid, expected)
    assert 0 < expected.sum() < len(expected)


def test_decode_reports_invalid_sequences(vocab, train):
    seqs = encode(train.subset(train.visits["subject_id"].unique()[:3]), vocab)
    good = seqs.patient(0).astype(np.int64)
    types = vocab.token_types[good]
    gender = int(np.flatnonzero(types == TokenType.GENDER)[0])
    last_dt = int(np.flatnonzero(types == TokenType.DT)[-1])
    dx = np.flatnonzero(types == TokenType.DX)

    def adjacent(kind):  # positions p with tokens p and p+1 both of this type
        return np.flatnonzero((types == kind)[:-1] & (types == kind)[1:])

    pheno, value = adjacent(TokenType.PHENOTYPE), adjacent(TokenType.VALUE)
    assert len(dx) and len(pheno) and len(value), "the test needs a richer patient"
    swapped_pheno, swapped_values = good.copy(), good.copy()
    swapped_pheno[pheno[0]:pheno[0] + 2] = good[pheno[0]:pheno[0] + 2][::-1]
    swapped_values[value[0]:value[0] + 2] = good[value[0]:value[0] + 2][::-1]
    cases = {
        "duplicate code in visit": np.insert(good, dx[0] + 1, good[dx[0]]),
        "phenotype repeated or out of order": swapped_pheno,
        "variable repeated or out of order in row": swapped_values,
        "no </s>": good[:-5],
        "missing covariate": np.delete(good, gender),
        "value after last gap": np.delete(good, last_dt),
        "token after </s>": np.append(good, good[1]),
        "pad before </s>": np.insert(good, 3, vocab.pad_id),
        "no <s>": good[1:],
        "empty sequence": good[:0],
    }
    padded = np.append(good, [vocab.pad_id] * 4)
    decoded, report = decode([good, *cases.values(), padded], vocab)
    assert report.n_sequences == len(cases) + 2
    assert report.n_valid == 2 and report.n_invalid == len(cases)
    assert report.reasons == {name: 1 for name in cases}
    assert set(report.reasons) <= set(REASONS)
    assert report.valid.tolist() == [True] + [False] * len(cases) + [True]
    # The valid ones keep their input position as subject id; nothing was repaired.
    assert sorted(decoded.visits["subject_id"].unique()) == [0, len(cases) + 1]


# ----------------------------------------------------------------------------------------------
# Throughput (small by default; SYNEHRGY_BENCH=20000 for the benchmark size)


def test_encode_throughput():
    n = int(os.environ.get("SYNEHRGY_BENCH", "1500"))
    cohort = synthetic_cohort(n, seed=11, min_visits=5, max_visits=5, rows_per_visit=25,
                              value_prob=0.15)
    subjects = cohort.visits["subject_id"].unique()
    vocab = TokenVocabulary.fit(cohort.subset(subjects[: min(n, 2000)]))
    encode(cohort.subset(subjects[:50]), vocab)  # warm-up
    t0 = time.perf_counter()
    seqs = encode(cohort, vocab)
    seconds = time.perf_counter() - t0
    tokens_per_patient = len(seqs.tokens) / len(seqs)
    print(f"\nencode: {n} patients, {tokens_per_patient:.0f} tokens/patient, {seconds:.2f} s, "
          f"{n / seconds:,.0f} patients/s, {len(seqs.tokens) / seconds / 1e6:.1f} M tokens/s")
    assert len(seqs) == n and tokens_per_patient > 500
    sample = np.arange(0, n, max(1, n // 200))
    flat = [seqs.patient(i) for i in sample]
    t0 = time.perf_counter()
    _, report = decode(flat, vocab)
    print(f"decode: {len(flat)} sequences in {time.perf_counter() - t0:.2f} s")
    assert report.n_valid == len(flat)


def test_constraint_torch_masks_match_numpy(vocab):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    np_c, t_c = GrammarConstraint(vocab, max_visits=2), GrammarConstraint(vocab, max_visits=2,
                                                                          device="cpu")
    np_s, t_s = np_c.start(16), t_c.start(16)
    for step in range(120):
        remaining = np.full(16, 120 - step)
        m_np = np_c.allowed(np_s, remaining)
        m_t = t_c.allowed(t_s, torch.as_tensor(remaining))
        assert isinstance(m_t, torch.Tensor) and m_t.dtype == torch.bool
        np.testing.assert_array_equal(m_np, m_t.numpy())
        tokens = np.where(m_np, rng.random(m_np.shape), -1.0).argmax(axis=1)
        np_s = np_c.advance(np_s, tokens)
        t_s = t_c.advance(t_s, torch.as_tensor(tokens))
    assert np_c.finished(np_s).all() and t_c.finished(t_s).all()


def test_encode_accepts_categorical_and_object_text_columns(vocab, train):
    small = train.subset(train.visits["subject_id"].unique()[:30])
    expected = encode(small, vocab)
    for convert in (lambda s: s.astype("category"), lambda s: s.astype(object)):
        meas = small.measurements.copy()
        meas["variable"] = convert(meas["variable"])
        meas["value_text"] = convert(meas["value_text"])
        visits = small.visits.copy()
        visits["insurance"] = convert(visits["insurance"])
        got = encode(StagedCohort(visits, small.visit_codes, small.visit_phenotypes, meas), vocab)
        np.testing.assert_array_equal(got.tokens, expected.tokens)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_vectorized_binning_matches_searchsorted(vocab, data):
    """The encoder's cell-table binning equals a plain searchsorted, also at and around edges."""
    j = data.draw(st.sampled_from([i for i, v in enumerate(vocab.variables) if v.bins is not None]))
    var = vocab.variables[j]
    edges = var.bins.edges
    near = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
    drawn = data.draw(st.lists(st.floats(var.valid_low - 10, var.valid_high + 10), max_size=50))
    values = np.concatenate([near, np.asarray(drawn, dtype=float)])
    meas = pd.DataFrame({"variable": [var.name] * len(values), "value": values,
                         "value_text": pd.Series([None] * len(values), dtype=object)})
    stats: dict = {}
    token, _ = tokenizer_module._value_tokens(meas, vocab, stats)  # the compiled loop
    np.testing.assert_array_equal(token - vocab.value_base[j], var.bins.assign(values))
    clipped = int(np.sum((values < var.valid_low) | (values > var.valid_high)))
    assert stats["n_values_clipped"] == clipped


def test_duplicate_values_keep_the_median_bin(vocab, train):
    small = train.subset(train.visits["subject_id"].unique()[:1])
    meas = small.measurements
    row = meas[meas["variable"] == "heart_rate"].iloc[0]
    bins = vocab.variable("heart_rate").bins
    low, high = bins.bounds()
    # Three values of heart rate at the same time, in three different bins.
    values = [float(low[0]), float(low[5]), float(low[-1])]
    others = meas[~((meas["icustay_id"] == row.icustay_id) & (meas["hours"] == row.hours)
                    & (meas["variable"] == "heart_rate"))]

    def with_values(vals):
        extra = pd.DataFrame([{**row.to_dict(), "value": v} for v in vals])
        frame = pd.concat([others, extra], ignore_index=True)
        return encode(StagedCohort(small.visits, small.visit_codes, small.visit_phenotypes, frame),
                      vocab)

    dup, median_only = with_values(values[::-1]), with_values([values[1]])
    assert dup.stats["n_duplicate_values"] == 2
    np.testing.assert_array_equal(dup.tokens, median_only.tokens)


def _constant_stays(end_of_stay_known: bool = True):
    """One stay per patient, every stay exactly 48 h, rows only inside the window (the shape of a
    PhysioNet-style extract)."""
    cohort = synthetic_cohort(80, seed=3, max_visits=1)
    visits = cohort.visits.assign(los_hours=48.0)
    meas = cohort.measurements
    meas = meas[(meas["hours"] >= 0) & (meas["hours"] < 48)].reset_index(drop=True)
    constant = StagedCohort(visits, cohort.visit_codes, cohort.visit_phenotypes, meas)
    vocab = TokenVocabulary.fit(constant)
    if not end_of_stay_known:  # a vocabulary from before the stay-end quantiles
        vocab.stay_offsets["last_row_to_outtime_hours"] = vocab.stay_offsets["last_row_hours"] = None
    return constant, vocab


def test_constant_stays_decode_to_their_length_and_may_close_before_it():
    from synehrgy_assets.core.tokens.consistency import PatientConsistency

    constant, vocab = _constant_stays()
    assert set(vocab.los_quantiles) == {48.0}
    last_rows = vocab.stay_offsets["last_row_hours"]
    assert last_rows is not None and max(last_rows) < 48.0
    # the sampler lets a stay close at the real stays' last rows, not only once 48 h are charted
    assert PatientConsistency(vocab, np.asarray).min_stay_hours == last_rows[0] < 48.0
    decoded, report = decode(encode(constant, vocab), vocab, seed=1)
    assert report.n_valid == constant.n_patients
    last_row = decoded.measurements.groupby("icustay_id")["hours"].max()
    los = decoded.visits.set_index("icustay_id")["los_hours"]
    # 48 h, unless the drawn row times already ran past 48 h (never before its own last row)
    np.testing.assert_array_equal(los, np.maximum(48.0, last_row.reindex(los.index).fillna(0.0)))
    assert (los == 48.0).mean() > 0.95
    # without the stay-end quantiles a stay ends at its last row, never at 48 h: what the test catches
    _, old = _constant_stays(end_of_stay_known=False)
    decoded_old, _ = decode(encode(constant, old), old, seed=1)
    assert (decoded_old.visits["los_hours"] < 48.0).mean() > 0.5
    assert PatientConsistency(old, np.asarray).min_stay_hours == 48.0


def test_stay_length_is_the_identity_on_a_continuous_los_and_never_before_the_last_row():
    from synehrgy_assets.core.tokens.stay_end import stay_length

    los = list(np.linspace(10.0, 100.0, 9))
    last = np.array([20.0, 47.2, 5.0, 120.0])
    out = stay_length(last, np.array([1.0, 0.3, 0.5, 2.0]), los)
    np.testing.assert_allclose(out[:2], [21.0, 47.5])
    assert out[2] == 10.0          # below every real LOS: the shortest real one
    assert out[3] == 120.0         # past every real LOS: never before its own last row
    np.testing.assert_array_equal(stay_length(last, np.zeros(4), None), last)


def test_an_outer_bin_without_quantiles_decodes_near_its_inner_edge_not_out_to_the_bound():
    """A basophil share's top bin runs to the validity bound 100 %: without k-anonymous quantiles it
    must not decode uniformly up to 100 (it did: synthetic basophils of 98 %), but over one
    neighbouring bin's width past the inner edge. Inner bins and bins with quantiles keep theirs."""
    from synehrgy_assets.core.tokens.bins import NumericBins

    q = list(np.linspace(0.1, 0.2, 5))
    bins = NumericBins(np.array([0.0, 0.1, 0.2, 0.4, 0.76, 100.0]), [None, q, None, None, None])
    table = bins.quantile_table(5)
    assert table[-1].min() == 0.76 and table[-1].max() == pytest.approx(0.76 + 0.36)
    assert table[0].tolist() == pytest.approx(np.linspace(0.0, 0.1, 5).tolist())  # as wide as its neighbour
    assert table[1].tolist() == q and table[2].tolist() == pytest.approx(np.linspace(0.2, 0.4, 5).tolist())
    bottom = NumericBins(np.array([0.0, 91.0, 94.0, 97.0, 100.0]), [None, None, None, None]).quantile_table(3)
    assert bottom[0].tolist() == pytest.approx([88.0, 89.5, 91.0])  # SpO2 stays near 91, not down to 0
    aged = NumericBins(np.array([18.0, 20.0, 25.0, 90.0]), [None] * 4, top_bucket=90.0).quantile_table(3)
    assert aged[-1].tolist() == [90.0, 90.0, 90.0] and aged[2].tolist() == pytest.approx([25.0, 27.5, 30.0])
