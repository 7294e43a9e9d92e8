"""Everything at once: `evaluate` runs fidelity (synthetic vs real train, and real test vs real train
as the baseline), utility and privacy on cohorts prepared once, and collects them in an
`EvaluationReport` (flat finite metrics for MLflow, aggregate tables, explicit errors). `_guarded`
turns a failing metric block into an error entry, or raises when `strict`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
from threadpoolctl import threadpool_limits

from synehrgy_assets.core.metrics.common import (
    DEFAULT_MAX_RECORDS,
    DEFAULT_MIN_CELL_COUNT,
    DEFAULT_TOP_K_CODES,
    DEFAULT_WINDOW_HOURS,
    MetricError,
    MetricValue,
    resolve_variables,
)
from synehrgy_assets.core.metrics.features import CohortLike, FeatureSpace, _prepare_three, mortality_labels
from synehrgy_assets.core.metrics.fidelity import (
    code_prevalence_correlation,
    code_prevalence_table,
    marginal_distances,
    marginal_histograms,
    structure_stats,
    summarize_marginals,
    suppressed_prevalence_table,
)
from synehrgy_assets.core.metrics.attacks import DEFAULT_NGRAM_LENGTH, TokenStreams, token_copies
from synehrgy_assets.core.metrics.privacy import (
    _code_set_matrices,
    _privacy_from_features,
    default_member_share,
    distance_histograms,
    privacy_attacks,
)
from synehrgy_assets.core.metrics.utility import (
    DEFAULT_BOOTSTRAP_RESAMPLES,
    DEFAULT_MAX_FIT_RECORDS,
    PANEL_PREFIX,
    utility_panel,
)


@dataclass
class EvaluationReport:
    """`metrics`: flat finite floats for MLflow; `tables`: aggregate frames; `errors`: name → reason."""

    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    params: dict[str, object] = field(default_factory=dict)

    def add(self, prefix: str, values: dict[str, MetricValue]) -> None:
        for key, value in values.items():
            name = f"{prefix}/{key}"
            if isinstance(value, MetricError):
                self.errors[name] = value.message
            elif value is None or not math.isfinite(float(value)):
                self.errors[name] = f"non-finite value {value!r}"
            else:
                self.metrics[name] = float(value)

    def add_table_errors(self, prefix: str, table: pd.DataFrame, key: str) -> None:
        for name, message in zip(table[key], table["error"]):
            if message:
                self.errors[f"{prefix}/{name}"] = message

    def plots(self) -> dict[str, bytes]:
        """PNG bytes of every plot the tables allow (see `plots.report_plots`)."""
        from synehrgy_assets.core.plots import report_plots  # plots imports this module

        return report_plots(self)


def _guarded(report: EvaluationReport, block: str, strict: bool, fn, *args, **kwargs):
    """Run one metric block; a failure becomes an explicit error entry (or raises when strict)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - recorded explicitly in report.errors, never silent
        if strict:
            raise
        report.errors[block] = f"{type(exc).__name__}: {exc}"
        return None


def evaluate(
    real_train: CohortLike,
    real_test: CohortLike,
    synthetic: CohortLike,
    variables: pd.DataFrame | Sequence[str] | None = None,
    seed: int = 0,
    max_records: int = DEFAULT_MAX_RECORDS,
    top_k_codes: int = DEFAULT_TOP_K_CODES,
    window_hours: float = DEFAULT_WINDOW_HOURS,
    classifier: str = "hist_gradient_boosting",
    max_fit_records: int = DEFAULT_MAX_FIT_RECORDS,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    n_threads: int | None = 1,
    strict: bool = False,
    tokens: TokenStreams | None = None,
    member_share: float | None = None,
    ngram_length: int = DEFAULT_NGRAM_LENGTH,
    n_resamples: int = DEFAULT_BOOTSTRAP_RESAMPLES,
) -> EvaluationReport:
    """Fidelity (synthetic vs real train, plus real test vs real train as the baseline), utility
    and privacy. Input contract violations raise `MetricInputError`; a metric block that fails
    otherwise is recorded in `report.errors` (or raises when `strict`).

    Privacy: `tokens` (the three cohorts' token sequences) enables the token-copy attack (without
    it its metrics are absent and the copy gates fail as not measured); `member_share` is the real
    sampling fraction, train patients / all real patients, that the membership attack sets
    reproduce (default: train / (train + test) patients of the cohorts given)."""
    preps = _prepare_three(real_train, real_test, synthetic)
    table = resolve_variables(variables)
    report = EvaluationReport(params={
        "seed": seed, "max_records": max_records, "top_k_codes": top_k_codes, "window_hours": window_hours,
        "classifier": classifier, "max_fit_records": max_fit_records, "min_cell_count": min_cell_count,
        "n_variables": len(table), **{f"n_visits_{n}": p.n_visits for n, p in preps.items()},
        "member_share": default_member_share(preps) if member_share is None else member_share,
        "ngram_length": ngram_length, "bootstrap_resamples": n_resamples,
    })
    train, test, syn = preps["real_train"], preps["real_test"], preps["synthetic"]

    for prefix, other in (("fidelity", syn), ("fidelity_baseline", test)):
        _fidelity(report, strict, prefix, train, other, table, seed, min_cell_count)
    _fidelity_tables(report, strict, train, syn, table, min_cell_count)

    space = _guarded(report, "features", strict, FeatureSpace.fit, train, table, top_k_codes, window_hours)
    if space is None:
        return report
    raw = {n: _guarded(report, f"features/{n}", strict, space.transform, p) for n, p in preps.items()}
    if any(v is None for v in raw.values()):
        return report
    x = {n: space.standardize(f).to_numpy() for n, f in raw.items()}
    report.params["n_features"] = len(space.columns)

    with threadpool_limits(limits=n_threads):
        _utility_and_privacy(report, strict, preps, space, x, raw, seed=seed, classifier=classifier,
                             max_fit_records=max_fit_records, n_resamples=n_resamples, min_cell_count=min_cell_count,
                             max_records=max_records)
    if tokens is not None:
        copies = _guarded(report, "privacy/tokens", strict, token_copies, tokens, ngram_length,
                          min_cell_count=min_cell_count)
        if copies is not None:
            report.add("privacy", copies)
    return report


