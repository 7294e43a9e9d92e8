"""Scan everything that leaves a workspace for real values, not only real ids.

What leaves: the MLflow artifacts (`mlartifacts/`: vocabulary, model config, evaluation tables and
plots' data, the release's tables and card), the MLflow database (params, metrics, tags) and the
Dagster instance (event log with every materialization's and check's metadata, run logs). What
stays: the warehouse, `artifacts/` and `private/` of the workspace.

Needles, from the real warehouse and raw files:
- real DOBs and admission times (as text);
- real per-patient extremes: each patient's minimum and maximum of each variable, when fewer
  than 10 records hold that value and it has enough digits not to collide by chance with a
  legitimate number;
- real (itemid, charttime, valuenum) triples, in the released CHARTEVENTS / LABEVENTS.

And each number a logged vocabulary or marginal histogram table stores, with the real patients it
depends on (`stored_number_dependencies`): fewer than 10 is a leak (`k_anonymity_leaks`).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

BINARY_SUFFIXES = {".safetensors", ".png", ".pkl", ".db"}


def _sqlite_text(path: Path) -> str:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        parts = []
        for (table,) in con.execute("select name from sqlite_master where type = 'table'"):
            for row in con.execute(f'select * from "{table}"'):
                parts.append(" ".join(str(x) for x in row))
        return "\n".join(parts)
    finally:
        con.close()


def what_leaves(home: Path) -> tuple[str, list[pd.DataFrame]]:
    """All text that leaves the workspace, and the released/logged Parquet tables."""
    texts, tables = [], []
    for path in sorted((home / "mlartifacts").rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            tables.append(pd.read_parquet(path))
        elif path.suffix not in BINARY_SUFFIXES:
            texts.append(path.read_text(errors="ignore"))
    for db in [home / "mlflow.db", *sorted((home / "dagster_home").rglob("*.db"))]:
        if db.exists():
            texts.append(_sqlite_text(db))
    for log in sorted((home / "dagster_home").rglob("*")):
        if log.is_file() and log.suffix in {".log", ".out", ".err", ".txt"}:
            texts.append(log.read_text(errors="ignore"))
    return "\n".join(texts), tables


def _long_numbers(values: np.ndarray) -> set[str]:
    """repr of values with at least 5 significant digits (a '120' or '98.6' collides by chance)."""
    out = set()
    for v in np.unique(values[np.isfinite(values)]):
        text = repr(float(v))
        if len(text.replace("-", "").replace(".", "").lstrip("0")) >= 5:
            out.add(text)
    return out


def real_needles(warehouse: Path) -> dict[str, set[str]]:
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        dob = con.sql("select distinct strftime(dob, '%Y-%m-%d') as d from main.stg_mimic__patients "
                      "where dob is not null").df()["d"]
        admit = con.sql("select distinct strftime(admittime, '%Y-%m-%d %H:%M') as t from main.stg_mimic__admissions "
                        "where admittime is not null").df()["t"]
        # A patient's extreme identifies when fewer than 10 records hold the value (96 F = 35.5556 C
        # is everywhere), the vocabulary's own rule (each stored number is a mean of 10 values);
        # integers are left out because counts and ids collide with them.
        extremes = con.sql(
            "with ext as (select min(value) as v from main.measurements where value is not null "
            "group by subject_id, variable union select max(value) from main.measurements "
            "where value is not null group by subject_id, variable), "
            "holders as (select value as v, count(*) as n from main.measurements "
            "where value in (select v from ext) group by value) "
            "select v from holders where n < 10 and v <> round(v)").df()["v"]
    return {
        "dob": set(dob),
        "admittime": set(admit),
        "per_patient_extreme": _long_numbers(extremes.to_numpy(float)),
    }


def find_leaks(home: Path, warehouse: Path) -> list[str]:
    """Human-readable leaks found (empty = clean)."""
    import duckdb

    text, tables = what_leaves(home)
    needles = real_needles(warehouse)
    leaks = []
    for kind in ("dob", "admittime", "per_patient_extreme"):
        # A number as a whole token: 162.56 inside a timestamp 1796674162.5647 or a 160.028 is none.
        found = sorted(n for n in needles[kind] if n in text
                       and re.search(rf"(?<![\d.]){re.escape(n)}(?![\d])", text))
        if found:
            leaks.append(f"{len(found)} real {kind} value(s) in logged text, e.g. {found[:3]}")
    table_numbers = set()
    for frame in tables:
        for col in frame.columns:
            if pd.api.types.is_float_dtype(frame[col]):
                table_numbers |= {repr(float(v)) for v in frame[col].dropna().unique()}
    found = sorted(needles["per_patient_extreme"] & table_numbers)
    if found:
        leaks.append(f"{len(found)} real per-patient extreme(s) in logged tables, e.g. {found[:3]}")
    # Real (itemid, charttime, valuenum) triples in released event tables.
    events = [f for f in tables if {"itemid", "charttime", "valuenum"} <= set(f.columns)]
    if events:
        synthetic = pd.concat([f[["itemid", "charttime", "valuenum"]] for f in events], ignore_index=True)
        with duckdb.connect(str(warehouse), read_only=True) as con:
            con.register("synthetic", synthetic)
            n = con.execute(
                "select count(*) from synthetic s join (select itemid, charttime, valuenum from main.stg_mimic__chartevents "
                "union all select itemid, charttime, valuenum from main.stg_mimic__labevents) r "
                "on s.itemid = r.itemid and s.charttime = r.charttime and s.valuenum = r.valuenum").fetchone()[0]
        if n:
            leaks.append(f"{n} released event row(s) equal a real (itemid, charttime, valuenum) triple")
    leaks += k_anonymity_leaks(stored_number_dependencies(home, warehouse))
    return leaks


# ------------------------------------------------------------------------------------------------
# k-anonymity of every stored number: how many distinct real patients each one depends on

MIN_PATIENTS = 10
# The longest run of consecutive order statistics, all of one patient, whose mean is looked for.
MAX_RUN = 30
_RTOL = 1e-9  # the construction's EQUAL_RTOL (core/privacy_aggregates.py)


class RealSample:
    """The real values of one quantity with the patient of each, and what a stored number `x`
    reveals about them (`patients_behind`)."""

    def __init__(self, values, patients):
        values = np.asarray(values, dtype=np.float64)
        patients = np.asarray(patients)
        keep = ~np.isnan(values)
        self.values, self.patients = values[keep], patients[keep]
        order = np.lexsort((self.patients, self.values))
        self.sorted, self.sorted_patients = self.values[order], self.patients[order]
        frame = pd.DataFrame({"p": self.patients, "v": self.values}).groupby("p")["v"]
        self.maxima, self.minima = np.sort(frame.max().to_numpy()), np.sort(frame.min().to_numpy())
        self.run_means = self._one_patient_run_means()

    def _one_patient_run_means(self) -> np.ndarray:
        """Means of every run of 2..MAX_RUN consecutive order statistics (of all the patients'
        values sorted together) that one patient holds all of, unless they are all equal (then
        the mean is the value itself, checked as such): a smoothed quantile that one patient
        alone fills."""
        v, p = self.sorted, self.sorted_patients
        segment = np.concatenate([[0], np.cumsum(p[1:] != p[:-1])])
        prefix = np.concatenate([[0.0], np.cumsum(v)])
        out = []
        for m in range(2, MAX_RUN + 1):
            if len(v) < m:
                break
            start = np.arange(len(v) - m + 1)
            spread = v[start + m - 1] - v[start]
            one = (segment[start] == segment[start + m - 1]) & (spread > _RTOL * np.maximum(np.abs(v[start]), 1.0))
            if not one.any():
                break  # a longer run would hold a shorter one
            out.append(((prefix[start + m] - prefix[start]) / m)[one])
        return np.sort(np.concatenate(out)) if out else np.zeros(0)

    @staticmethod
    def _near(sorted_values: np.ndarray, x: float) -> tuple[int, int]:
        tol = _RTOL * max(abs(x), 1.0)
        return (int(np.searchsorted(sorted_values, x - tol, side="left")),
                int(np.searchsorted(sorted_values, x + tol, side="right")))

    def patients_behind(self, x: float) -> tuple[int, str]:
        """How many distinct patients `x` depends on, and why: the fewer of the patients reaching
        x from above and from below (a number in a tail that few patients reach is about them),
        the patients holding exactly x, and 1 when x is the mean of a run of one patient's values."""
        n_above = len(self.maxima) - int(np.searchsorted(self.maxima, x, side="left"))
        n_below = int(np.searchsorted(self.minima, x, side="right"))
        found = [(n_above, "patients with a value >= it"), (n_below, "patients with a value <= it")]
        a, b = self._near(self.sorted, x)
        if b > a:
            found.append((int(pd.unique(self.sorted_patients[a:b]).size), "patients holding exactly it"))
        a, b = self._near(self.run_means, x)
        if b > a:
            found.append((1, "the mean of a run of one patient's values"))
        return min(found, key=lambda t: t[0])


