"""What of an evaluation may leave the workspace: the metrics minus the small cells.

The gates judge the full metrics (kept in the workspace's private folder); MLflow, the Dagster
metadata and the evaluation tables get `publishable(...)`. A metric is held back when it rests on
a real cell smaller than `min_cell_count`:
- a mortality rate (and the differences built on it) of a real sample with fewer than
  `min_cell_count` deaths or survivors: with 3 deaths among 10 test patients the rate is a count;
  likewise the mortality AUROC/AUPRC over such a real test sample;
- a median of real held-out distances over fewer than 2 x `min_cell_count` visits: it is one
  real record's distance to another.
"""

from __future__ import annotations

import numpy as np

from synehrgy_assets.core.metrics.common import DEFAULT_MIN_CELL_COUNT
from synehrgy_assets.core.metrics.features import mortality_labels

# Which metrics rest on which real sample (the synthetic side is never a small cell).
_MORTALITY_ON = {
    "train": ("fidelity/mortality_rate_real", "fidelity/mortality_rate_abs_diff",
              "fidelity_baseline/mortality_rate_real", "fidelity_baseline/mortality_rate_abs_diff",
              "utility/train_positive_rate"),
    # The baseline compares real test (its "synthetic" side) with real train; the mortality AUROCs
    # rank the few real test deaths (the utility panel holds such tasks back itself).
    "test": ("fidelity_baseline/mortality_rate_synthetic", "fidelity_baseline/mortality_rate_abs_diff",
             "utility/test_positive_rate", "utility/trtr_auroc", "utility/trtr_auprc", "utility/tstr_auroc",
             "utility/tstr_auprc", "utility/auroc_ratio", "utility/auprc_ratio"),
}
_TEST_MEDIANS = ("privacy/dcr_median_test_to_train", "privacy/dcr_median_ratio",
                 "privacy/codes_hamming_median_test_to_train", "privacy/codes_jaccard_median_test_to_train",
                 "privacy/codes_jaccard_median_ratio")


def small_cell_metrics(real_train, real_test, min_cell_count: int = DEFAULT_MIN_CELL_COUNT) -> dict[str, str]:
    """{metric: why it is held back} for these real cohorts."""
    held = {}
    for split, cohort in (("train", real_train), ("test", real_test)):
        labels = np.asarray(mortality_labels(cohort, f"real {split}"), dtype=bool)
        deaths, survivors = int(labels.sum()), int((~labels).sum())
        if min(deaths, survivors) < min_cell_count:
            for key in _MORTALITY_ON[split]:
                held[key] = (f"real {split} has fewer than {min_cell_count} in-hospital deaths or survivors "
                             "(a small cell)")
    if len(real_test.visits) < 2 * min_cell_count:
        for key in _TEST_MEDIANS:
            held[key] = f"a median over fewer than {2 * min_cell_count} real test visits is one record's value"
    return held


def publishable(metrics: dict, held: dict[str, str]) -> dict:
    """The metrics without the held-back ones."""
    return {k: v for k, v in metrics.items() if k not in held}
