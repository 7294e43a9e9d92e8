"""Patients, admissions, ICU stays and their ICD-9 codes for one chunk of patients.

`_structure` runs the stages below in a fixed order on one random stream: each stage reads what
the earlier ones left on a shared draft and adds its own draws, so the order of the calls (and of
the draws inside each stage) is what makes a seed reproduce the same hospital.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from synehrgy_assets.core.mimic_dictionaries import CodeUniverse
from synehrgy_assets.core.synthetic_hospital.arrays import (
    _EPOCH_2100,
    _EPOCH_2190,
    _SECONDS_PER_YEAR,
    NO_TIME,
    _choice,
    _expand,
    _floor_day,
    _group_cumsum,
    _logit,
    _sigmoid,
)
from synehrgy_assets.core.synthetic_hospital.model import (
    _ACUTE_CLUSTERS,
    _ADM_LOCATIONS,
    _BACKGROUND_DX,
    _BACKGROUND_PX,
    _CLUSTER_NAMES,
    _CLUSTERS,
    _DISCH_LOCATIONS,
    _DISCH_P,
    _ETHNICITIES,
    _ETHNICITY_P,
    _INSURANCE,
    _LANGUAGE_P,
    _LANGUAGES,
    _MARITAL,
    _MARITAL_P,
    _MISC_PRINCIPAL,
    _MORTALITY_INTERCEPT,
    _RELIGION_P,
    _RELIGIONS,
)


@dataclass
class _Structure:
    # patients
    subject_id: np.ndarray
    male: np.ndarray
    dob: np.ndarray
    dod: np.ndarray  # NO_TIME when alive
    dod_hosp: np.ndarray
    dod_ssn: np.ndarray
    ethnicity: np.ndarray
    carevue: np.ndarray
    # admissions (sorted by patient, then time)
    a_patient: np.ndarray
    hadm_id: np.ndarray
    admittime: np.ndarray
    dischtime: np.ndarray
    deathtime: np.ndarray  # NO_TIME when survived
    a_type: np.ndarray
    a_location: np.ndarray
    d_location: np.ndarray
    insurance: np.ndarray
    language: np.ndarray
    religion: np.ndarray
    marital: np.ndarray
    ed_in: np.ndarray
    ed_out: np.ndarray
    diagnosis: list[str]
    diagnosis_idx: np.ndarray
    died: np.ndarray
    n_stays: np.ndarray
    age: np.ndarray  # real age in years at admission (> 89 kept real here)
    s_adm: np.ndarray
    clusters: np.ndarray  # (n_adm, n_clusters) bool
    # stays (sorted by admission, then time)
    s_adm_index: np.ndarray
    icustay_id: np.ndarray
    first_cu: np.ndarray
    last_cu: np.ndarray
    first_ward: np.ndarray
    last_ward: np.ndarray
    intime: np.ndarray
    outtime: np.ndarray
    s_stay: np.ndarray
    drift: np.ndarray
    intubated: np.ndarray
    art_line: np.ndarray
    # codes (row per code, sorted by admission and seq_num)
    dx_adm: np.ndarray
    dx_code: np.ndarray  # index into the universe, -1 = missing code
    px_adm: np.ndarray
    px_code: np.ndarray



def _structure(rng: np.random.Generator, n: int, patient_offset: int, id_offsets: dict[str, int],
               universe: CodeUniverse) -> _Structure:
    """Patients, admissions, stays and codes for one chunk of `n` patients."""
    d = SimpleNamespace(n=n)
    _draw_patients(rng, d, patient_offset)
    _draw_admissions(rng, d)
    _draw_clusters(rng, d)
    _draw_mortality(rng, d)
    _draw_stay_times(rng, d)
    _absolute_times(d)
    _draw_births_and_deaths(rng, d)
    _draw_admission_columns(rng, d)
    _draw_stay_columns(rng, d)
    _draw_diagnoses(rng, d, universe)
    _draw_procedures(rng, d, universe)
    # ids: unique blocks per chunk, shuffled inside the block so ids don't follow time
    hadm_id = 100_000 + id_offsets["hadm"] + rng.permutation(d.m)
    icustay_id = 200_000 + id_offsets["icustay"] + rng.permutation(d.q)
    id_offsets["hadm"] += d.m
    id_offsets["icustay"] += d.q
    return _Structure(
        subject_id=d.subject_id, male=d.male, dob=d.dob, dod=d.dod, dod_hosp=d.dod_hosp, dod_ssn=d.dod_ssn,
        ethnicity=d.ethnicity, carevue=d.carevue,
        a_patient=d.a_pat, hadm_id=hadm_id, admittime=d.admittime, dischtime=d.dischtime,
        deathtime=d.deathtime, a_type=d.a_type, a_location=d.loc, d_location=d.dloc, insurance=d.ins,
        language=d.lang, religion=d.relig, marital=d.marital, ed_in=d.ed_in, ed_out=d.ed_out,
        diagnosis=d.diag_texts, diagnosis_idx=d.diagnosis_idx,
        died=d.died, n_stays=d.n_stays, age=d.age, s_adm=d.s_adm, clusters=d.clusters,
        s_adm_index=d.st_adm, icustay_id=icustay_id, first_cu=d.first_cu, last_cu=d.last_cu,
        first_ward=d.first_ward, last_ward=d.last_ward, intime=d.intime, outtime=d.outtime, s_stay=d.s_stay,
        drift=d.drift, intubated=d.intubated, art_line=d.art_line,
        dx_adm=d.dx_a, dx_code=d.dx_c, px_adm=d.px_a, px_code=d.px_c,
    )


def _draw_patients(rng: np.random.Generator, d: SimpleNamespace, patient_offset: int) -> None:
    n = d.n
    g = patient_offset + np.arange(n)
    d.subject_id = 10_000 + 2 * g + rng.integers(0, 2, n)
    kind = _choice(rng, ["adult", "old", "neonate", "teen"], [.935, .05, .009, .006], n)
    d.neonate, d.old, teen = kind == 2, kind == 1, kind == 3
    d.male = rng.random(n) < np.where(d.neonate, .5, .56)
    age_first = np.where(d.old, 90 + rng.gamma(2.0, 1.8, n), 18 + 71.9 * rng.beta(2.6, 1.5, n))
    d.age_first = np.where(d.neonate, 0.0, np.where(teen, rng.uniform(15, 18, n), age_first))
    d.frailty = rng.normal(0, 1, n)
    d.carevue = rng.random(n) < .52
    d.ethnicity = _choice(rng, _ETHNICITIES, _ETHNICITY_P, n)
    d.base = rng.integers(_EPOCH_2100, _EPOCH_2190, n) // 60 * 60


def _draw_admissions(rng: np.random.Generator, d: SimpleNamespace) -> None:
    neonate = d.neonate
    n_adm = 1 + _choice(rng, [0, 1, 2, 3], [.87, .09, .03, .01], d.n)
    n_adm[neonate] = 1
    a_pat, a_k = _expand(n_adm)
    m = len(a_pat)
    elective = (rng.random(m) < .16) & ~neonate[a_pat]
    urgent = (rng.random(m) < .035) & ~elective & ~neonate[a_pat]
    d.a_type = np.where(neonate[a_pat], 3, np.where(elective, 1, np.where(urgent, 2, 0)))
    d.gap_days = np.where(a_k > 0, np.clip(rng.lognormal(np.log(150), 1.0, m), 2, 2000), 0.0)
    d.s_adm = 0.45 * d.frailty[a_pat] + 0.9 * rng.normal(0, 1, m) - 0.5 * elective
    n_stays = 1 + _choice(rng, [0, 1, 2], [.95, .045, .005], m)
    n_stays[(a_k > 0) & (rng.random(m) < .12)] = 0
    d.a_pat, d.a_k, d.m, d.elective, d.n_stays = a_pat, a_k, m, elective, n_stays


def _draw_clusters(rng: np.random.Generator, d: SimpleNamespace) -> None:
    """Clinical clusters (chronic first, acute ones depend on them) and the primary one."""
    m, a_pat, s_adm, elective = d.m, d.a_pat, d.s_adm, d.elective
    d.a = a = (np.minimum(d.age_first[a_pat], 90) - 65) / 10  # age at the first admission
    mal = d.male[a_pat].astype(float)
    C = d.C = {}

    def draw(name, logit):
        C[name] = (rng.random(m) < _sigmoid(logit)) & ~d.neonate[a_pat]

    draw("copd", -2.3 + .25 * a)
    draw("diabetes", -1.5 + .1 * a)
    draw("chf", -1.7 + .45 * a + .2 * s_adm)
    draw("ckd", -2.4 + .35 * a)
    draw("liver", -2.9 - .1 * a + .3 * s_adm)
    draw("cancer", -2.5 + .2 * a)
    draw("sepsis", -1.8 + .9 * s_adm + .4 * C["cancer"] + .3 * C["liver"] - 1.5 * elective)
    draw("resp_failure", -1.7 + .8 * s_adm + 1.0 * C["copd"] + .5 * C["sepsis"] - 1.0 * elective)
    draw("aki", -1.9 + .6 * s_adm + .9 * C["sepsis"] + .7 * C["ckd"] + .4 * C["liver"])
    draw("acs", -2.0 + .3 * a + .6 * mal - .3 * s_adm + .4 * C["chf"] - 2.0 * elective)
    draw("cardiac_surgery", -3.6 + 3.4 * elective + .2 * a)
    draw("gi_bleed", -2.6 + .9 * C["liver"] + .2 * s_adm - elective)
    draw("neuro", -2.2 + .15 * a + .4 * s_adm - .5 * elective)
    draw("trauma", -2.3 - .35 * a + .5 * mal - 1.5 * elective)
    draw("dka", -3.6 + 1.6 * C["diabetes"] - .4 * a - elective)
    C["newborn"] = d.neonate[a_pat].copy()
    clusters = np.stack([C[name] for name in _CLUSTER_NAMES], axis=1)
    d.septic_shock = C["sepsis"] & (s_adm > .6) & (rng.random(m) < .6)
    d.cardiogenic = (C["chf"] | C["acs"]) & (s_adm > 1.0) & (rng.random(m) < .4)
    # primary cluster: one of the active acute ones, else a chronic one, else a misc diagnosis
    acute_idx = [_CLUSTER_NAMES.index(c) for c in _ACUTE_CLUSTERS]
    score = np.where(clusters, rng.random(clusters.shape) + 0.1, -1.0)
    score[:, acute_idx] += np.where(clusters[:, acute_idx], 1.0, 0.0)
    d.primary = np.where(score.max(axis=1) > 0, score.argmax(axis=1), -1)
    d.clusters = clusters


def _draw_mortality(rng: np.random.Generator, d: SimpleNamespace) -> None:
    """In-hospital death; admissions after a patient's death are dropped."""
    C, a, s_adm = d.C, d.a, d.s_adm
    logit = (_MORTALITY_INTERCEPT + .35 * a + 1.0 * s_adm + .9 * d.septic_shock + .9 * d.cardiogenic
             + .4 * C["sepsis"] + .5 * C["resp_failure"] + .7 * C["neuro"] + .6 * C["liver"]
             + .6 * C["cancer"] + .3 * C["aki"] - 1.2 * d.elective - .8 * C["cardiac_surgery"])
    logit = np.where(d.neonate[d.a_pat], -5.0, logit)
    died = rng.random(d.m) < _sigmoid(logit)
    # nobody is admitted after dying: drop a patient's admissions after the first death
    died_before = _group_cumsum(died.astype(np.int64), d.a_pat) - died > 0
    sel = np.flatnonzero(~died_before)
    for name in ("a_pat", "a_k", "a_type", "gap_days", "s_adm", "n_stays", "clusters", "primary",
                 "septic_shock", "cardiogenic", "elective"):
        setattr(d, name, getattr(d, name)[sel])
    d.died = died[sel]
    d.m = len(sel)
    d.n_stays[(d.n_stays == 0) & d.died] = 1  # deaths happen to ICU patients here
    d.cl = {name: d.clusters[:, i] for i, name in enumerate(_CLUSTER_NAMES)}


