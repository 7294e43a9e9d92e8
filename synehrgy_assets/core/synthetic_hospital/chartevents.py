"""CHARTEVENTS: vitals, GCS, capillary refill and a few distractor items, charted in rounds ('ticks').

Every round of a stay draws its values in canonical units; each item then writes them in its own
unit (`mimic_dictionaries.ITEM_SCALE` / `ITEM_OFFSET`). Rows come out in (stay, time, slot) order.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa

from synehrgy_assets.core.mimic_dictionaries import (
    GCS_VERBAL_ETT,
    ITEM_OFFSET,
    ITEM_SCALE,
    event_value_columns,
    round_values,
    text_codes,
)
from synehrgy_assets.core.mimic_tables import dict_array
from synehrgy_assets.core.synthetic_hospital.arrays import _choice, _expand, _sigmoid, _ts
from synehrgy_assets.core.synthetic_hospital.model import _CLUSTER_NAMES, _RESULTSTATUS, _STOPPED
from synehrgy_assets.core.synthetic_hospital.structure import _Structure

# Numeric vital-sign items that get a few absurd charting errors (range filtering must catch them).
_GARBAGE_ITEMS = [211, 220045, 51, 455, 220050, 220179, 8368, 8441, 220051, 220180,
                  52, 456, 220052, 220181, 618, 220210, 646, 220277, 678, 223761, 223762]


class _Slots:
    """The items one charting round may write: (round mask, itemid, canonical value, text code)."""

    def __init__(self, rng: np.random.Generator, n: int):
        self.rng, self.n = rng, n
        self.slots: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, mask, itemid, value=None, text=None) -> None:
        n, k = self.n, int(mask.sum())
        itemid = np.broadcast_to(np.asarray(itemid), (n,))[mask]
        value = np.full(k, np.nan) if value is None else np.broadcast_to(value, (n,))[mask]
        text = np.full(k, -1) if text is None else np.broadcast_to(text, (n,))[mask]
        self.slots.append((mask, itemid, value, text))

    def rand(self, p) -> np.ndarray:
        return self.rng.random(self.n) < p

    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(round, itemid, canonical value, text code) per row, in (round, slot) order without
        sorting: the row-major positions of the slot matrix."""
        mask = np.stack([s[0] for s in self.slots], axis=1)
        pos = np.cumsum(mask.ravel()).reshape(mask.shape) - 1
        n_rows = int(mask.sum())
        tick = np.empty(n_rows, dtype=np.int64)
        itemid = np.empty(n_rows, dtype=np.int64)
        canonical = np.empty(n_rows)
        text = np.empty(n_rows, dtype=np.int64)
        for k, (m_k, item_k, value_k, text_k) in enumerate(self.slots):
            p = pos[m_k, k]
            tick[p] = np.flatnonzero(m_k)
            itemid[p] = item_k
            canonical[p] = value_k
            text[p] = text_k
        return tick, itemid, canonical, text


def _chart_events(rng: np.random.Generator, S: _Structure, ticks_per_hour: float,
                  row_offset: int) -> dict[str, pa.Array]:
    """The CHARTEVENTS rows of the chunk `S` (writer input), row ids from `row_offset` + 1."""
    r = _rounds(rng, S, ticks_per_hour)
    slots = _Slots(rng, r.n)
    hr = _chart_vitals(rng, slots, r)
    _chart_neuro_and_point_of_care(rng, slots, r)
    _chart_body_size(rng, slots, r)
    _chart_distractors(rng, slots, r, hr)
    tick, itemid, canonical, text = slots.rows()
    return _chart_columns(rng, S, r, row_offset, tick, itemid, canonical, text)