def _fidelity(report: EvaluationReport, strict: bool, prefix: str, train, other, table: pd.DataFrame, seed: int,
              min_cell_count: int) -> None:
    """Code prevalence, marginals and structure of `other` against real train, under `prefix`."""
    values = _guarded(report, f"{prefix}/codes", strict, code_prevalence_correlation, train, other)
    if values is not None:
        report.add(prefix, values)
    marg = _guarded(report, f"{prefix}/marginals", strict, marginal_distances, train, other, table, seed=seed)
    if marg is not None:
        report.tables[f"{prefix}_marginals"] = marg
        report.add(prefix, summarize_marginals(marg))
        report.add_table_errors(f"{prefix}/marginal", marg, "variable")
    struct = _guarded(report, f"{prefix}/structure", strict, structure_stats, train, other, seed=seed,
                      min_cell_count=min_cell_count, other_is_real=prefix == "fidelity_baseline")
    if struct is not None:
        report.tables[f"{prefix}_structure"] = struct
        # A KS against a constant distribution (one visit per patient, a fixed stay length) is
        # well defined: it is kept even when the Wasserstein distance cannot be normalized.
        ok = struct[struct["ks_statistic"].notna()]
        report.add(f"{prefix}/structure", {f"{q}_ks": v for q, v in zip(ok["quantity"], ok["ks_statistic"])})
        report.add_table_errors(f"{prefix}/structure", struct, "quantity")


def _fidelity_tables(report: EvaluationReport, strict: bool, train, syn, table: pd.DataFrame,
                     min_cell_count: int) -> None:
    """The code prevalence and marginal histogram tables behind the plots (small cells suppressed)."""
    prevalence = _guarded(report, "tables/code_prevalence", strict, code_prevalence_table, train, syn)
    if prevalence is not None:
        report.tables["code_prevalence"] = suppressed_prevalence_table(prevalence, min_cell_count)
    hist = _guarded(report, "tables/marginal_histograms", strict, marginal_histograms, train, syn, table,
                    min_cell_count=min_cell_count)
    if hist is not None:
        report.tables["marginal_histograms"] = hist


def _utility_and_privacy(report: EvaluationReport, strict: bool, preps: dict, space, x: dict, raw: dict, *,
                         seed: int, classifier: str, max_fit_records: int, n_resamples: int, min_cell_count: int,
                         max_records: int) -> None:
    """The utility panel (with the `utility/...` mortality keys) and the feature-based privacy metrics."""
    labels = {n: _guarded(report, f"labels/{n}", strict, mortality_labels, p.cohort, n) for n, p in preps.items()}
    if all(v is not None for v in labels.values()):
        # One block: the mortality fit behind `utility/...` is the panel's mortality task, so the
        # utility gate never judges a panel without it (or the other way round).
        utility = _guarded(report, "utility", strict, utility_panel, preps, space, x, seed, classifier,
                           max_fit_records, n_resamples=n_resamples, min_cell_count=min_cell_count)
        if utility is not None:
            mortality, panel, panel_table = utility
            report.add("utility", mortality)
            report.add(PANEL_PREFIX, panel)
            report.tables["utility_panel"] = panel_table

    codes = _guarded(report, "privacy/code_sets", strict, _code_set_matrices, preps)
    if codes is not None:
        privacy = _guarded(report, "privacy", strict, _privacy_from_features, x, raw, codes, seed, max_records,
                           min_cell_count=min_cell_count)
        if privacy is not None:
            values, distances = privacy
            report.add("privacy", values)
            report.tables["privacy_distance_histograms"] = distance_histograms(
                distances, min_cell_count=min_cell_count)
    attacks = _guarded(report, "privacy/attacks", strict, privacy_attacks, preps, x, codes, seed, max_records,
                       report.params["member_share"])
    if attacks is not None:
        report.add("privacy", attacks)
