"""The staged cohort: the four dbt marts as pandas frames (see docs/architecture.md).

Real and synthetic cohorts share this shape, so the tokenizer, decoder and metrics all take and
return a `StagedCohort`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[2]
SEEDS_DIR = REPO_ROOT / "dbt_mimic" / "seeds"

VISIT_COLUMNS = [
    "subject_id", "hadm_id", "icustay_id", "visit_index", "intime", "outtime", "los_hours",
    "hours_since_previous_visit", "age_years", "age_is_capped", "gender", "ethnicity_group",
    "insurance", "admission_type", "first_careunit", "mortality_inhospital",
]
CODE_COLUMNS = ["subject_id", "icustay_id", "code_type", "icd9_code", "seq_num"]
PHENOTYPE_COLUMNS = ["subject_id", "icustay_id", "phenotype"]
MEASUREMENT_COLUMNS = ["subject_id", "icustay_id", "hours", "variable", "value", "value_text"]

MART_COLUMNS = {
    "visits": VISIT_COLUMNS,
    "visit_codes": CODE_COLUMNS,
    "visit_phenotypes": PHENOTYPE_COLUMNS,
    "measurements": MEASUREMENT_COLUMNS,
}


@dataclass
class StagedCohort:
    """Marts-shaped frames for one set of patients (real or synthetic)."""

    visits: pd.DataFrame
    visit_codes: pd.DataFrame
    visit_phenotypes: pd.DataFrame
    measurements: pd.DataFrame

    @property
    def n_patients(self) -> int:
        return int(self.visits["subject_id"].nunique())

    def subset(self, subject_ids) -> "StagedCohort":
        """The same cohort restricted to `subject_ids`."""
        keep = pd.Index(subject_ids)
        return StagedCohort(
            *(frame[frame["subject_id"].isin(keep)].reset_index(drop=True) for frame in self.frames())
        )

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        return self.visits, self.visit_codes, self.visit_phenotypes, self.measurements

    def validate_columns(self, origin: str = "cohort") -> None:
        """Raise a ValueError naming the frame and the missing columns, if any."""
        for (name, expected), frame in zip(MART_COLUMNS.items(), self.frames()):
            missing = [c for c in expected if c not in frame.columns]
            if missing:
                raise ValueError(
                    f"{origin}: table '{name}' lacks column(s) {missing}; expected {expected}"
                )


def load_staged_cohort(con, subject_ids=None, schema: str = "main") -> StagedCohort:
    """Read the four marts from an open DuckDB connection, optionally for some patients only.

    The marts are ordered deterministically (patient, visit, time) so encoding is reproducible.
    """
    order = {
        "visits": "subject_id, visit_index",
        "visit_codes": "subject_id, icustay_id, code_type, seq_num",
        "visit_phenotypes": "subject_id, icustay_id, phenotype",
        "measurements": "subject_id, icustay_id, hours, variable",
    }
    frames = []
    for name, columns in MART_COLUMNS.items():
        cols = ", ".join(columns)
        if subject_ids is None:
            frames.append(con.sql(f"select {cols} from {schema}.{name} order by {order[name]}").df())
        else:
            ids = pd.DataFrame({"subject_id": pd.Series(list(subject_ids), dtype="int64")})
            con.register("_wanted_subjects", ids)
            try:
                frames.append(
                    con.sql(
                        f"select {cols} from {schema}.{name} "
                        f"where subject_id in (select subject_id from _wanted_subjects) "
                        f"order by {order[name]}"
                    ).df()
                )
            finally:
                con.unregister("_wanted_subjects")
    return StagedCohort(*frames)