def _rounds(rng: np.random.Generator, S: _Structure, ticks_per_hour: float) -> SimpleNamespace:
    """The charting rounds of every stay: time, severity and the stay's traits per round."""
    q = len(S.icustay_id)
    adm = S.s_adm_index
    r = SimpleNamespace(adm=adm, pat=S.a_patient[adm])
    cl = {name: S.clusters[adm, i] for i, name in enumerate(_CLUSTER_NAMES)}
    los_h = (S.outtime - S.intime) / 3600.0
    n_ticks = np.floor(los_h * ticks_per_hour).astype(np.int64) + 1
    st, j = _expand(n_ticks)
    n = len(st)
    t = (j + 0.5 + rng.uniform(-.3, .3, n)) / ticks_per_hour
    t = np.clip(t, 0.02, los_h[st] * 0.999)
    r.charttime = S.intime[st] // 60 * 60 + np.round(t * 60).astype(np.int64) * 60  # whole minutes
    r.sev = S.s_stay[st] + S.drift[st] * (t / los_h[st])
    r.z = rng.normal(0, 1, n)
    r.off = rng.normal(0, 1, (q, 8))[st]
    r.cl = {name: flags[st] for name, flags in cl.items()}
    r.nb = r.cl["newborn"]
    r.cv = S.carevue[r.pat][st]
    r.intub = S.intubated[st]
    r.age = S.age[adm][st]
    r.art_line = S.art_line[st]
    r.stay_male = S.male[r.pat]
    r.first_round = j == 0
    r.daily = min(1.0, 1.0 / (24 * ticks_per_hour))  # a round's chance to be the day's weighing
    r.st, r.n, r.q = st, n, q
    return r


def _chart_vitals(rng: np.random.Generator, slots: _Slots, r: SimpleNamespace) -> np.ndarray:
    """Heart rate, blood pressures, respiration, SpO2, temperature and FiO2; returns the heart rate."""
    n, sev, z, off, cl, nb, cv, intub = r.n, r.sev, r.z, r.off, r.cl, r.nb, r.cv, r.intub
    rand, add = slots.rand, slots.add
    hr = 84 + 9 * sev + 5 * z + 10 * off[:, 0] + 6 * cl["sepsis"] + 50 * nb + 4 * rng.normal(0, 1, n)
    mbp = 78 - 7 * sev - 3 * z + 8 * off[:, 1] - 30 * nb + 3 * rng.normal(0, 1, n)
    pp = np.where(nb, 25.0, np.maximum(48 + .3 * (r.age - 60) + 8 * off[:, 2] + 4 * rng.normal(0, 1, n), 15))
    sbp, dbp = mbp + 2 * pp / 3, mbp - pp / 3
    rr = np.where(intub, 16 + 2 * off[:, 3] + 1.5 * sev + 2 * rng.normal(0, 1, n),
                  18 + 3 * sev + 2 * z + 3 * cl["resp_failure"] + 3 * off[:, 3] + 25 * nb
                  + 2 * rng.normal(0, 1, n))
    rr = np.maximum(rr, 4)
    spo2 = np.minimum(97.5 - 1.2 * sev - 1.5 * cl["resp_failure"] + off[:, 4] + 1.2 * rng.normal(0, 1, n), 100)
    temp = 37.0 + .3 * sev + .6 * cl["sepsis"] + .1 * z + .3 * off[:, 5] + .3 * rng.normal(0, 1, n)
    art = r.art_line & rand(.8)

    add(rand(.93), np.where(cv, 211, 220045), hr)
    bp_round = rand(.9)
    for value, art_mv, nbp_mv, art_cv, nbp_cv in ((sbp, 220050, 220179, 51, 455),
                                                  (dbp, 220051, 220180, 8368, 8441),
                                                  (mbp, 220052, 220181, 52, 456)):
        item = np.where(cv, np.where(art, art_cv, nbp_cv), np.where(art, art_mv, nbp_mv))
        add(bp_round & rand(.98), item, value)
    add(rand(.9), np.where(cv, 618, 220210), rr)
    add(rand(.92), np.where(cv, 646, 220277), spo2)
    temp_round = rand(.25)
    temp_f = rand(.85)
    add(temp_round, np.where(cv, 678, np.where(temp_f, 223761, 223762)), temp)
    add(temp_round & cv & rand(.6), 677, temp)  # CareVue also charted a calculated Celsius copy
    fio2 = np.clip(.4 + .12 * sev + .1 * cl["resp_failure"] + .05 * rng.normal(0, 1, n), .21, 1.0)
    fio2_item = np.where(cv, np.where(rand(.15), 189, 3420), 223835)
    # % charted as room air (21) or in steps of 5
    fio2 = np.where(fio2_item == 189, fio2, np.where(fio2 < .23, .21, np.round(fio2 * 20) / 20))
    add(rand(np.where(intub, .3, .02)), fio2_item, fio2)
    return hr


