"""Utility: prediction tasks trained on real train (TRTR) or on synthetic data (TSTR) and scored on
real test, with equal training-set sizes, as AUROC/AUPRC and TSTR/TRTR ratios.

* `mortality_utility`: in-hospital mortality (the `utility/...` keys of `evaluate`).
* `utility_panel`: the task panel of the field (in-hospital mortality, length of stay over 3 and
  over 7 days, the 25 benchmark phenotypes), each with bootstrap 95 % intervals over the real test
  patients, and `utility_gate_rows`, the gate that decides on those intervals.
* `choose_test_fraction`: the real test share that gives the gated tasks enough positives.

The classifiers are fixed and seeded (`CLASSIFIERS`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from threadpoolctl import threadpool_limits

from synehrgy_assets.core.metrics.common import DEFAULT_MIN_CELL_COUNT, MetricError, MetricInputError, MetricValue
from synehrgy_assets.core.metrics.features import (
    CohortLike,
    FeatureSpace,
    PreparedCohort,
    _prepare_three,
    los_labels,
    mortality_labels,
    phenotype_labels,
)


CLASSIFIERS = ("hist_gradient_boosting", "logistic_regression")
DEFAULT_MAX_FIT_RECORDS = 20_000


def _make_classifier(classifier: str, seed: int):
    if classifier == "hist_gradient_boosting":
        # Fixed iterations, no early stopping: identical treatment of real and synthetic training
        # sets and no hidden random validation split.
        return HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=20, max_bins=64,
            l2_regularization=1.0, early_stopping=False, random_state=seed,
        )
    if classifier == "logistic_regression":
        return LogisticRegression(C=0.1, max_iter=2000)
    raise MetricInputError(f"unknown classifier '{classifier}'; expected one of {CLASSIFIERS}")


def _fit_predict(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, classifier: str, seed: int,
                 source: str, target: str = "mortality") -> np.ndarray | str:
    """Predicted positive probabilities on `x_test`, or why no classifier could be trained."""
    classes = np.unique(y_fit)
    if len(classes) < 2:
        only = int(classes[0]) if len(classes) else "none"
        return f"the {source} cohort has a single {target} class ({only}, n={len(y_fit)}); cannot train a classifier"
    return _make_classifier(classifier, seed).fit(x_fit, y_fit).predict_proba(x_test)[:, 1]


def _train_and_score(
    x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    classifier: str, seed: int, prefix: str, source: str,
) -> dict[str, MetricValue]:
    keys = (f"{prefix}_auroc", f"{prefix}_auprc")
    p = _fit_predict(x_fit, y_fit, x_test, classifier, seed, source)
    if isinstance(p, str):
        return {k: MetricError(k, p) for k in keys}
    return {keys[0]: float(roc_auc_score(y_test, p)), keys[1]: float(average_precision_score(y_test, p))}


def _predict_pair(
    x_train: np.ndarray, y_train: np.ndarray, x_syn: np.ndarray, y_syn: np.ndarray, x_test: np.ndarray,
    seed: int, classifier: str, max_fit_records: int, target: str = "mortality",
) -> tuple[np.ndarray | str, np.ndarray | str, int]:
    """(TRTR predictions, TSTR predictions, training-set size) on `x_test`; a str says why one is missing."""
    if len(y_train) == 0 or len(y_syn) == 0:
        raise MetricInputError(f"utility ({target}) needs visits in real_train and synthetic")
    # Equal training-set sizes so TSTR vs TRTR compares data quality, not data quantity.
    rng = np.random.default_rng(seed)
    n_fit = min(len(y_train), len(y_syn), max_fit_records)
    fit_train = np.sort(rng.choice(len(y_train), n_fit, replace=False))
    fit_syn = np.sort(rng.choice(len(y_syn), n_fit, replace=False))
    p_trtr = _fit_predict(x_train[fit_train], y_train[fit_train], x_test, classifier, seed, "real_train", target)
    p_tstr = _fit_predict(x_syn[fit_syn], y_syn[fit_syn], x_test, classifier, seed, "synthetic", target)
    return p_trtr, p_tstr, n_fit


def _mortality_scores(y_train: np.ndarray, y_test: np.ndarray, y_syn: np.ndarray, n_fit: int,
                      p_trtr: np.ndarray | str, p_tstr: np.ndarray | str) -> dict[str, MetricValue]:
    out: dict[str, MetricValue] = {
        "n_fit": float(n_fit), "n_test": float(len(y_test)),
        "train_positive_rate": float(y_train.mean()), "test_positive_rate": float(y_test.mean()),
        "synthetic_positive_rate": float(y_syn.mean()),
    }
    for prefix, p in (("trtr", p_trtr), ("tstr", p_tstr)):
        keys = (f"{prefix}_auroc", f"{prefix}_auprc")
        if isinstance(p, str):
            out.update({k: MetricError(k, p) for k in keys})
        else:
            out[keys[0]], out[keys[1]] = float(roc_auc_score(y_test, p)), float(average_precision_score(y_test, p))
    for m in ("auroc", "auprc"):
        key, tstr, trtr = f"{m}_ratio", out[f"tstr_{m}"], out[f"trtr_{m}"]
        if isinstance(tstr, MetricError) or isinstance(trtr, MetricError):
            out[key] = MetricError(key, f"needs both TSTR and TRTR {m.upper()}")
        else:
            out[key] = tstr / trtr  # AUROC/AUPRC of a fitted model on two classes is > 0
    return out


def _require_both_classes(y_test: np.ndarray) -> None:
    if len(y_test) == 0 or len(np.unique(y_test)) < 2:
        raise MetricInputError("real_test: 'mortality_inhospital' needs both classes; AUROC/AUPRC are undefined")


def _utility_from_features(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    x_syn: np.ndarray, y_syn: np.ndarray, seed: int, classifier: str, max_fit_records: int,
) -> dict[str, MetricValue]:
    _require_both_classes(y_test)
    p_trtr, p_tstr, n_fit = _predict_pair(x_train, y_train, x_syn, y_syn, x_test, seed, classifier, max_fit_records)
    return _mortality_scores(y_train, y_test, y_syn, n_fit, p_trtr, p_tstr)


def mortality_utility(
    real_train: CohortLike,
    real_test: CohortLike,
    synthetic: CohortLike,
    seed: int = 0,
    variables: pd.DataFrame | Sequence[str] | None = None,
    classifier: str = "hist_gradient_boosting",
    space: FeatureSpace | None = None,
    max_fit_records: int = DEFAULT_MAX_FIT_RECORDS,
    n_threads: int | None = 1,
) -> dict[str, MetricValue]:
    """In-hospital mortality: TRTR vs TSTR AUROC/AUPRC on real test, and TSTR/TRTR ratios."""
    preps = _prepare_three(real_train, real_test, synthetic)
    space = space or FeatureSpace.fit(preps["real_train"], variables)
    x = {n: space.transform(p, standardize=True).to_numpy() for n, p in preps.items()}
    y = {n: mortality_labels(p.cohort, n) for n, p in preps.items()}
    with threadpool_limits(limits=n_threads):
        return _utility_from_features(x["real_train"], y["real_train"], x["real_test"], y["real_test"],
                                      x["synthetic"], y["synthetic"], seed, classifier, max_fit_records)


# --------------------------------------------------------------------------------------------
# The task panel, its intervals and its gate
# --------------------------------------------------------------------------------------------

PANEL_PREFIX = "utility_panel"
DEFAULT_BOOTSTRAP_RESAMPLES = 200
# The stated minimum test size: a task is gated only with at least this many positive and this
# many negative real test visits (about 13 deaths decide nothing but noise).
MIN_GATE_POSITIVES = 30
# Length of stay as MIMIC-Extract poses it: features from the first 24 h, a 6 h gap before the
# prediction, so only stays of at least 30 h take part.
LOS_WINDOW_HOURS = 24.0
LOS_GAP_HOURS = 6.0
LOS_TASKS = {"los_gt_3d": 3.0, "los_gt_7d": 7.0}
GATED_TASKS = ("mortality_inhospital", "los_gt_3d", "los_gt_7d", "phenotypes_macro")
TASK_DESCRIPTIONS = {
    "mortality_inhospital": "in-hospital mortality, every feature of the first 48 h (as utility/...)",
    "los_gt_3d": "stay > 3 days, from the first 24 h (stays >= 30 h; no LOS or ICD code features)",
    "los_gt_7d": "stay > 7 days, from the first 24 h (stays >= 30 h; no LOS or ICD code features)",
    "phenotypes_macro": "the benchmark phenotypes (HCUP CCS), macro AUROC over those with enough positives; "
                        "first 48 h without ICD code features (the labels come from the codes)",
}
# Tasks of the field that these marts cannot pose, and why (reported, never silently skipped).
NOT_AVAILABLE = {
    "decompensation_48h": "not measured: the marts carry no time of death (visits.mortality_inhospital only), "
                          "which decompensation and 48-hour mortality labels need",
}
_CODE_COLUMNS = ("n_diagnoses", "n_procedures")
PANEL_COLUMNS = ["task", "gated", "n_test_positive", "n_test_negative", "trtr_auroc", "trtr_auroc_ci_low",
                 "trtr_auroc_ci_high", "tstr_auroc", "tstr_auroc_ci_low", "tstr_auroc_ci_high", "auroc_ratio",
                 "auroc_ratio_ci_low", "auroc_ratio_ci_high", "note"]


def bootstrap_weights(subject_ids: Sequence, n_resamples: int, seed: int) -> np.ndarray:
    """[n_resamples, n_visits]: how often each visit's patient is drawn in each resample of the
    patients (with replacement, as many draws as patients): a patient's visits move together."""
    codes, uniques = pd.factorize(pd.Series(np.asarray(subject_ids)))
    n = len(uniques)
    if n == 0:
        return np.zeros((n_resamples, 0))
    counts = np.random.default_rng([seed, 95]).multinomial(n, np.full(n, 1.0 / n), size=n_resamples)
    return counts[:, codes].astype(float)