def real_samples(warehouse: Path, train_only: bool = True) -> dict:
    """Real values and patients behind each stored quantity: measurements by variable, AGE,
    GAP_VISIT, LOS, DT; and patients per code, phenotype, covariate and measurement category.
    Only train patients when the warehouse holds the patient split (the vocabulary and the
    evaluation's real side are fitted on train)."""
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        has_split = bool(con.sql("select count(*) from information_schema.tables where "
                                 "table_schema = 'synehrgy' and table_name = 'patient_split'").fetchall()[0][0])
        where = ("where subject_id in (select subject_id from synehrgy.patient_split where split = 'train')"
                 if train_only and has_split else "")
        visits = con.sql(f"select * from main.visits {where}").df()
        meas = con.sql(f"select subject_id, icustay_id, hours, variable, value, value_text "
                       f"from main.measurements {where}").df()
        codes = con.sql(f"select subject_id, code_type, icd9_code from main.visit_codes {where}").df()
        phen = con.sql(f"select subject_id, phenotype from main.visit_phenotypes {where}").df()
    out = {"variables": {}, "categories": {}}
    for name, part in meas.groupby("variable"):
        out["variables"][name] = part
        text = part["value_text"].astype(object).where(part["value_text"].notna(),
                                                       part["value"].map(lambda v: f"{v:g}" if v == v else None))
        out["categories"][name] = pd.DataFrame({"c": text, "p": part["subject_id"]}).dropna() \
            .groupby("c")["p"].nunique()
    capped = visits["age_is_capped"].fillna(False).astype(bool) | (visits["age_years"] >= 90)
    out["AGE"] = RealSample(visits.loc[~capped, "age_years"], visits.loc[~capped, "subject_id"])
    out["GAP_VISIT"] = RealSample(visits["hours_since_previous_visit"].clip(0, 175200), visits["subject_id"])
    out["LOS"] = RealSample(visits["los_hours"], visits["subject_id"])
    if {"admittime", "dischtime"} <= set(visits.columns):
        hours = lambda a, b: ((pd.to_datetime(visits[a]) - pd.to_datetime(visits[b])).dt.total_seconds()  # noqa: E731
                              / 3600).clip(lower=0)
        died = visits["mortality_inhospital"] == 1
        out["admit_to_icu_hours"] = RealSample(hours("intime", "admittime"), visits["subject_id"])
        after = hours("dischtime", "outtime")
        out["icu_to_discharge_hours_survived"] = RealSample(after[~died], visits.loc[~died, "subject_id"])
        out["icu_to_discharge_hours_died"] = RealSample(after[died], visits.loc[died, "subject_id"])
    last = meas.groupby("icustay_id")["hours"].max().rename("last_row")
    ends = visits.set_index("icustay_id")[["subject_id", "los_hours"]].join(last, how="inner").dropna()
    inside = ends[ends["last_row"] > 0]
    out["last_row_hours"] = RealSample(inside["last_row"], inside["subject_id"])
    out["last_row_to_outtime_hours"] = RealSample((ends["los_hours"] - ends["last_row"]).clip(lower=0),
                                                  ends["subject_id"])
    rows = meas[meas["value"].notna() | meas["value_text"].notna()][["subject_id", "icustay_id", "hours"]]
    rows = rows.drop_duplicates().sort_values(["icustay_id", "hours"])
    prev = rows.groupby("icustay_id")["hours"].shift(1).fillna(0.0)
    out["DT"] = RealSample((rows["hours"] - prev).clip(0, 2400), rows["subject_id"])
    out["codes"] = {t: part.groupby("icd9_code")["subject_id"].nunique() for t, part in codes.groupby("code_type")}
    out["phenotypes"] = phen.groupby("phenotype")["subject_id"].nunique()
    out["covariates"] = {c: visits.groupby(c)["subject_id"].nunique()
                         for c in ("gender", "ethnicity_group", "insurance", "admission_type", "first_careunit",
                                   "icu_database")
                         if c in visits.columns}
    return out