def _draw_stay_times(rng: np.random.Generator, d: SimpleNamespace) -> None:
    """ICU stays inside each admission: severity, length and times relative to admittime (hours)."""
    m = d.m
    st_adm, st_k = _expand(d.n_stays)
    q = len(st_adm)
    s_stay = d.s_adm[st_adm] + rng.normal(0, .3, q)
    is_nb = d.cl["newborn"][st_adm]
    los_h = np.clip(rng.lognormal(np.log(45) + .25 * s_stay, .7), 12, 240)
    los_h = np.where(is_nb, np.clip(rng.lognormal(np.log(60), .9, q), 12, 240), los_h)
    stay_gap = np.where(st_k > 0, np.clip(rng.lognormal(np.log(48), .8, q), 6, 240), 0.0)
    emergency_like = d.a_type[st_adm] != 1
    pre = np.where(emergency_like,
                   np.where(rng.random(q) < .2, rng.uniform(24, 120, q), rng.lognormal(np.log(5), .6, q)),
                   rng.uniform(2, 6, q))
    pre = np.where(is_nb, rng.uniform(0.1, 2, q), pre)
    # intime relative to admittime (hours): first stay after `pre`, later ones after a gap
    step = np.where(st_k == 0, pre, stay_gap) + np.r_[0.0, los_h[:-1]] * (st_k > 0)
    in_rel = _group_cumsum(step, st_adm)
    out_rel = in_rel + los_h
    last_stay = np.r_[st_adm[1:] != st_adm[:-1], True]
    post = np.clip(rng.lognormal(np.log(72), .8, q), 4, 600)
    # an admission's length: after its last stay (death may come in the ICU or on the ward)
    adm_len = np.clip(rng.lognormal(np.log(96), .7, m), 24, 1500)  # admissions without ICU stays
    died_in_icu = rng.random(m) < .72
    adm_end_rel = np.full(m, np.nan)
    end_of_stays = out_rel[last_stay]
    owner = st_adm[last_stay]
    post_last = post[last_stay]
    death_delay = np.where(died_in_icu[owner], 0.0, rng.uniform(.2, 1, len(owner)) * post_last)
    adm_end_rel[owner] = end_of_stays + np.where(d.died[owner], death_delay, post_last)
    d.adm_end_rel = np.where(np.isnan(adm_end_rel), adm_len, adm_end_rel)
    d.st_adm, d.q, d.s_stay, d.is_nb, d.los_h, d.in_rel, d.last_stay = st_adm, q, s_stay, is_nb, los_h, in_rel, last_stay


