"""Patient-level consistency of sampled sequences (core/tokens/consistency.py, relations.py).

Random walks that pick uniformly among the allowed tokens are the harshest sampler there is: any
rule the masks leave open, a walk breaks. Every rule of the module docstring is checked on the
decoded walks, and each test also runs with the rules off to show that it can fail.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synehrgy_assets.core.tokens import GrammarConstraint, TokenVocabulary, VocabularyConfig, decode
from synehrgy_assets.core.tokens.grammar import TokenType
from tests.helpers.toy_cohort import synthetic_cohort

T = TokenType


def _with_relations_data(cohort):
    """The tokenizer test cohort with blood pressure and GCS rows that obey the relations and an
    ICU database per stay whose items differ (gcs_total only in carevue stays)."""
    rng = np.random.default_rng(7)
    v = cohort.visits.copy()
    v["icu_database"] = np.where(rng.random(len(v)) < 0.5, "carevue", "metavision")
    rows = []
    for stay, db in zip(v["icustay_id"], v["icu_database"]):
        subject = int(v.loc[v["icustay_id"] == stay, "subject_id"].iloc[0])
        for hour in (1.0, 2.0, 3.5):
            dia = rng.normal(60, 10)
            pulse = abs(rng.normal(45, 10)) + 5
            rows += [(subject, stay, hour, "diastolic_blood_pressure", dia, None),
                     (subject, stay, hour, "mean_blood_pressure", dia + pulse / 3, None),
                     (subject, stay, hour, "systolic_blood_pressure", dia + pulse, None)]
            eye, motor, verbal = rng.integers(1, 5), rng.integers(1, 7), rng.integers(1, 6)
            rows += [(subject, stay, hour, "gcs_eye_opening", float(eye), None),
                     (subject, stay, hour, "gcs_motor_response", float(motor), None),
                     (subject, stay, hour, "gcs_verbal_response", float(verbal), None)]
            if db == "carevue":
                rows.append((subject, stay, hour, "gcs_total", float(eye + motor + verbal), None))
    extra = pd.DataFrame(rows, columns=list(cohort.measurements.columns))
    keep = ~cohort.measurements["variable"].isin(
        ["diastolic_blood_pressure", "mean_blood_pressure", "systolic_blood_pressure", "gcs_total",
         "gcs_eye_opening", "gcs_motor_response", "gcs_verbal_response"])
    meas = pd.concat([cohort.measurements[keep].astype({"variable": object, "value_text": object}), extra],
                     ignore_index=True)
    meas = meas.sort_values(["subject_id", "icustay_id", "hours", "variable"], kind="stable")
    from synehrgy_assets.core.cohort import StagedCohort

    return StagedCohort(v, cohort.visit_codes, cohort.visit_phenotypes, meas.reset_index(drop=True))


@pytest.fixture(scope="module")
def vocab():
    train = _with_relations_data(synthetic_cohort(300, seed=4))
    return TokenVocabulary.fit(train, VocabularyConfig())


def _walk(constraint, n, limit, rng):
    state = constraint.start(n)
    seqs = np.zeros((n, limit), dtype=np.int64)
    for t in range(limit):
        mask = constraint.allowed(state, np.full(n, limit - t))
        done = constraint.finished(state)
        choice = np.array([rng.choice(np.flatnonzero(m)) for m in mask])
        choice[done] = 0
        seqs[:, t] = choice
        state = constraint.advance(state, choice)
        if constraint.finished(state).all():
            return seqs[:, :t + 1]
    return seqs


def _decoded(vocab, consistency, seed=0, n=48):
    constraint = GrammarConstraint(vocab, max_visits=6, consistency=consistency)
    seqs = _walk(constraint, n, 700, np.random.default_rng(seed))
    cohort, report = decode(list(seqs), vocab, seed=seed)
    assert report.n_valid == n
    return cohort


def _patient_rule_breaks(cohort, vocab) -> dict[str, int]:
    v = cohort.visits.sort_values(["subject_id", "visit_index"])
    by = v.groupby("subject_id")
    out = {
        "gender changes": int((by["gender"].nunique() > 1).sum()),
        "ethnicity changes": int((by["ethnicity_group"].nunique() > 1).sum()),
        "age decreases": int((by["age_years"].diff() < -1e-9).groupby(v["subject_id"]).any().sum()),
        "visit after death": int((by["mortality_inhospital"].cumsum().groupby(v["subject_id"]).shift(1)
                                  .fillna(0) > 0).groupby(v["subject_id"]).any().sum()),
        "admission before the previous discharge": int(
            ((v["admittime"] < by["dischtime"].shift(1))).groupby(v["subject_id"]).any().sum()),
        "visit without times": int(v[["intime", "outtime", "admittime", "dischtime"]].isna().any(axis=1).sum()),
    }
    m = cohort.measurements.merge(v[["icustay_id", "icu_database"]], on="icustay_id")
    allowed = vocab.variable_databases
    bad_db = m.apply(lambda r: r["icu_database"] in vocab.covariates["icu_database"]
                     and r["icu_database"] not in allowed.get(r["variable"], [r["icu_database"]]), axis=1)
    out["variable outside its ICU database"] = int(m.loc[bad_db, "icustay_id"].nunique())
    wide = m.pivot_table(index=["icustay_id", "hours"], columns="variable", values="value", aggfunc="first")
    bp = wide.reindex(columns=["diastolic_blood_pressure", "mean_blood_pressure", "systolic_blood_pressure"])
    dia, mean, sys = (bp[c] for c in bp.columns)
    out["systolic <= diastolic or mean outside"] = int(
        ((sys <= dia) | (mean < dia) | (mean > sys)).sum())
    gcs = wide.reindex(columns=["gcs_total", "gcs_eye_opening", "gcs_motor_response", "gcs_verbal_response"])
    full = gcs.notna().all(axis=1)
    total = gcs["gcs_total"]
    parts = gcs[["gcs_eye_opening", "gcs_motor_response", "gcs_verbal_response"]].sum(axis=1)
    out["GCS total != parts"] = int((full & (total != parts)).sum())
    return out


def test_the_vocabulary_learns_where_each_variable_is_charted(vocab):
    assert vocab.covariates["icu_database"] == ["carevue", "metavision"]
    assert vocab.variable_databases["gcs_total"] == ["carevue"]
    assert vocab.variable_databases["heart_rate"] == ["carevue", "metavision"]
    kinds = {r["kind"] for r in vocab.relations}
    assert kinds == {"less_than", "sum_of"}
    # the test cohort has no admission times; where a stay ends after its last row is learned
    assert all(vocab.stay_offsets[k] is None for k in ("admit_to_icu_hours", "icu_to_discharge_hours_survived",
                                                       "icu_to_discharge_hours_died"))
    assert vocab.stay_offsets["last_row_hours"] and vocab.stay_offsets["last_row_to_outtime_hours"]


def test_sampled_patients_keep_every_rule(vocab):
    breaks = _patient_rule_breaks(_decoded(vocab, consistency=True), vocab)
    assert breaks == {name: 0 for name in breaks}, breaks


def test_without_the_rules_random_walks_break_them(vocab):
    """The same walks with the rules off: each rule is broken, so the test above can fail."""
    breaks = _patient_rule_breaks(_decoded(vocab, consistency=False), vocab)
    for name in ("gender changes", "ethnicity changes", "visit after death",
                 "variable outside its ICU database"):
        assert breaks[name] > 0, (name, breaks)


def _row_state(vocab, constraint, values):
    """A state inside a first visit's measurement row holding `values` (token strings)."""
    state = constraint.start(1)
    head = [vocab.bos_id, vocab.age_base + 5, vocab.id_of("GENDER//M")]
    for token in head:
        state = constraint.advance(state, np.array([token]))
    while int(state.last[0]) != vocab.end_code_id:
        mask = constraint.allowed(state)[0]
        if state.phase[0] == T.FIRST_CAREUNIT:
            token = vocab.id_of("ICU_DATABASE//carevue")
        else:
            token = int(np.flatnonzero(mask)[-1]) if state.phase[0] != T.PHENOTYPE else vocab.end_label_id
        if state.phase[0] in (T.END_LABEL, T.DX, T.PX):
            token = vocab.end_code_id
        state = constraint.advance(state, np.array([token]))
    for token in values:
        state = constraint.advance(state, np.array([vocab.id_of(token)]))
    return state