def _chart_neuro_and_point_of_care(rng: np.random.Generator, slots: _Slots, r: SimpleNamespace) -> None:
    """Glasgow coma scale, capillary refill, fingerstick glucose and arterial pH."""
    n, sev, off, cl, cv, intub = r.n, r.sev, r.off, r.cl, r.cv, r.intub
    rand, add = slots.rand, slots.add
    # one latent level of consciousness drives the three GCS components (sedated intubated
    # patients and alert ones make the scores bimodal, as in MIMIC)
    g = 1.4 - .6 * sev - 1.5 * cl["neuro"] - 1.6 * intub + .6 * off[:, 6] + .4 * rng.normal(0, 1, n)
    f = _sigmoid(2.5 * g)
    eye = 1 + np.searchsorted([.15, .3, .55], f + .08 * rng.normal(0, 1, n))
    motor = 1 + np.searchsorted([.08, .1, .13, .3, .55], f + .06 * rng.normal(0, 1, n))
    verbal = 1 + np.searchsorted([.2, .3, .4, .7], f + .08 * rng.normal(0, 1, n))
    ett = intub & rand(.9)
    verbal_code = np.where(ett, GCS_VERBAL_ETT, verbal)
    verbal_score = np.where(ett, 1, verbal)
    gcs_round = rand(.25)
    add(gcs_round & rand(.97), np.where(cv, 184, 220739), eye.astype(float),
        np.where(cv, text_codes("gcs_eye_cv", eye), text_codes("gcs_eye_mv", eye)))
    add(gcs_round & rand(.97), np.where(cv, 454, 223901), motor.astype(float),
        np.where(cv, text_codes("gcs_motor_cv", motor), text_codes("gcs_motor_mv", motor)))
    add(gcs_round & rand(.97), np.where(cv, 723, 223900), verbal_score.astype(float),
        np.where(cv, text_codes("gcs_verbal_cv", verbal_code), text_codes("gcs_verbal_mv", verbal_code)))
    add(gcs_round & cv, 198, (eye + motor + verbal_score).astype(float))
    crr = (rng.random(n) < _sigmoid(-3 + 1.2 * sev)).astype(np.int64)
    crr_pick = _choice(rng, [3348, 115, 8377], [.8, .1, .1], n)
    crr_item = np.where(cv, np.array([3348, 115, 8377])[crr_pick], 223951)
    add(rand(np.where(cv, .12, .05)), crr_item, None,
        np.where(cv, text_codes("crr_cv", crr), text_codes("crr_mv", crr)))
    glucose = 130 * np.exp(.3 * cl["diabetes"] + .9 * cl["dka"] + .05 * sev + .25 * rng.normal(0, 1, n))
    add(rand(.15 + .15 * cl["diabetes"]), np.where(cv, 807, 225664), glucose)
    ph = 7.39 - .04 * sev + .04 * rng.normal(0, 1, n)
    add(rand(.05 + .1 * intub), np.where(cv, 780, 223830), ph)


def _chart_body_size(rng: np.random.Generator, slots: _Slots, r: SimpleNamespace) -> None:
    """Admission weight and height on a stay's first round, a daily weight on about one round a day
    (MetaVision in kg and cm; CareVue in kg and, for the admission height, inches)."""
    st, cv, nb, rand, add = r.st, r.cv, r.nb, slots.rand, slots.add
    stay_weight = np.exp(np.log(np.where(r.stay_male, 84.0, 72.0)) + .2 * rng.normal(0, 1, r.q))[st]
    stay_height = (np.where(r.stay_male, 176.0, 162.0) + 7 * rng.normal(0, 1, r.q))[st]
    weight = np.where(nb, 3.3 * np.exp(.15 * rng.normal(0, 1, r.n)), stay_weight * np.exp(.01 * rng.normal(0, 1, r.n)))
    height = np.where(nb, 50 + 2 * rng.normal(0, 1, r.n), stay_height)
    add(r.first_round & rand(.85), np.where(cv, 762, 226512), weight)
    add(~r.first_round & rand(r.daily * .6), np.where(cv, 763, 224639), weight)
    add(r.first_round & rand(.6), np.where(cv, 920, 226730), height)