def _absolute_times(d: SimpleNamespace) -> None:
    """Absolute times: the admissions of a patient follow each other.

    Whole minutes, rounded up (plus a second for the rounding of intime and los), so that a death
    in the ICU is never before the stay's outtime."""
    adm_secs = np.ceil((d.adm_end_rel * 3600 + 1) / 60) * 60
    inc = np.where(d.a_k > 0, np.r_[0.0, adm_secs[:-1]] + np.round(d.gap_days * 86400 / 60) * 60, 0.0)
    d.admittime = d.base[d.a_pat] + _group_cumsum(inc, d.a_pat).astype(np.int64)
    d.dischtime = d.admittime + adm_secs.astype(np.int64)
    d.deathtime = np.where(d.died, d.dischtime, NO_TIME)
    d.intime = d.admittime[d.st_adm] + np.round(d.in_rel * 3600).astype(np.int64)
    d.outtime = d.intime + np.round(d.los_h * 3600).astype(np.int64)
    age = d.age_first[d.a_pat] + (d.admittime - d.base[d.a_pat]) / _SECONDS_PER_YEAR
    d.age = np.where(d.cl["newborn"], 0.0, age)


def _draw_births_and_deaths(rng: np.random.Generator, d: SimpleNamespace) -> None:
    n, a_pat, neonate = d.n, d.a_pat, d.neonate
    first_adm = np.r_[True, a_pat[1:] != a_pat[:-1]]
    first_admit = d.admittime[first_adm]
    shifted_age = np.where(d.old, 300 + rng.uniform(0, .95, n), d.age_first)  # MIMIC's >89 shift
    dob = _floor_day(first_admit - (shifted_age * _SECONDS_PER_YEAR).astype(np.int64))
    d.dob = np.where(neonate, _floor_day(first_admit), dob)
    last_adm = np.r_[a_pat[1:] != a_pat[:-1], True]
    died_pat = d.died[last_adm]
    last_disch = d.dischtime[last_adm]
    later_death = ~died_pat & (rng.random(n) < .18) & ~neonate
    d.dod = np.where(died_pat, _floor_day(last_disch),
                     np.where(later_death, _floor_day(last_disch + rng.integers(1, 1500, n) * 86400), NO_TIME))
    d.dod_hosp = np.where(died_pat, d.dod, NO_TIME)
    d.dod_ssn = np.where((d.dod != NO_TIME) & (later_death | (rng.random(n) < .7)), d.dod, NO_TIME)