def test_blood_pressure_bins_that_cannot_agree_are_masked(vocab):
    constraint = GrammarConstraint(vocab)
    dia = vocab.variable("diastolic_blood_pressure")
    top = f"diastolic_blood_pressure//{dia.bins.n_bins - 1}"
    state = _row_state(vocab, constraint, [top])
    mask = constraint.allowed(state)[0]
    sys_ids = vocab.value_base[vocab.variable_names.index("systolic_blood_pressure")] + np.arange(
        vocab.variable("systolic_blood_pressure").bins.n_bins)
    low_dia = vocab.bin_low[vocab.id_of(top)]
    for tid in sys_ids:
        assert mask[tid] == (vocab.bin_high[tid] - low_dia > 2.0), vocab.tokens[tid]
    assert mask[sys_ids].any()


def test_gcs_parts_must_complete_the_total(vocab):
    """eye 4 + motor 6 + total 12: only a verbal score of 2 completes the row."""
    constraint = GrammarConstraint(vocab)
    state = _row_state(vocab, constraint, ["gcs_eye_opening//4", "gcs_motor_response//6", "gcs_total//12"])
    mask = constraint.allowed(state)[0]
    verbal = [t for t in vocab.tokens if t.startswith("gcs_verbal_response//")]
    assert [t for t in verbal if mask[vocab.id_of(t)]] == ["gcs_verbal_response//2"]
    # and a total the parts cannot reach is masked: eye 4 + motor 6 leave 11..15
    state = _row_state(vocab, constraint, ["gcs_eye_opening//4", "gcs_motor_response//6"])
    mask = constraint.allowed(state)[0]
    totals = {t: bool(mask[vocab.id_of(t)]) for t in vocab.tokens if t.startswith("gcs_total//")}
    assert {t for t, ok in totals.items() if ok} == {f"gcs_total//{k}" for k in range(11, 16)} & set(totals)
    off = GrammarConstraint(vocab, consistency=False)
    state = _row_state(vocab, off, ["gcs_eye_opening//4", "gcs_motor_response//6", "gcs_total//12"])
    assert sum(off.allowed(state)[0][vocab.id_of(t)] for t in verbal) == len(verbal)