def _variable_sample(samples: dict, name: str, low=None, high=None) -> RealSample | None:
    cache = samples.setdefault("_numeric", {})
    key = (name, low, high)
    if key not in cache:
        part = samples["variables"].get(name)
        if part is None:
            return None
        values = part["value"].to_numpy(float)
        if low is not None:
            values = np.clip(values, low, high)
        cache[key] = RealSample(values, part["subject_id"].to_numpy())
    return cache[key]


def vocabulary_dependencies(vocab: dict, samples: dict, source: str = "vocabulary") -> pd.DataFrame:
    """One row per number, code or category the vocabulary JSON stores that real data chose:
    (source, what, value, patients, why). Public constants (valid ranges, the fixed scales' edges)
    are left out."""
    rows = []

    def number(what, x, sample):
        if sample is not None and x is not None:
            n, why = sample.patients_behind(float(x))
            rows.append((source, what, float(x), n, why))

    for var in vocab["variables"]:
        low, high = var["valid_low"], var["valid_high"]
        sample = _variable_sample(samples, var["name"], low, high)
        if var["bins"] is not None:
            for e in var["bins"]["edges"][1:-1]:
                number(f"{var['name']} bin edge", e, sample)
            for i, q in enumerate(var["bins"]["quantiles"]):
                for x in q or []:
                    if x not in (low, high):
                        number(f"{var['name']} bin {i} quantile", x, sample)
        for cat, score in zip(var["categories"], var["category_values"]):
            n = int(samples["categories"].get(var["name"], pd.Series(dtype=int)).get(cat, 0))
            rows.append((source, f"{var['name']} category {cat!r}", np.nan, n, "patients with the category"))
            number(f"{var['name']} category {cat!r} score", score, _variable_sample(samples, var["name"]))
    for scale in ("AGE", "GAP_VISIT", "DT"):
        public = np.asarray(vocab["scales"][scale]["edges"])  # fixed in the code, not fitted
        for i, q in enumerate(vocab["scales"][scale]["quantiles"]):
            for x in q or []:
                if not np.isclose(x, public, rtol=_RTOL, atol=_RTOL).any():
                    number(f"{scale} bin {i} quantile", x, samples[scale])
    for x in vocab.get("los_quantiles") or []:
        number("LOS quantile", x, samples["LOS"])
    for name, quantiles in (vocab.get("stay_offsets") or {}).items():
        for x in quantiles or []:
            number(f"{name} quantile", x, samples[name])
    for code_type, codes in vocab["codes"].items():
        held = samples["codes"].get(code_type, pd.Series(dtype=int))
        for code in codes:
            rows.append((source, f"{code_type} code {code}", np.nan, int(held.get(code, 0)), "patients with the code"))
    for name in vocab["phenotypes"]:
        rows.append((source, f"phenotype {name}", np.nan, int(samples["phenotypes"].get(name, 0)),
                     "patients with the phenotype"))
    for col, cats in vocab["covariates"].items():
        held = samples["covariates"].get(col, pd.Series(dtype=int))
        for cat in cats:
            rows.append((source, f"{col} {cat!r}", np.nan, int(held.get(cat, 0)), "patients with the category"))
    return pd.DataFrame(rows, columns=["source", "what", "value", "patients", "why"])