def _draw_admission_columns(rng: np.random.Generator, d: SimpleNamespace) -> None:
    """The administrative columns of ADMISSIONS and its admission diagnosis text."""
    m, at, cl, admittime = d.m, d.a_type, d.cl, d.admittime
    loc = np.where(at == 1, 3, np.where(at == 3, 3, _choice(rng, _ADM_LOCATIONS, [.6, .25, .12, 0, .02, .01], m)))
    d.dloc = np.where(d.died, len(_DISCH_LOCATIONS) - 1, _choice(rng, _DISCH_LOCATIONS[:-1], _DISCH_P, m))
    medicare = rng.random(m) < np.where(d.age >= 65, .85, .12)
    ins = np.where(medicare, 0, _choice(rng, _INSURANCE[1:], [.6, .3, .06, .04], m) + 1)
    d.ins = np.where(cl["newborn"], 1, ins)
    lang = _choice(rng, _LANGUAGES, _LANGUAGE_P, m)
    d.lang = np.where(d.carevue[d.a_pat] & (rng.random(m) < .7), len(_LANGUAGES) - 1, lang)
    d.relig = _choice(rng, _RELIGIONS, _RELIGION_P, m)
    d.marital = np.where(cl["newborn"], len(_MARITAL) - 1, _choice(rng, _MARITAL, _MARITAL_P, m))
    via_ed = loc == 0
    d.ed_in = np.where(via_ed, admittime - rng.integers(1, 9, m) * 3600 - rng.integers(0, 60, m) * 60, NO_TIME)
    d.ed_out = np.where(via_ed, admittime + rng.integers(0, 90, m) * 60, NO_TIME)
    d.loc = loc
    diag_texts: list[str] = []
    for name in _CLUSTER_NAMES:
        diag_texts += _CLUSTERS[name]["text"]
    diag_texts += [t for _, t in _MISC_PRINCIPAL]
    text_start = np.cumsum([0] + [len(_CLUSTERS[nm]["text"]) for nm in _CLUSTER_NAMES])
    d.misc_pick = misc_pick = rng.integers(0, len(_MISC_PRINCIPAL), m)
    n_text = np.array([len(_CLUSTERS[nm]["text"]) for nm in _CLUSTER_NAMES])
    primary = d.primary
    pick = (rng.random(m) * n_text[np.maximum(primary, 0)]).astype(np.int64)
    d.diagnosis_idx = np.where(primary >= 0, text_start[np.maximum(primary, 0)] + pick,
                               text_start[-1] + misc_pick)
    d.diag_texts = diag_texts


