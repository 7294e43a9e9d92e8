"""LABEVENTS: blood draws during ICU stays (from just before ICU admission), on the ward and as an
outpatient (no hadm_id); panels decide which tests a draw includes, and the values of one draw are
correlated through the admission's clusters and severity."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from synehrgy_assets.core.mimic_dictionaries import (
    ITEM_DECIMALS,
    ITEM_UOM,
    LAB_REFERENCE_RANGES,
    MAX_ITEMID,
    UOM_VALUES,
    fixed_decimals_text,
    round_values,
)
from synehrgy_assets.core.mimic_tables import dict_array
from synehrgy_assets.core.synthetic_hospital.arrays import _expand, _group_cumsum, _ts
from synehrgy_assets.core.synthetic_hospital.model import _CLUSTER_NAMES, _LAB_TEXT
from synehrgy_assets.core.synthetic_hospital.structure import _Structure

# lab slot -> (itemid, panel); panels decide which tests a blood draw includes
_LAB_SLOTS: list[tuple[int, str]] = [
    (51006, "chem"), (50912, "chem"), (50931, "chem"), (50971, "chem"), (50902, "chem"),
    (50882, "chem"), (50868, "chem"), (50983, "chem"), (50893, "chem_ext"), (50970, "chem_ext"),
    (50960, "chem_ext"), (51301, "cbc"), (51222, "cbc"), (51221, "cbc"), (51265, "cbc"),
    (51279, "cbc"), (51250, "cbc"), (51256, "diff"), (51244, "diff"), (51254, "diff"),
    (51146, "diff"), (50861, "lft"), (50878, "lft"), (50863, "lft"), (50885, "lft"),
    (50862, "albumin"), (51274, "coag"), (51237, "coag"), (50820, "abg"), (50818, "abg"),
    (50821, "abg"), (50813, "lactate"), (50809, "abg_extra"), (50822, "abg_extra"),
    (50817, "abg_extra"), (51003, "cardiac"), (51002, "cardiac_i"), (50832, "fluid"),
]


def _lab_values(rng: np.random.Generator, n: int, sev: np.ndarray, off: np.ndarray,
                cl: dict[str, np.ndarray], male: np.ndarray) -> dict[int, np.ndarray]:
    """Correlated lab values (canonical units) for `n` draws; `off` = per-admission effects."""
    e = lambda: rng.normal(0, 1, n)  # noqa: E731 - within-admission noise
    renal, liver, sepsis = cl["aki"] | cl["ckd"], cl["liver"], cl["sepsis"]
    shock = sepsis & (sev > .8)
    v: dict[int, np.ndarray] = {}
    v[50912] = 1.0 * np.exp(.35 * off[:, 0] + .15 * e() + .15 * sev + .8 * renal + .6 * cl["ckd"] - .15 * ~male)
    v[51006] = 20 * np.exp(.45 * off[:, 1] + .15 * e() + .2 * sev + .7 * renal + .3 * cl["gi_bleed"])
    v[50931] = 125 * np.exp(.15 * off[:, 2] + .25 * e() + .08 * sev + .35 * cl["diabetes"] + 1.0 * cl["dka"])
    v[50971] = 4.1 + .25 * off[:, 3] + .35 * e() + .08 * sev + .4 * renal
    v[50902] = 104 + 3 * off[:, 4] + 3 * e()
    lactate = 1.5 * np.exp(.3 * off[:, 5] + .25 * e() + .38 * sev + .3 * sepsis + .6 * shock)
    v[50813] = lactate
    v[50882] = 24 + 2.5 * off[:, 6] + 2 * e() - 1.2 * np.maximum(sev, 0) - 2 * renal + 4 * cl["copd"] - .8 * (lactate - 1.5) - 8 * cl["dka"]
    v[50983] = 139 + 3 * off[:, 7] + 2.5 * e()
    v[50868] = v[50983] - v[50902] - v[50882] + 1.5 * e()
    v[50893] = 8.5 + .4 * off[:, 8] + .4 * e() - .2 * sev
    v[50970] = 3.5 * np.exp(.25 * off[:, 9] + .15 * e() + .1 * sev + .3 * renal)
    v[50960] = 2.0 + .2 * off[:, 10] + .2 * e()
    v[51301] = 10 * np.exp(.4 * off[:, 11] + .15 * e() + .15 * sev + .35 * sepsis)
    hgb = 10.2 + 1.4 * off[:, 12] + .5 * e() - .3 * sev - 1.5 * cl["gi_bleed"] - cl["trauma"] - .8 * cl["cardiac_surgery"] + .8 * male - .6 * renal
    hgb = np.maximum(hgb, 3.5)
    v[51222] = hgb
    v[51221] = 3 * hgb + e()
    v[51265] = 200 * np.exp(.45 * off[:, 13] + .12 * e() - .15 * sev - .35 * sepsis - .6 * liver)
    v[51279] = hgb / 3 * np.exp(.03 * e())
    v[51250] = 89 + 5 * off[:, 14] + e()
    neut = np.clip(74 + 6 * off[:, 15] + 3 * e() + 6 * sepsis, 20, 97)
    mono = np.clip(5 + 1.5 * off[:, 16] + e(), .5, 20)
    baso = np.clip(.2 * np.exp(.6 * e()), 0, 3)
    v[51256], v[51254], v[51146] = neut, mono, baso
    v[51244] = np.clip(100 - neut - mono - baso - np.clip(1.5 + e(), 0, 6), 1, 80)
    v[50861] = 30 * np.exp(.8 * off[:, 17] + .2 * e() + .2 * sev + 1.2 * liver + .5 * shock)
    v[50878] = 40 * np.exp(.8 * off[:, 18] + .2 * e() + .2 * sev + 1.3 * liver + .6 * shock)
    v[50863] = 100 * np.exp(.45 * off[:, 19] + .1 * e() + .6 * liver)
    v[50885] = .8 * np.exp(.6 * off[:, 20] + .15 * e() + 1.3 * liver + .3 * sepsis)
    v[50862] = np.clip(3.0 + .5 * off[:, 21] + .15 * e() - .25 * sev - .5 * liver, 1.0, 5.5)
    pt = 14 * np.exp(.1 * off[:, 22] + .04 * e() + .35 * liver + .05 * sev)
    v[51274] = pt
    v[51237] = (pt / 12.6) ** 1.4 * np.exp(.02 * e())
    v[50820] = 7.39 + .03 * off[:, 23] + .04 * e() - .04 * sev - .01 * (lactate - 1.5)
    v[50818] = np.maximum(41 + 5 * off[:, 24] + 4 * e() - sev + 10 * cl["copd"] + 4 * cl["resp_failure"], 12)
    v[50821] = 100 * np.exp(.3 * off[:, 25] + .25 * e() - .15 * cl["resp_failure"] - .05 * sev)
    v[50809] = v[50931] * np.exp(.05 * e())
    v[50822] = v[50971] + .2 * e()
    v[50817] = np.minimum(96 + off[:, 26] + 1.5 * e() - sev, 100)
    # troponins: near the assay's floor unless the heart is injured (ACS, shock) or cleared slowly (CKD)
    injury = 3.0 * cl["acs"] + .5 * np.maximum(sev, 0) + .8 * cl["ckd"] + .5 * cl["cardiac_surgery"]
    v[51003] = np.clip(.01 + np.exp(-5.5 + .6 * off[:, 27] + .3 * e() + injury), .01, 20)
    v[51002] = np.clip(.04 + np.exp(-4.0 + .6 * off[:, 27] + .3 * e() + injury), .04, 49)
    v[50832] = 60 * np.exp(.4 * e())  # the body-fluid distractor
    return v




def _lab_events(rng: np.random.Generator, S: _Structure, row_offset: int) -> dict[str, pa.Array]:
    """The LABEVENTS rows of the chunk `S` (writer input), row ids from `row_offset` + 1."""
    d = _draws(rng, S)
    values = _lab_values(rng, d.n, d.sev, rng.normal(0, 1, (len(S.hadm_id), 28))[d.adm], d.cl, S.male[d.pat])
    mask = _result_slots(rng, d)
    return _lab_rows(rng, S, d, values, mask, row_offset)


def _draws(rng: np.random.Generator, S: _Structure) -> SimpleNamespace:
    """Every blood draw of the chunk (ICU, ward, outpatient), in (patient, time) order."""
    m, q = len(S.hadm_id), len(S.icustay_id)
    st_adm = S.s_adm_index
    los_h = (S.outtime - S.intime) / 3600.0
    # ICU draws: the first one a little before or after ICU admission, then every ~4-24 h
    mean_gap = np.clip(8.0 / (1 + .25 * np.maximum(S.s_stay, 0)), 4, 12)
    n_est = np.ceil(los_h / 2).astype(np.int64) + 2
    i_st, i_k = _expand(n_est)
    gaps = np.clip(rng.gamma(4.0, mean_gap[i_st] / 4.0), 2, 30)
    first = rng.uniform(-3, 1, q)
    t_icu = first[i_st] + _group_cumsum(np.where(i_k == 0, 0.0, gaps), i_st)
    keep = t_icu <= los_h[i_st]
    i_st, t_icu = i_st[keep], t_icu[keep]
    icu_time = S.intime[i_st] // 60 * 60 + np.round(t_icu * 60).astype(np.int64) * 60
    icu_sev = S.s_stay[i_st] + S.drift[i_st] * np.clip(t_icu / los_h[i_st], 0, 1)
    w_adm, w_time = _ward_draws(rng, S)
    # outpatient draws before some admissions (no hadm_id)
    n_out = np.where(rng.random(m) < .2, rng.integers(1, 4, m), 0)
    o_adm, _ = _expand(n_out)
    o_time = S.admittime[o_adm] - rng.integers(1 * 24 * 60, 60 * 24 * 60, len(o_adm)) * 60

    d_adm = np.r_[st_adm[i_st], w_adm, o_adm]
    d_time = np.r_[icu_time, w_time, o_time]
    d_kind = np.r_[np.full(len(i_st), 2), np.ones(len(w_adm), dtype=np.int64), np.zeros(len(o_adm), dtype=np.int64)]
    d_sev = np.r_[icu_sev, .4 * S.s_adm[w_adm], .1 * S.s_adm[o_adm]]
    d_intub = np.r_[S.intubated[i_st], np.zeros(len(w_adm) + len(o_adm), dtype=bool)]
    d_pat = S.a_patient[d_adm]
    order = np.lexsort((d_time, d_pat))
    return SimpleNamespace(
        adm=d_adm[order], time=d_time[order], kind=d_kind[order], sev=d_sev[order], intub=d_intub[order],
        pat=d_pat[order], n=len(d_adm),
        cl={name: S.clusters[d_adm[order], i] for i, name in enumerate(_CLUSTER_NAMES)},
    )


def _ward_draws(rng: np.random.Generator, S: _Structure) -> tuple[np.ndarray, np.ndarray]:
    """(admission, time) of the ward draws: about daily across the admission, outside the ICU windows."""
    m = len(S.hadm_id)
    adm_len_h = (S.dischtime - S.admittime) / 3600.0
    n_est_w = np.ceil(adm_len_h / 12).astype(np.int64) + 2
    w_adm, w_k = _expand(n_est_w)
    w_gap = np.clip(rng.gamma(6.0, 4.0, len(w_adm)), 8, 60)
    t_w = rng.uniform(.5, 4, m)[w_adm] + _group_cumsum(np.where(w_k == 0, 0.0, w_gap), w_adm)
    w_time = S.admittime[w_adm] + np.round(t_w * 60).astype(np.int64) * 60
    keep = w_time < S.dischtime[w_adm]
    first_stay = np.cumsum(S.n_stays) - S.n_stays
    for k in range(int(S.n_stays.max(initial=0))):
        has_k = S.n_stays[w_adm] > k
        idx = np.where(has_k, first_stay[w_adm] + k, 0)
        inside = has_k & (w_time >= S.intime[idx] - 3 * 3600) & (w_time <= S.outtime[idx])
        keep &= ~inside
    return w_adm[keep], w_time[keep]


def _result_slots(rng: np.random.Generator, d: SimpleNamespace) -> np.ndarray:
    """(draw x `_LAB_SLOTS`) mask: which tests each draw reports, by panel."""
    n, kind, cl = d.n, d.kind, d.cl
    icu = kind == 2

    def panel(p_icu, p_ward, p_out):
        return rng.random(n) < np.select([kind == 2, kind == 1], [p_icu, p_ward], p_out)

    panels = {
        "chem": panel(.88, .9, .7),
        "cbc": panel(.8, .8, .6),
        "diff": panel(.15 + .2 * cl["sepsis"], .1, .15),
        "lft": panel(.15 + .45 * cl["liver"], .1 + .3 * cl["liver"], .15),
        "coag": panel(.4, .25, .1),
        "abg": icu & (rng.random(n) < .12 + .45 * d.intub),
        "cardiac": panel(.08 + .5 * cl["acs"] + .1 * cl["chf"], .03 + .3 * cl["acs"], .01),
        "fluid": rng.random(n) < .005,
    }
    panels["cardiac_i"] = panels["cardiac"] & (rng.random(n) < .05)
    panels["chem_ext"] = panels["chem"] & (rng.random(n) < .8)
    panels["albumin"] = panels["lft"] & (rng.random(n) < .6)
    panels["abg_extra"] = panels["abg"]
    panels["lactate"] = (panels["abg"] & (rng.random(n) < .7)) | (icu & (rng.random(n) < .1 + .2 * cl["sepsis"]))
    # every draw yields at least one result
    empty = ~np.any(np.stack([panels[p] for p in ("chem", "cbc", "diff", "lft", "coag", "abg", "lactate")]), axis=0)
    panels["chem"] = panels["chem"] | empty
    slot_masks = []
    for itemid, panel_name in _LAB_SLOTS:
        mask = panels[panel_name]
        if panel_name == "abg_extra":
            mask = mask & (rng.random(n) < (.4 if itemid == 50817 else .3))
        slot_masks.append(mask)
    return np.stack(slot_masks, axis=1)


def _lab_rows(rng: np.random.Generator, S: _Structure, d: SimpleNamespace, values: dict[int, np.ndarray],
              mask: np.ndarray, row_offset: int) -> dict[str, pa.Array]:
    """One row per reported test, in (draw, slot) order, with MIMIC's flags and text-only results."""
    pos = np.cumsum(mask.ravel()).reshape(mask.shape) - 1
    n_rows = int(mask.sum())
    draw = np.empty(n_rows, dtype=np.int64)
    itemid = np.empty(n_rows, dtype=np.int64)
    canonical = np.empty(n_rows)
    for k, (item, _) in enumerate(_LAB_SLOTS):
        m_k = mask[:, k]
        p = pos[m_k, k]
        draw[p] = np.flatnonzero(m_k)
        itemid[p] = item
        canonical[p] = values[item][m_k]
    del pos
    valuenum = round_values(np.maximum(canonical, 0), itemid)
    lo = np.zeros(MAX_ITEMID)
    hi = np.zeros(MAX_ITEMID)
    for item, (a, b) in LAB_REFERENCE_RANGES.items():
        lo[item], hi[item] = a, b
    flag = np.where((valuenum < lo[itemid]) | (valuenum > hi[itemid]), 0, -1)
    # a few results are text only ("UNABLE TO REPORT" ...), with no valuenum and no flag
    text_only = rng.random(n_rows) < .003
    text = np.where(text_only, rng.integers(0, len(_LAB_TEXT), n_rows), -1)
    valuenum = np.where(text_only, np.nan, valuenum)
    flag = np.where(text_only, -1, flag)
    num = pa.array(valuenum, type=pa.float64(), from_pandas=True)
    value = pc.if_else(pa.array(text_only), dict_array(text, _LAB_TEXT).cast(pa.string()),
                       fixed_decimals_text(num, ITEM_DECIMALS[itemid]))
    uom = dict_array(ITEM_UOM[itemid], UOM_VALUES)
    outpatient = d.kind[draw] == 0
    return {
        "row_id": np.arange(row_offset + 1, row_offset + n_rows + 1),
        "subject_id": S.subject_id[d.pat[draw]],
        "hadm_id": pa.array(S.hadm_id[d.adm[draw]], mask=outpatient),
        "itemid": itemid,
        "charttime": _ts(d.time[draw]),
        "value": value,
        "valuenum": num,
        "valueuom": uom,
        "flag": dict_array(flag, ["abnormal"]),
    }