def weighted_auroc(y: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """AUROC with case weights (ties count one half), one per row of `weights` ([B, n]; None = one
    row of ones, the plain AUROC). NaN for a row without both classes."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=float)
    w = np.ones((1, len(y))) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    if len(y) == 0:
        return np.full(len(w), np.nan)
    _, group = np.unique(score, return_inverse=True)
    onehot = sp.csr_matrix((np.ones(len(y)), (np.arange(len(y)), group)), shape=(len(y), int(group.max()) + 1))
    pos = np.asarray(onehot.T @ (w * y).T).T  # [B, distinct scores], ascending
    neg = np.asarray(onehot.T @ (w * ~y).T).T
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


@dataclass
class _Auroc:
    """A point AUROC and its bootstrap replicates, or why there is none."""

    point: float = math.nan
    boots: np.ndarray | None = None
    error: str = ""

    @classmethod
    def of(cls, y: np.ndarray, p: np.ndarray | str, weights: np.ndarray) -> "_Auroc":
        if isinstance(p, str):
            return cls(error=p)
        return cls(float(weighted_auroc(y, p)[0]), weighted_auroc(y, p, weights))


def _interval(boots: np.ndarray) -> tuple[float, float]:
    ok = boots[np.isfinite(boots)]
    if len(ok) < 0.9 * len(boots):  # a test set this lopsided has no honest interval
        return math.nan, math.nan
    lo, hi = np.percentile(ok, [2.5, 97.5])
    return float(lo), float(hi)


def _interval_metrics(trtr: _Auroc, tstr: _Auroc) -> dict[str, MetricValue]:
    out: dict[str, MetricValue] = {}
    for name, a in (("trtr_auroc", trtr), ("tstr_auroc", tstr)):
        for key, value in ((name, a.point), *zip((f"{name}_ci_low", f"{name}_ci_high"),
                                                 _interval(a.boots) if a.boots is not None else (math.nan,) * 2)):
            out[key] = MetricError(key, a.error) if a.error else value
    keys = ("auroc_ratio", "auroc_ratio_ci_low", "auroc_ratio_ci_high")
    if trtr.error or tstr.error:
        out.update({k: MetricError(k, "needs both TSTR and TRTR AUROC") for k in keys})
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = tstr.boots / trtr.boots
        out.update(zip(keys, (tstr.point / trtr.point, *_interval(ratio))))
    for key, value in list(out.items()):
        if not isinstance(value, MetricError) and not math.isfinite(value):
            out[key] = MetricError(key, "fewer than 90 % of the bootstrap resamples hold both classes")
    return out


def _counts(y_test: np.ndarray, min_cell_count: int, min_gate: int) -> tuple[dict[str, MetricValue], str]:
    """The count metrics a task may publish and, when it is not reportable, why (no count in it)."""
    n_pos, n_neg = int(y_test.sum()), int(len(y_test) - y_test.sum())
    out: dict[str, MetricValue] = {"gated": float(min(n_pos, n_neg) >= min_gate)}
    if min(n_pos, n_neg) < min_cell_count:
        return out, (f"not reported: fewer than {min_cell_count} positive or negative real test visits "
                     "(a small cell)")
    out.update(n_test_positive=float(n_pos), n_test_negative=float(n_neg))
    return out, ""


def _not_reported(why: str) -> dict[str, MetricValue]:
    """One error entry for a task without figures (its table row says the same)."""
    return {"auroc_ratio": MetricError("auroc_ratio", why)}


def phenotype_slug(name: str) -> str:
    """A phenotype name as a metric-name part (MLflow allows letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _without(columns: list[str], drop_los: bool) -> np.ndarray:
    """Column mask without the ICD code features (and `los_hours` when `drop_los`)."""
    return np.array([not (c.startswith("code:") or c in _CODE_COLUMNS or (drop_los and c == "los_hours"))
                     for c in columns])


def utility_panel(
    preps: dict[str, PreparedCohort],
    space: FeatureSpace,
    x: dict[str, np.ndarray],
    seed: int = 0,
    classifier: str = "hist_gradient_boosting",
    max_fit_records: int = DEFAULT_MAX_FIT_RECORDS,
    n_resamples: int = DEFAULT_BOOTSTRAP_RESAMPLES,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    min_gate_positives: int = MIN_GATE_POSITIVES,
) -> tuple[dict[str, MetricValue], dict[str, MetricValue], pd.DataFrame]:
    """(the `utility/...` mortality metrics, the panel metrics `<task>/<metric>`, the panel table).

    `preps`: the three prepared cohorts (real_train, real_test, synthetic); `space` and `x`: their
    standardized 48-hour features. Every task trains on real train (TRTR) and on synthetic (TSTR)
    with the same classifier and equal training sizes, scores the same real test visits, and gets
    95 % percentile intervals from `n_resamples` resamples of the real test patients (the same
    resamples for both models, so the ratio's interval is paired). A task whose real test visits
    hold fewer than `min_cell_count` of either class gets no AUROC (it would rest on a small cell);
    `gated` says whether both classes reach `min_gate_positives`.
    """
    test = preps["real_test"]
    weights = bootstrap_weights(test.cohort.visits["subject_id"].to_numpy(), n_resamples, seed)
    run = _Panel(preps, weights, seed, classifier, max_fit_records, min_cell_count, min_gate_positives)
    mortality = run.mortality(x)
    run.length_of_stay(space)
    run.phenotypes(space, x)
    for name, why in NOT_AVAILABLE.items():
        run.add(name, {"gated": 0.0}, note=why)
    return mortality, run.panel, pd.DataFrame(run.rows, columns=PANEL_COLUMNS)


class _Panel:
    """The panel's tasks on one set of prepared cohorts: every task adds its metrics and one table row."""

    def __init__(self, preps: dict[str, PreparedCohort], weights: np.ndarray, seed: int, classifier: str,
                 max_fit_records: int, min_cell_count: int, min_gate_positives: int):
        self.preps, self.weights, self.seed = preps, weights, seed
        self.classifier, self.max_fit_records = classifier, max_fit_records
        self.min_cell_count, self.min_gate_positives = min_cell_count, min_gate_positives
        self.panel: dict[str, MetricValue] = {}
        self.rows: list[dict] = []

    def add(self, task: str, values: dict[str, MetricValue], note: str = "") -> None:
        self.panel.update({f"{task}/{k}": v for k, v in values.items()})
        row = {c: values.get(c, math.nan) for c in PANEL_COLUMNS}
        row.update(task=task, gated=bool(values.get("gated", 0.0)))
        errors = sorted({v.message for v in values.values() if isinstance(v, MetricError)})
        row.update({k: math.nan for k, v in row.items() if isinstance(v, MetricError)})
        row["note"] = "; ".join(filter(None, [note, *errors]))
        self.rows.append(row)

    def task(self, feats: dict[str, np.ndarray], cols: np.ndarray, masks: dict[str, np.ndarray | slice],
             labels: dict[str, np.ndarray], target: str):
        """(class counts, why not reported or "", the TRTR and TSTR AUROCs with their resamples)."""
        y_test = labels["real_test"][masks["real_test"]]
        counts, why = _counts(y_test, self.min_cell_count, self.min_gate_positives)
        if why:
            return counts, why, None
        xs = {n: f[masks[n]][:, cols] for n, f in feats.items()}
        ys = {n: labels[n][masks[n]] for n in labels}
        if len(ys["real_train"]) == 0 or len(ys["synthetic"]) == 0:
            return counts, f"no real_train or synthetic visits qualify for {target}", None
        p_trtr, p_tstr, _ = _predict_pair(xs["real_train"], ys["real_train"], xs["synthetic"], ys["synthetic"],
                                          xs["real_test"], self.seed, self.classifier, self.max_fit_records, target)
        w = self.weights[:, masks["real_test"]] if not isinstance(masks["real_test"], slice) else self.weights
        return counts, "", (_Auroc.of(y_test, p_trtr, w), _Auroc.of(y_test, p_tstr, w))

    def mortality(self, x: dict[str, np.ndarray]) -> dict[str, MetricValue]:
        """In-hospital mortality: the same fit (seed, subsample, features) as the `utility/...` keys,
        which it returns."""
        y_mort = {n: mortality_labels(p.cohort, n) for n, p in self.preps.items()}
        p_trtr, p_tstr, n_fit = _predict_pair(x["real_train"], y_mort["real_train"], x["synthetic"],
                                              y_mort["synthetic"], x["real_test"], self.seed, self.classifier,
                                              self.max_fit_records)
        if len(np.unique(y_mort["real_test"])) < 2:
            why = "real_test: 'mortality_inhospital' needs both classes; AUROC/AUPRC are undefined"
            mortality = {k: MetricError(k, why) for k in ("trtr_auroc", "tstr_auroc", "auroc_ratio")}
        else:
            mortality = _mortality_scores(y_mort["real_train"], y_mort["real_test"], y_mort["synthetic"], n_fit,
                                          p_trtr, p_tstr)
        counts, why = _counts(y_mort["real_test"], self.min_cell_count, self.min_gate_positives)
        if why:
            self.add("mortality_inhospital", {**counts, **_not_reported(why)})
        else:
            self.add("mortality_inhospital", {**counts, **_interval_metrics(
                _Auroc.of(y_mort["real_test"], p_trtr, self.weights),
                _Auroc.of(y_mort["real_test"], p_tstr, self.weights))})
        return mortality

    def length_of_stay(self, space: FeatureSpace) -> None:
        """Length of stay: features of the first 24 h, without the stay's length or its ICD codes."""
        los_space = FeatureSpace.fit(self.preps["real_train"], space.variables, top_k_codes=0,
                                     window_hours=LOS_WINDOW_HOURS)
        x24 = {n: los_space.transform(p, standardize=True).to_numpy() for n, p in self.preps.items()}
        cols24 = _without(los_space.columns, drop_los=True)
        for name, days in LOS_TASKS.items():
            labelled = {n: los_labels(p.cohort, days, LOS_WINDOW_HOURS + LOS_GAP_HOURS, n)
                        for n, p in self.preps.items()}
            counts, why, aurocs = self.task(x24, cols24, {n: m for n, (_, m) in labelled.items()},
                                            {n: y for n, (y, _) in labelled.items()}, f"stay > {days:g} days")
            self.add(name, {**counts, **(_not_reported(why) if why else _interval_metrics(*aurocs))})

    def phenotypes(self, space: FeatureSpace, x: dict[str, np.ndarray]) -> None:
        """Each benchmark phenotype the real data carries; the macro average over those with enough
        positives is the gated figure."""
        train, test = self.preps["real_train"], self.preps["real_test"]
        names = sorted(set(train.ph_name) | set(test.ph_name))
        cols48 = _without(space.columns, drop_los=False)
        y_ph = {n: phenotype_labels(p, names) for n, p in self.preps.items()}
        every = {n: slice(None) for n in self.preps}
        macro: list[tuple[_Auroc, _Auroc]] = []
        unreported = 0
        for j, name in enumerate(names):
            counts, why, aurocs = self.task(x, cols48, every,
                                            {n: y[:, j] for n, y in y_ph.items()}, f"phenotype '{name}'")
            key = f"phenotype/{phenotype_slug(name)}"
            if why:  # counted once below instead of one error per phenotype
                self.add(key, counts, note=f"{name}: {why}")
                unreported += 1
                continue
            self.add(key, {**counts, **_interval_metrics(*aurocs)}, note=name)
            if counts["gated"]:
                trtr, tstr = aurocs
                if tstr.error:  # a synthetic cohort without the phenotype teaches a constant: AUROC 0.5
                    tstr = _Auroc(0.5, np.full(len(self.weights), 0.5))
                if not trtr.error:
                    macro.append((trtr, tstr))
        if unreported:
            self.panel["phenotype/not_reported"] = MetricError(
                "phenotype/not_reported", f"{unreported} of {len(names)} phenotypes have fewer than "
                f"{self.min_cell_count} positive or negative real test visits: not reported")
        if macro:
            mean = [_Auroc(float(np.mean([a.point for a in side])), np.mean([a.boots for a in side], axis=0))
                    for side in zip(*macro)]
            self.add("phenotypes_macro", {"gated": 1.0, "n_phenotypes": float(len(macro)), **_interval_metrics(*mean)})
        else:
            self.add("phenotypes_macro", {"gated": 0.0, "n_phenotypes": 0.0},
                     note=f"no phenotype has {self.min_gate_positives} positive and negative real test visits")


def utility_gate_rows(metrics: dict, min_auroc_ratio: float,
                      prefix: str = PANEL_PREFIX) -> tuple[list[dict], list[str]] | None:
    """The utility gate on the panel: (rows, notes), or None when `metrics` hold no panel.

    A gated task passes unless the UPPER bound of its TSTR/TRTR interval is below `min_auroc_ratio`
    (a row's `measured` is that bound; `point` and `ci_low` travel beside it). A note, not a
    decision: a task with fewer than `MIN_GATE_POSITIVES` positive or negative real test visits,
    and a task real data does not predict (the lower bound of the TRTR AUROC interval <= 0.5: a
    ratio to chance is noise). A gated task without an interval is a row with NaN (not measured).
    Counts under 10 never appear.
    """
    if not any(str(k).startswith(prefix + "/") for k in metrics):
        return None

    def get(key: str) -> float:
        value = metrics.get(f"{prefix}/{key}")
        try:
            return math.nan if value is None else float(value)
        except (TypeError, ValueError):
            return math.nan

    rows, notes = [], []
    for task_name in GATED_TASKS:
        gated = get(f"{task_name}/gated")
        if gated == 0.0:
            n_pos, n_neg = get(f"{task_name}/n_test_positive"), get(f"{task_name}/n_test_negative")
            have = (f"{n_pos:.0f} positive / {n_neg:.0f} negative real test visits" if not math.isnan(n_pos)
                    else "fewer than 10 positive or negative real test visits")
            if task_name == "phenotypes_macro":
                have = "no phenotype with enough positive and negative real test visits"
            notes.append(f"{task_name} not gated: n positives < {MIN_GATE_POSITIVES} ({have})")
            continue
        trtr_low = get(f"{task_name}/trtr_auroc_ci_low")
        if trtr_low <= 0.5:  # NaN compares False: a missing interval is judged below, as not measured
            notes.append(f"{task_name} not gated: real data does not predict it (the TRTR AUROC interval reaches "
                         f"0.5: {trtr_low:.3f}), so its TSTR/TRTR ratio is noise")
            continue
        high = get(f"{task_name}/auroc_ratio_ci_high")
        ok = not math.isnan(high) and high >= min_auroc_ratio
        rows.append({"quantity": f"{task_name}: TSTR / TRTR AUROC, upper 95 % bound", "measured": high,
                     "real_test_baseline": 1.0, "op": ">=", "threshold": float(min_auroc_ratio), "ok": bool(ok),
                     "point": get(f"{task_name}/auroc_ratio"), "ci_low": get(f"{task_name}/auroc_ratio_ci_low"),
                     "n_test_positive": get(f"{task_name}/n_test_positive")})
    return rows, notes


def panel_markdown(table: pd.DataFrame) -> str:
    """The panel table as Markdown: each AUROC and the ratio with its 95 % interval."""
    def cell(row, key: str) -> str:
        value, lo, hi = row[key], row[f"{key}_ci_low"], row[f"{key}_ci_high"]
        if pd.isna(value):
            return "–"
        return f"{value:.3f}" + ("" if pd.isna(lo) else f" [{lo:.3f}, {hi:.3f}]")

    lines = ["| task | gated | real test +/− | TRTR AUROC [95 % CI] | TSTR AUROC [95 % CI] | TSTR/TRTR [95 % CI] | note |",
             "|---|---|---:|---:|---:|---:|---|"]
    for _, row in table.iterrows():
        counts = "–" if pd.isna(row["n_test_positive"]) else f"{row['n_test_positive']:.0f} / {row['n_test_negative']:.0f}"
        lines.append(f"| {row['task']} | {'yes' if row['gated'] else 'no'} | {counts} | {cell(row, 'trtr_auroc')} | "
                     f"{cell(row, 'tstr_auroc')} | {cell(row, 'auroc_ratio')} | {str(row['note']).replace('|', '/')} |")
    return "\n".join(lines)


def utility_gate_description(min_auroc_ratio: float) -> str:
    return (f"Each task of the utility panel ({', '.join(GATED_TASKS)}) with at least {MIN_GATE_POSITIVES} positive "
            f"and negative real test visits: a model trained on synthetic keeps >= {min_auroc_ratio:g} of the AUROC "
            "of one trained on real (both tested on real held-out patients), judged on the upper bound of the "
            "95 % bootstrap interval over the test patients; a task with fewer is reported, not gated. (Metrics "
            "without a panel: the in-hospital mortality point estimate.)")


def choose_test_fraction(n_patients: int, n_positive_patients: int, default_fraction: float,
                         max_fraction: float, min_positives: int = MIN_GATE_POSITIVES) -> tuple[float, str]:
    """The real test share of a patient split, and why.

    The smallest share whose expected positive patients (in-hospital deaths, the rarest gated
    outcome) reach `min_positives` plus two standard deviations (so the realized count reaches
    `min_positives` about 97 % of the time), never below `default_fraction`; capped at
    `max_fraction`. When even the cap cannot hold them, `default_fraction` (training data is not
    given up for a task that would not be gated anyway). The reasons name no count of the data.
    """
    if not 0 < default_fraction < 1 or not 0 < max_fraction < 1:
        raise ValueError(f"patient_split: test fractions must be in (0, 1); got default {default_fraction}, "
                         f"max {max_fraction}")
    target = min_positives + 2.0 * math.sqrt(min_positives)
    if n_positive_patients <= 0 or n_patients <= 0:
        return default_fraction, "no in-hospital deaths in the data: the default test share"
    needed = target / n_positive_patients
    if needed <= default_fraction:
        return default_fraction, f"the default share already expects >= {target:.0f} deaths in test"
    if needed <= max_fraction:
        return needed, (f"raised to expect {target:.0f} deaths in test ({min_positives} + 2 sd), so mortality is "
                        "gated")
    return default_fraction, (f"the data has too few deaths for {min_positives} in a test share <= {max_fraction:g}: "
                              "the default share, mortality not gated")