def _draw_stay_columns(rng: np.random.Generator, d: SimpleNamespace) -> None:
    """Care units, wards, the severity drift, intubation and arterial lines of each stay."""
    q, cl, st_adm, is_nb, s_stay = d.q, d.cl, d.st_adm, d.is_nb, d.s_stay
    cu_p = np.tile([.45, .2, .05, .15, .15, 0.0], (q, 1))
    cu_p[cl["cardiac_surgery"][st_adm]] = [0, .05, .9, .05, 0, 0]
    cu_p[(cl["acs"] | cl["chf"])[st_adm] & ~cl["cardiac_surgery"][st_adm]] = [.2, .05, .05, .7, 0, 0]
    cu_p[(cl["trauma"] | cl["neuro"])[st_adm]] = [.1, .3, 0, 0, .6, 0]
    cu_p[is_nb] = [0, 0, 0, 0, 0, 1]
    cum = np.cumsum(cu_p / cu_p.sum(axis=1, keepdims=True), axis=1)
    first_cu = (rng.random(q)[:, None] > cum).sum(axis=1)
    transfer = (rng.random(q) < .06) & ~is_nb
    d.last_cu = np.where(transfer & (rng.random(q) < .6), (first_cu + rng.integers(1, 5, q)) % 5, first_cu)
    first_ward = 7 + 2 * first_cu + rng.integers(0, 2, q) * 20 + rng.integers(0, 3, q) * 5
    d.last_ward = np.where(transfer, first_ward + rng.integers(1, 6, q), first_ward)
    d.first_cu, d.first_ward = first_cu, first_ward
    # severity drifts over a stay: worse toward the end for the dying, better for the others
    dying_stay = d.last_stay & d.died[st_adm]
    d.drift = np.where(dying_stay, rng.uniform(.8, 1.8, q), -0.5 * np.maximum(s_stay, 0) - rng.uniform(0, .4, q))
    intub_logit = (-1.4 + 1.0 * s_stay + 1.6 * cl["resp_failure"][st_adm] + 1.0 * cl["neuro"][st_adm]
                   + 2.6 * cl["cardiac_surgery"][st_adm] + .8 * cl["trauma"][st_adm] + .6 * cl["sepsis"][st_adm])
    d.intubated = intubated = (rng.random(q) < _sigmoid(intub_logit)) & ~is_nb
    d.art_line = rng.random(q) < _sigmoid(-.8 + .8 * s_stay + 2.0 * cl["cardiac_surgery"][st_adm] + .8 * intubated)