def test_decoding_draws_row_values_that_agree(vocab):
    """Bins that overlap: independent draws would cross, joint draws never do."""
    from synehrgy_assets.core.tokens.relations import sample_row_values

    names = ["diastolic_blood_pressure", "systolic_blood_pressure"]
    # the lowest systolic bin and the highest diastolic bin that overlaps it: independent draws
    # often cross there
    sys_tok = int(vocab.value_base[vocab.variable_names.index(names[1])])
    dia_base = int(vocab.value_base[vocab.variable_names.index(names[0])])
    dia_ids = dia_base + np.arange(vocab.variable(names[0]).bins.n_bins)
    overlapping = [t for t in dia_ids if vocab.bin_low[t] < vocab.bin_high[sys_tok] - 2]
    pick = {names[0]: int(overlapping[-1]), names[1]: sys_tok}
    n_rows = 2000
    tok = np.tile([pick[names[0]], pick[names[1]]], n_rows)
    row = np.repeat(np.arange(n_rows), 2)
    rng = np.random.default_rng(0)
    from synehrgy_assets.core.tokens.decoding import _sample_bins

    free = _sample_bins(vocab, tok, rng)
    crossed = (free[1::2] - free[0::2] < 2).mean()
    joint = sample_row_values(vocab, tok, row, free, rng)
    assert crossed > 0.01
    assert (joint[1::2] - joint[0::2] >= 2 - 1e-9).all()