def histogram_dependencies(hist: pd.DataFrame, samples: dict, source: str = "marginal_histograms") -> pd.DataFrame:
    """The axis ends of each continuous variable (the inner edges are evenly spaced between them)
    and the real patients behind each real bin that is not suppressed."""
    rows = []
    for name, part in hist[hist["kind"] != "categorical"].groupby("variable"):
        sample = _variable_sample(samples, name)
        if sample is None:
            continue
        part = part.sort_values("bin")
        lo, hi = float(part["left"].min()), float(part["right"].max())
        for what, x in (("axis start", lo), ("axis end", hi)):
            n, why = sample.patients_behind(x)
            rows.append((source, f"{name} {what}", x, n, why))
        clipped = np.clip(sample.values, lo, hi)
        suppressed = (part["real_suppressed"].astype(bool) if "real_suppressed" in part
                      else pd.Series(False, index=part.index))
        shown = part[(part["real_fraction"] > 0) & ~suppressed]
        for r in shown.itertuples():
            inside = (clipped >= r.left) & ((clipped < r.right) | (r.right == hi))
            n = int(pd.unique(sample.patients[inside]).size)
            rows.append((source, f"{name} real bin {r.bin}", np.nan, n, "patients with values in the bin"))
    return pd.DataFrame(rows, columns=["source", "what", "value", "patients", "why"])


