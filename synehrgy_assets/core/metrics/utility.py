"""Utility: in-hospital mortality prediction trained on real train (TRTR) or on synthetic data (TSTR)
and scored on real test, with equal training-set sizes, as AUROC/AUPRC and TSTR/TRTR ratios
(`mortality_utility`); the classifiers are fixed and seeded (`CLASSIFIERS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from threadpoolctl import threadpool_limits

from synehrgy_assets.core.metrics.common import MetricError, MetricInputError, MetricValue
from synehrgy_assets.core.metrics.features import CohortLike, FeatureSpace, _prepare_three, mortality_labels


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


def _train_and_score(
    x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    classifier: str, seed: int, prefix: str, source: str,
) -> dict[str, MetricValue]:
    keys = (f"{prefix}_auroc", f"{prefix}_auprc")
    classes = np.unique(y_fit)
    if len(classes) < 2:
        only = int(classes[0]) if len(classes) else "none"
        msg = f"the {source} cohort has a single mortality class ({only}, n={len(y_fit)}); cannot train a classifier"
        return {k: MetricError(k, msg) for k in keys}
    model = _make_classifier(classifier, seed).fit(x_fit, y_fit)
    p = model.predict_proba(x_test)[:, 1]
    return {keys[0]: float(roc_auc_score(y_test, p)), keys[1]: float(average_precision_score(y_test, p))}


def _utility_from_features(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    x_syn: np.ndarray, y_syn: np.ndarray, seed: int, classifier: str, max_fit_records: int,
) -> dict[str, MetricValue]:
    if len(y_test) == 0 or len(np.unique(y_test)) < 2:
        raise MetricInputError("real_test: 'mortality_inhospital' needs both classes; AUROC/AUPRC are undefined")
    if len(y_train) == 0 or len(y_syn) == 0:
        raise MetricInputError("utility needs visits in real_train and synthetic")
    # Equal training-set sizes so TSTR vs TRTR compares data quality, not data quantity.
    rng = np.random.default_rng(seed)
    n_fit = min(len(y_train), len(y_syn), max_fit_records)
    fit_train = np.sort(rng.choice(len(y_train), n_fit, replace=False))
    fit_syn = np.sort(rng.choice(len(y_syn), n_fit, replace=False))
    out: dict[str, MetricValue] = {
        "n_fit": float(n_fit), "n_test": float(len(y_test)),
        "train_positive_rate": float(y_train.mean()), "test_positive_rate": float(y_test.mean()),
        "synthetic_positive_rate": float(y_syn.mean()),
    }
    out.update(_train_and_score(x_train[fit_train], y_train[fit_train], x_test, y_test, classifier, seed,
                                "trtr", "real_train"))
    out.update(_train_and_score(x_syn[fit_syn], y_syn[fit_syn], x_test, y_test, classifier, seed,
                                "tstr", "synthetic"))
    for m in ("auroc", "auprc"):
        key, tstr, trtr = f"{m}_ratio", out[f"tstr_{m}"], out[f"trtr_{m}"]
        if isinstance(tstr, MetricError) or isinstance(trtr, MetricError):
            out[key] = MetricError(key, f"needs both TSTR and TRTR {m.upper()}")
        else:
            out[key] = tstr / trtr  # AUROC/AUPRC of a fitted model on two classes is > 0
    return out


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
