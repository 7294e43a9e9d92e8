"""Evaluation of a synthetic cohort against real data: fidelity, utility and privacy.

Every function takes `StagedCohort` objects (marts-shaped frames, see docs/architecture.md):
the real training cohort, the real held-out test cohort and the synthetic cohort, or the same
cohorts parsed once with `prepare_cohort` (what `evaluate` does; treat the frames as read-only
afterwards). Formulas, directions and the reference flaws each metric fixes are in
docs/evaluation.md.

Modules (each imports only the ones above it):
* `common`: defaults, `MetricInputError`, `MetricError`/`MetricValue`, `resolve_variables` (the
  variables table comes from `core/variables.py`, shared with the tokenizer), checked columns.
* `features`: `prepare_cohort`/`PreparedCohort`, the labels (`mortality_labels`, `los_labels`,
  `phenotype_labels`), `FeatureSpace`, `visit_features`.
* `fidelity`: prevalence, mortality rates, marginal and structure distances, histogram tables.
* `utility`: TRTR/TSTR mortality classifiers (`mortality_utility`), the task panel with bootstrap
  intervals (`utility_panel`, `weighted_auroc`, `bootstrap_weights`), its gate rows
  (`utility_gate_rows`) and the test-share rule of the patient split (`choose_test_fraction`).
* `attacks`: privacy attacks that can fail: token copies and n-grams shared with train
  (`token_copies` over `TokenStreams`), membership inference with the real member prior
  (distance, code-set, DOMIAS density ratio), attribute inference from quasi-identifiers.
* `privacy`: nearest-neighbour distances (DCR, exact matches, NNAA), the attacks on visits
  (`privacy_attacks`), distance histograms.
* `report`: `EvaluationReport` and `evaluate`.
Import from the package (`from synehrgy_assets.core.metrics import evaluate`); every public name
is re-exported here.

Conventions:
* Features are fitted on REAL TRAIN only (`FeatureSpace.fit`): categories, top-K codes,
  imputation medians and standardization statistics. Real test and synthetic data are mapped
  through the same space, so a shift in location or scale stays visible.
* A metric that cannot be computed is an explicit `MetricError` value in the result dict (or a
  non-empty `error` cell in a table); a contract violation in the input raises
  `MetricInputError` naming the cohort, table and column. No metric returns a silent NaN.
* Every random choice takes `seed`. Tables in `EvaluationReport.tables` hold aggregates only,
  with small real cells (< `min_cell_count`) suppressed.
"""

from synehrgy_assets.core.metrics.common import (
    CODE_PREFIX,
    COVARIATE_COLUMNS,
    DEFAULT_MAX_RECORDS,
    DEFAULT_MAX_VALUES,
    DEFAULT_MIN_CELL_COUNT,
    DEFAULT_TOP_K_CODES,
    DEFAULT_WINDOW_HOURS,
    OTHER_CATEGORY,
    SUMMARY_STATS,
    MetricError,
    MetricInputError,
    MetricValue,
    resolve_variables,
)
from synehrgy_assets.core.metrics.features import (
    CohortLike,
    FeatureSpace,
    PreparedCohort,
    los_labels,
    mortality_labels,
    phenotype_labels,
    prepare_cohort,
    visit_features,
)
from synehrgy_assets.core.metrics import fidelity as _fidelity
from synehrgy_assets.core.metrics.fidelity import (
    HISTOGRAM_COLUMNS,
    MARGINAL_COLUMNS,
    STRUCTURE_COLUMNS,
    code_prevalence_correlation,
    code_prevalence_table,
    marginal_distances,
    marginal_histograms,
    mortality_rates,
    phenotype_prevalence,
    structure_stats,
    summarize_marginals,
    suppressed_prevalence_table,
)
from synehrgy_assets.core.metrics.attacks import (
    DEFAULT_NGRAM_LENGTH,
    QUASI_IDENTIFIERS,
    TokenStreams,
    attribute_inference,
    membership_attacks,
    token_copies,
)
from synehrgy_assets.core.metrics.privacy import distance_histograms, nearest_neighbour_privacy, privacy_attacks
from synehrgy_assets.core.metrics.report import EvaluationReport, evaluate
from synehrgy_assets.core.metrics.utility import (
    CLASSIFIERS,
    DEFAULT_BOOTSTRAP_RESAMPLES,
    DEFAULT_MAX_FIT_RECORDS,
    GATED_TASKS,
    MIN_GATE_POSITIVES,
    bootstrap_weights,
    choose_test_fraction,
    mortality_utility,
    utility_gate_rows,
    utility_panel,
    weighted_auroc,
)
from synehrgy_assets.core.variables import VARIABLE_COLUMNS, VARIABLES_CSV, load_variables

# Private, but imported from the package by tests/test_metrics.py; not part of `__all__`.
_ks_and_wasserstein = _fidelity._ks_and_wasserstein

__all__ = [
    # common
    "CODE_PREFIX", "COVARIATE_COLUMNS", "DEFAULT_MAX_RECORDS", "DEFAULT_MAX_VALUES", "DEFAULT_MIN_CELL_COUNT",
    "DEFAULT_TOP_K_CODES", "DEFAULT_WINDOW_HOURS", "OTHER_CATEGORY", "SUMMARY_STATS", "MetricError",
    "MetricInputError", "MetricValue", "resolve_variables",
    # the variables seed (core/variables.py)
    "VARIABLE_COLUMNS", "VARIABLES_CSV", "load_variables",
    # features
    "CohortLike", "FeatureSpace", "PreparedCohort", "los_labels", "mortality_labels", "phenotype_labels",
    "prepare_cohort", "visit_features",
    # fidelity
    "HISTOGRAM_COLUMNS", "MARGINAL_COLUMNS", "STRUCTURE_COLUMNS", "code_prevalence_correlation",
    "code_prevalence_table", "marginal_distances", "marginal_histograms", "mortality_rates",
    "phenotype_prevalence", "structure_stats", "summarize_marginals", "suppressed_prevalence_table",
    # utility
    "CLASSIFIERS", "DEFAULT_BOOTSTRAP_RESAMPLES", "DEFAULT_MAX_FIT_RECORDS", "GATED_TASKS", "MIN_GATE_POSITIVES",
    "bootstrap_weights", "choose_test_fraction", "mortality_utility", "utility_gate_rows", "utility_panel",
    "weighted_auroc",
    # privacy
    "DEFAULT_NGRAM_LENGTH", "QUASI_IDENTIFIERS", "TokenStreams", "attribute_inference", "distance_histograms",
    "membership_attacks", "nearest_neighbour_privacy", "privacy_attacks", "token_copies",
    # report
    "EvaluationReport", "evaluate",
]