def stored_number_dependencies(home: Path, warehouse: Path, extra: list[Path] = ()) -> pd.DataFrame:
    """Every vocabulary JSON and marginal histogram table logged under `home/mlartifacts` (and the
    files in `extra`), each stored number with the real patients it depends on."""
    import json

    samples = real_samples(warehouse)
    files = [*sorted((home / "mlartifacts").rglob("*")), *map(Path, extra)]
    parts = []
    for path in files:
        if path.name == "token_vocabulary.json":
            parts.append(vocabulary_dependencies(json.loads(path.read_text()), samples, str(path)))
        elif path.stem == "marginal_histograms" and path.suffix in (".csv", ".parquet"):
            hist = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
            parts.append(histogram_dependencies(hist, samples, str(path)))
    columns = ["source", "what", "value", "patients", "why"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def k_anonymity_leaks(deps: pd.DataFrame, k: int = MIN_PATIENTS) -> list[str]:
    """Messages for the stored numbers, codes and categories behind fewer than `k` real patients."""
    bad = deps[deps["patients"] < k]
    if bad.empty:
        return []
    one = int((bad["patients"] <= 1).sum())
    examples = "; ".join(f"{r.what} = {r.value:g} ({r.patients}: {r.why})" if r.value == r.value
                         else f"{r.what} ({r.patients}: {r.why})" for r in bad.head(5).itertuples())
    return [f"{len(bad)} stored value(s) depend on fewer than {k} real patients ({one} on one), e.g. {examples}"]


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.leak_scan WAREHOUSE [HOME] [--file token_vocabulary.json ...]`: the stored
    numbers behind fewer than 10 real patients, per file; exit 1 when there is any."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("warehouse", type=Path)
    parser.add_argument("home", type=Path, nargs="?", default=Path("/nonexistent"))
    parser.add_argument("--file", type=Path, action="append", default=[],
                        help="a vocabulary JSON or marginal_histograms table outside HOME/mlartifacts")
    args = parser.parse_args(argv)
    deps = stored_number_dependencies(args.home, args.warehouse, args.file)
    for source, part in deps.groupby("source"):
        numbers, names = part[part["value"].notna()], part[part["value"].isna()]
        print(f"{source}: {len(numbers)} numbers, {int((numbers['patients'] < MIN_PATIENTS).sum())} behind "
              f"< {MIN_PATIENTS} patients ({int((numbers['patients'] <= 1).sum())} behind one); "
              f"{len(names)} codes/categories/bins, {int((names['patients'] < MIN_PATIENTS).sum())} behind "
              f"< {MIN_PATIENTS} ({int((names['patients'] <= 1).sum())} behind one)")
    leaks = k_anonymity_leaks(deps)
    print("\n".join(leaks) or "no stored value depends on fewer than 10 real patients")
    return 1 if leaks else 0


if __name__ == "__main__":
    raise SystemExit(main())