def _cluster_weights(universe: CodeUniverse, kind: str) -> np.ndarray:
    """(cluster x modelled code) probabilities of the clusters' diagnosis ('dx') or procedure ('px') codes."""
    codes = universe.dx_codes if kind == "dx" else universe.px_codes
    index = {c: i for i, c in enumerate(codes)}
    weights = np.zeros((len(_CLUSTER_NAMES), universe.n_dx_model if kind == "dx" else universe.n_px_model))
    for ci, name in enumerate(_CLUSTER_NAMES):
        for code, p in _CLUSTERS[name][kind].items():
            weights[ci, index[code]] = p
    return weights


def _draw_diagnoses(rng: np.random.Generator, d: SimpleNamespace, universe: CodeUniverse) -> None:
    """DIAGNOSES_ICD rows: cluster and background codes, the principal diagnosis first, a long tail."""
    m, cl = d.m, d.cl
    dx_index = {c: i for i, c in enumerate(universe.dx_codes)}
    log_q = d.clusters.astype(float) @ np.log1p(-np.minimum(_cluster_weights(universe, "dx"), .999))
    bg_codes = np.array([dx_index[c] for c in _BACKGROUND_DX])
    bg_p0 = np.array([v[0] for v in _BACKGROUND_DX.values()])
    bg_slope = np.array([v[1] for v in _BACKGROUND_DX.values()])
    age_dec = (np.minimum(d.age, 90) - 65) / 10
    bg_p = _sigmoid(_logit(bg_p0)[None, :] + bg_slope[None, :] * age_dec[:, None])
    bg_p[cl["newborn"]] = 0.0
    log_q[:, bg_codes] += np.log1p(-bg_p)
    p_dx = 1 - np.exp(log_q)
    has = rng.random(p_dx.shape) < p_dx
    # event-driven codes: shock, death-related, dialysis status
    for flag, code in ((d.septic_shock, "78552"), (d.cardiogenic, "78551")):
        has[flag, dx_index[code]] = True
    for code, p in (("V4986", .35), ("V667", .25), ("4275", .12), ("3481", .05)):
        has[d.died & (rng.random(m) < p), dx_index[code]] = True
    principal = _draw_principal(rng, d, universe, dx_index)
    # septic shock admissions are coded with sepsis first, as in MIMIC
    has[np.arange(m), principal] = True
    dx_a, dx_c = np.nonzero(has)
    key = rng.random(len(dx_a)) + (dx_c != principal[dx_a]) * 1.0
    t_a, t_c = _draw_code_tail(rng, d, len(universe.dx_codes))
    dx_a = np.r_[dx_a, t_a]
    dx_c = np.r_[dx_c, t_c]
    key = np.r_[key, 2 + rng.random(len(t_a))]
    order = np.lexsort((key, dx_a))
    dx_a, dx_c = dx_a[order], dx_c[order]
    u = len(universe.dx_codes)
    dup = np.ones(len(dx_a), dtype=bool)
    _, first_pos = np.unique(dx_a.astype(np.int64) * (u + 1) + dx_c, return_index=True)
    dup[first_pos] = False
    dx_a, dx_c = dx_a[~dup], dx_c[~dup]
    d.dx_c = np.where(rng.random(len(dx_c)) < .0005, -1, dx_c)  # MIMIC has a few code-less rows
    d.dx_a = dx_a