def test_a_partner_drawn_at_its_edge_leaves_one_value_and_it_is_taken(vocab):
    """mean is drawn first, up to the edge the systolic bin leaves it; the systolic value then has
    exactly one feasible value (its bin's upper edge), which must be taken, not the free draw."""
    import copy

    from synehrgy_assets.core.tokens.relations import less_than_pairs, sample_row_values

    v = copy.deepcopy(vocab)
    mean_j, sys_j = (v.variable_names.index(n) for n in ("mean_blood_pressure", "systolic_blood_pressure"))
    margin = next(m for a, b, m in less_than_pairs(v) if (a, b) == (mean_j, sys_j))
    mean_tok, sys_tok = int(v.value_base[mean_j]) + 2, int(v.value_base[sys_j])
    v.bin_high[sys_tok] = v.bin_low[mean_tok] + margin + 0.01
    n_rows = 50
    tok = np.tile([mean_tok, sys_tok], n_rows)
    row = np.repeat(np.arange(n_rows), 2)
    free = np.tile([v.bin_high[mean_tok], v.bin_low[sys_tok]], n_rows)  # crossed on purpose
    joint = sample_row_values(v, tok, row, free, np.random.default_rng(0))
    assert (joint[1::2] - joint[0::2] >= margin - 1e-9).all()
    assert (joint[1::2] <= v.bin_high[sys_tok] + 1e-9).all()


def test_nothing_follows_an_in_hospital_death(vocab):
    constraint = GrammarConstraint(vocab)
    state = constraint.start(1)
    rng = np.random.default_rng(0)
    seq = []
    while not constraint.finished(state)[0]:
        mask = constraint.allowed(state)[0]
        if mask[vocab.mortality_base + 1]:
            token = vocab.mortality_base + 1
        else:
            token = int(rng.choice(np.flatnonzero(mask)))
        seq.append(token)
        state = constraint.advance(state, np.array([token]))
        if token == vocab.end_adm_id:
            mask = constraint.allowed(state)[0]
            assert mask[vocab.eos_id] and not mask[vocab.token_types == T.GAP_VISIT].any()
    assert seq.count(vocab.end_adm_id) == 1


def test_a_later_visit_cannot_change_gender_or_go_back_in_age(vocab):
    constraint = GrammarConstraint(vocab)
    state = constraint.start(1)
    age_hi = vocab.age_base + 8
    head = [vocab.bos_id, age_hi, vocab.id_of("GENDER//F")]
    for token in head:
        state = constraint.advance(state, np.array([token]))
    # run the first visit to its end with allowed tokens
    rng = np.random.default_rng(1)
    while int(state.last[0]) != vocab.end_adm_id:
        mask = constraint.allowed(state)[0]
        mask[vocab.mortality_base + 1] = False
        state = constraint.advance(state, np.array([int(rng.choice(np.flatnonzero(mask)))]))
    state = constraint.advance(state, np.array([vocab.gap_visit_base + 3]))
    mask = constraint.allowed(state)[0]
    ages = np.flatnonzero(mask & (vocab.token_types == T.AGE))
    assert ages.min() == age_hi
    with pytest.raises(ValueError, match="not allowed"):
        constraint.advance(state, np.array([age_hi - 1]))
    state = constraint.advance(state, np.array([age_hi + 1]))
    mask = constraint.allowed(state)[0]
    assert np.flatnonzero(mask).tolist() == [vocab.id_of("GENDER//F")]


def test_torch_masks_equal_numpy_masks(vocab):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    np_c = GrammarConstraint(vocab, max_visits=3)
    t_c = GrammarConstraint(vocab, max_visits=3, device=torch.device("cpu"))
    s_np, s_t = np_c.start(8), t_c.start(8)
    for _ in range(400):
        m_np = np_c.allowed(s_np)
        m_t = t_c.allowed(s_t).numpy()
        np.testing.assert_array_equal(m_np, m_t)
        done = np_c.finished(s_np)
        tok = np.array([rng.choice(np.flatnonzero(m)) for m in m_np])
        tok[done] = 0
        s_np = np_c.advance(s_np, tok)
        s_t = t_c.advance(s_t, torch.as_tensor(tok))