def _chart_distractors(rng: np.random.Generator, slots: _Slots, r: SimpleNamespace, hr: np.ndarray) -> None:
    """Items outside the variable set that staging must ignore: rhythm, PEEP, skin site."""
    n, off, cl, cv, intub = r.n, r.off, r.cl, r.cv, r.intub
    rand, add = slots.rand, slots.add
    rhythm = np.where(cl["chf"] & (off[:, 7] > 0), 2, np.where(hr > 100, 1, np.where(hr < 60, 3, 0)))
    add(rand(.25), np.where(cv, 212, 220048), None,
        np.where(cv, text_codes("rhythm_cv", rhythm), text_codes("rhythm_mv", rhythm)))
    add(intub & rand(.25), np.where(cv, 506, 220339), 5 + np.round(rng.uniform(0, 10, n)))
    add(~cv & rand(.01), 224032, None, text_codes("skin_site_mv", rng.integers(0, 4, n)))


def _chart_columns(rng: np.random.Generator, S: _Structure, r: SimpleNamespace, row_offset: int,
                   tick: np.ndarray, itemid: np.ndarray, canonical: np.ndarray,
                   text: np.ndarray) -> dict[str, pa.Array]:
    """The rows in each item's unit, with charting errors and the CareVue/MetaVision columns."""
    n_rows = len(tick)
    raw = canonical * ITEM_SCALE[itemid] + ITEM_OFFSET[itemid]
    # charting errors: a few absurd numbers (range filtering must catch them)
    garbage = np.isin(itemid, _GARBAGE_ITEMS) & (rng.random(n_rows) < .0015)
    kind = rng.integers(0, 4, n_rows)
    bad = np.select([kind == 0, kind == 1, kind == 2], [0.0, raw * 10, -raw], 999999.0)
    raw = np.where(garbage, bad, raw)
    valuenum = np.where(np.isnan(raw), np.nan, round_values(np.nan_to_num(raw), itemid))
    value, num, uom = event_value_columns(itemid, valuenum, text)

    row_st = r.st[tick]
    row_cv = r.cv[tick]
    mv_rows = ~row_cv
    warning = np.where(rng.random(n_rows) < .02, 1, 0)
    error = np.where(rng.random(n_rows) < .0015, 1, 0)
    status = np.where(rng.random(n_rows) < .05, 2, np.where(rng.random(n_rows) < .005, 1, 0))
    stopped = _choice(rng, _STOPPED, [.992, .004, .004], n_rows)
    ct = r.charttime[tick]
    cgid = 14_000 + (S.icustay_id[row_st] * 7919 + rng.integers(0, 3, n_rows)) % 7_000
    return {
        "row_id": np.arange(row_offset + 1, row_offset + n_rows + 1),
        "subject_id": S.subject_id[r.pat[row_st]],
        "hadm_id": S.hadm_id[r.adm[row_st]],
        "icustay_id": S.icustay_id[row_st],
        "itemid": itemid,
        "charttime": _ts(ct),
        "storetime": _ts(ct + rng.integers(1, 90, n_rows) * 60),
        "cgid": cgid,
        "value": value,
        "valuenum": num,
        "valueuom": uom,
        "warning": pa.array(warning, mask=row_cv),
        "error": pa.array(error, mask=row_cv),
        "resultstatus": dict_array(np.where(mv_rows, -1, status), _RESULTSTATUS),
        "stopped": dict_array(np.where(mv_rows, -1, stopped), _STOPPED),
    }