def _draw_principal(rng: np.random.Generator, d: SimpleNamespace, universe: CodeUniverse,
                    dx_index: dict[str, int]) -> np.ndarray:
    """The principal diagnosis: one of the primary cluster's first (typical) codes, by weight."""
    principal = np.full(d.m, -1)
    with_primary = d.primary >= 0
    cands = np.zeros((len(_CLUSTER_NAMES), universe.n_dx_model))
    for ci, name in enumerate(_CLUSTER_NAMES):
        for code, p in list(_CLUSTERS[name]["dx"].items())[:4]:
            if code[0] not in "VE" or name == "newborn":
                cands[ci, dx_index[code]] = p
    cands_cum = np.cumsum(cands / cands.sum(axis=1, keepdims=True), axis=1)
    rows = d.primary[with_primary]
    principal[with_primary] = (rng.random(len(rows))[:, None] > cands_cum[rows]).sum(axis=1)
    misc_codes = np.array([dx_index[c] for c, _ in _MISC_PRINCIPAL])
    principal[~with_primary] = misc_codes[d.misc_pick[~with_primary]]
    return principal


def _draw_code_tail(rng: np.random.Generator, d: SimpleNamespace, u: int) -> tuple[np.ndarray, np.ndarray]:
    """A few rarer codes per admission drawn with Zipf-like weights over the universe of `u` codes:
    P(rank r) ~ 1 / (r + 30), a long, flat-headed tail."""
    tail_n = np.where(d.cl["newborn"], 0, rng.poisson(1.2, d.m))
    t_a, _ = _expand(tail_n)
    rank = np.minimum((30 * ((u + 30) / 30) ** rng.random(len(t_a)) - 30).astype(np.int64), u - 1)
    tail_perm = np.random.default_rng(7).permutation(u)  # fixed: same tail order for every chunk
    return t_a, tail_perm[rank]


def _draw_procedures(rng: np.random.Generator, d: SimpleNamespace, universe: CodeUniverse) -> None:
    """PROCEDURES_ICD rows: cluster and background procedures, and those the stays imply."""
    m, cl, st_adm = d.m, d.cl, d.st_adm
    px_index = {c: i for i, c in enumerate(universe.px_codes)}
    log_qp = d.clusters.astype(float) @ np.log1p(-np.minimum(_cluster_weights(universe, "px"), .999))
    bgp_codes = np.array([px_index[c] for c in _BACKGROUND_PX])
    bgp_p = np.array(list(_BACKGROUND_PX.values()))
    log_qp[:, bgp_codes] += np.log1p(-bgp_p)[None, :]
    log_qp[cl["newborn"]] = 0.0
    has_p = rng.random(log_qp.shape) < 1 - np.exp(log_qp)
    has_p[cl["newborn"]] = False
    nb_rows = np.flatnonzero(cl["newborn"])
    for code, p in _CLUSTERS["newborn"]["px"].items():
        has_p[nb_rows[rng.random(len(nb_rows)) < p], px_index[code]] = True
    # stay-driven procedures, so codes agree with the charted data
    adm_intub = np.zeros(m, dtype=bool)
    np.logical_or.at(adm_intub, st_adm, d.intubated)
    long_vent = np.zeros(m, dtype=bool)
    np.logical_or.at(long_vent, st_adm, d.intubated & (d.los_h >= 96))
    adm_art = np.zeros(m, dtype=bool)
    np.logical_or.at(adm_art, st_adm, d.art_line)
    has_p[adm_intub & (rng.random(m) < .65), px_index["9604"]] = True
    has_p[adm_intub & ~long_vent & (rng.random(m) < .9), px_index["9671"]] = True
    has_p[long_vent & (rng.random(m) < .9), px_index["9672"]] = True
    has_p[adm_intub & (rng.random(m) < .03), px_index["9670"]] = True
    has_p[long_vent & (rng.random(m) < .15), px_index["311"]] = True
    has_p[adm_art & (rng.random(m) < .45), px_index["3891"]] = True
    has_p[~adm_intub, px_index["9671"]] = False
    has_p[~adm_intub, px_index["9672"]] = False
    px_a, px_c = np.nonzero(has_p)
    order = np.lexsort((rng.random(len(px_a)), px_a))
    d.px_a, d.px_c = px_a[order], px_c[order]
