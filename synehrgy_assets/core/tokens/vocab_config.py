"""The vocabulary's fixed parts: token format, fixed scales, covariates, and how it is fitted.

`VocabularyConfig` holds the fit's settings; `load_variables` the measurement variables. The
fitted parts are in `bins.py` (numeric bins) and `vocab_fit.py`; the id space in `vocabulary.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from synehrgy_assets.core import variables as _variables
from synehrgy_assets.core.tokens.grammar import TokenType
from synehrgy_assets.core.tokens.stay_end import STAY_END

T = TokenType
FORMAT = "synehrgy-token-vocabulary/2"
# Format 1 stored quantiles that could be means of one patient's values, and had no ICU_DATABASE
# covariate: it is refused, not read.
_FORMAT_BEFORE_MIN_PATIENTS = "synehrgy-token-vocabulary/1"
UNK = "UNK"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "</covar>", "</label>", "</code>", "</ts>", "</adm>")
# The context markers of the long-patient format (docs/tokens.md section 6) close the id space.
CONTEXT_MARKERS = ("<skip-visits>", "<skip-rows>")
# Outcome conditioning (GPTConfig.condition_table): 0 = no outcome yet in this visit, then one value
# per MORTALITY token. A visit start (<s>, GAP_VISIT, AGE) resets it.
CONDITION_NONE = 0
COVARIATES = (
    ("gender", T.GENDER),
    ("ethnicity_group", T.ETHNICITY_GROUP),
    ("insurance", T.INSURANCE),
    ("admission_type", T.ADMISSION_TYPE),
    ("first_careunit", T.FIRST_CAREUNIT),
    ("icu_database", T.ICU_DATABASE),
)
# Learned hospital-stay offsets around the ICU stay (hours; docs/tokens.md section 4): the decoder
# samples them instead of inventing the admission and discharge times.
STAY_OFFSETS = ("admit_to_icu_hours", "icu_to_discharge_hours_survived", "icu_to_discharge_hours_died", *STAY_END)
CODE_TYPES = (("diagnosis", "DX", T.DX), ("procedure", "PX", T.PX))

# Age in years: [18,20), [20,25), ..., [85,90), then one bucket for MIMIC's capped >89 ages.
AGE_EDGES = (18.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 65.0, 70.0, 75.0, 80.0,
             85.0, 90.0)
AGE_CAP = 90.0
# Hours between measurement rows (first row: since ICU admission). Finer than the reference's
# 15 bins; the narrow bins around 0.25/0.5/1 h catch the common charting intervals exactly.
# The last edge is a cap: larger gaps are clipped to it (and counted).
DT_EDGES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.05, 1.5, 2.0, 2.5, 3.0, 3.5, 4.5, 6.0, 8.0, 10.0,
            12.0, 16.0, 20.0, 24.0, 36.0, 48.0, 72.0, 120.0, 240.0, 2400.0)
# Hours from the previous visit's outtime to this visit's intime; the last edge (20 y) is a cap.
GAP_VISIT_EDGES = (0.0, 6.0, 12.0, 24.0, 48.0, 72.0, 120.0, 168.0, 336.0, 720.0, 1440.0, 2160.0,
                   4320.0, 8760.0, 17520.0, 43800.0, 175200.0)
# Hours of a visit's rows left out of a window (context token ELAPSED//i after <skip-rows>): the
# model then knows how far into the stay a window starts. The last edge is a cap.
# 2-hour bins over the first three days (where most stays end), coarser after that: the stay-hours
# clock (GPTConfig.clocks) restarts from the bin's midpoint in a window that skips rows.
ELAPSED_EDGES = (tuple(float(h) for h in range(0, 72, 2)) + tuple(float(h) for h in range(72, 120, 4))
                 + tuple(float(h) for h in range(120, 168, 8))
                 + (168.0, 192.0, 240.0, 288.0, 336.0, 420.0, 504.0, 612.0, 720.0, 1080.0, 1440.0, 2400.0))
# The code clocks count a visit's diagnoses / procedures so far: one bucket per count up to 40.
CODE_CLOCK_EDGES = tuple(float(n) for n in range(1, 41))
MIN_ROW_GAP_HOURS = 1.0 / 3600.0


# ----------------------------------------------------------------------------------------------
# Configuration and variables


@dataclass(frozen=True)
class VocabularyConfig:
    """How the vocabulary is fitted (see docs/tokens.md)."""

    binning: str = "quantile"  # "quantile" | "uniform" | "clinical"
    n_bins: int = 10
    min_code_count: int = 5
    within_bin_quantiles: int = 11
    min_bin_count: int = 5
    # Privacy (core/privacy_aggregates.py): every stored number depends on >= `min_patients`
    # distinct train patients. A quantile (bin edge, within-bin, LOS) is the patient-weighted mean
    # of the `tail_count` order statistics around its rank, the window widened until it holds
    # values of `min_patients` patients, and lies inside the variable's k-anonymous range (>=
    # `min_patients` patients on each side). Quantile bins are merged until each holds values of
    # `min_patients` patients; a bin of fewer patients (or fewer than 2 x tail_count + 1 values)
    # stores no quantiles (decoding samples it uniformly). A code, phenotype, covariate or
    # measurement category needs `min_code_count` rows and `min_patients` patients for a token.
    tail_count: int = 10
    min_patients: int = 10
    # Quantile binning also cuts at these levels: the extreme 1 % of a variable's values get bins
    # of their own, so an extreme value is a token the model places (patient by patient, as real
    # extremes cluster in few patients) rather than the far end of an ordinary bin's within-bin
    # draw, which lands on random patients. Merged away like any bin of too few patients.
    tail_levels: tuple = (0.01, 0.99)

    def __post_init__(self):
        if self.binning not in ("quantile", "uniform", "clinical"):
            raise ValueError(
                f"VocabularyConfig.binning must be 'quantile', 'uniform' or 'clinical', "
                f"got {self.binning!r}"
            )
        if self.n_bins < 1:
            raise ValueError(f"VocabularyConfig.n_bins must be >= 1, got {self.n_bins}")
        if self.min_code_count < 1:
            raise ValueError(f"VocabularyConfig.min_code_count must be >= 1, got {self.min_code_count}")
        if self.within_bin_quantiles < 2:
            raise ValueError("VocabularyConfig.within_bin_quantiles must be >= 2, "
                             f"got {self.within_bin_quantiles}")
        if self.min_bin_count < 1:
            raise ValueError(f"VocabularyConfig.min_bin_count must be >= 1, got {self.min_bin_count}")
        if self.tail_count < 0:
            raise ValueError(f"VocabularyConfig.tail_count must be >= 0, got {self.tail_count}")
        object.__setattr__(self, "tail_levels", tuple(float(q) for q in self.tail_levels))
        if any(not 0 < q < 1 for q in self.tail_levels):
            raise ValueError(f"VocabularyConfig.tail_levels must lie in (0, 1), got {self.tail_levels}")
        if self.min_patients < 1:
            raise ValueError(f"VocabularyConfig.min_patients must be >= 1, got {self.min_patients}")


# The variables seed has one loader, shared with the metrics: core/variables.py (column contract,
# checks with errors naming the file and column, `clinical_edges` parsed to sorted floats). The
# tokenizer takes the variables in name order: their token ids follow it.
_parse_edges = _variables.parse_edges


def load_variables(path: str | Path | None = None) -> pd.DataFrame:
    """The variables seed table (`dbt_mimic/seeds/variables.csv`), checked, sorted by name."""
    return _variables.load_variables(path, sort_by_name=True)


def _check_variables_table(table: pd.DataFrame, origin: str = "variables table") -> pd.DataFrame:
    return _variables.check_variables(table, origin, sort_by_name=True)

