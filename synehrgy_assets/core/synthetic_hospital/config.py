"""The settings of one synthetic hospital draw and the summary of what it wrote."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CHART_DENSITY = 7.0  # expected CHARTEVENTS rows per ICU-stay hour at the default settings
_ROWS_PER_TICK = 7.45  # rows one charting round writes on average (measured; see _chart_events)


@dataclass
class HospitalConfig:
    """Settings of one synthetic hospital draw."""

    n_patients: int = 1000
    seed: int = 0
    header_case: str = "lower"  # 'lower' = open demo layout, 'upper' = full release
    compress: bool = True  # TABLE.csv.gz vs TABLE.csv
    chart_rows_per_stay_hour: float = DEFAULT_CHART_DENSITY  # density knob for scale runs
    chartevents_rows_target: int | None = None  # if set, overrides the density
    chunk_patients: int = 5000
    max_rows_per_chunk: int = 1_000_000
    code_dictionary_dir: str | Path | None = None  # a MIMIC dir whose D_ICD_* widen the code tail
    gzip_level: int = 1

    def validate(self) -> None:
        if self.n_patients < 1:
            raise ValueError(f"HospitalConfig.n_patients must be >= 1, got {self.n_patients}")
        if self.header_case not in ("lower", "upper"):
            raise ValueError(f"HospitalConfig.header_case must be 'lower' or 'upper', got {self.header_case!r}")
        if not self.chart_rows_per_stay_hour > 0:
            raise ValueError("HospitalConfig.chart_rows_per_stay_hour must be > 0")
        if self.chunk_patients < 1:
            raise ValueError("HospitalConfig.chunk_patients must be >= 1")


@dataclass
class HospitalSummary:
    """What one `generate_hospital` call wrote."""

    out_dir: Path
    rows: dict[str, int]
    n_patients: int
    n_admissions: int
    n_icustays: int
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    chart_rows_per_stay_hour: float = DEFAULT_CHART_DENSITY
    chartevents_rows_per_second: float = 0.0

    def describe(self) -> str:
        lines = [f"synthetic hospital -> {self.out_dir}",
                 f"  patients {self.n_patients:,}  admissions {self.n_admissions:,}  "
                 f"icu stays {self.n_icustays:,}  in {self.seconds:.1f} s"]
        for table, n in self.rows.items():
            lines.append(f"  {table:<17} {n:>13,} rows")
        lines.append(f"  CHARTEVENTS rate {self.chartevents_rows_per_second:,.0f} rows/s overall "
                     f"(density {self.chart_rows_per_stay_hour:.2f} rows per stay-hour)")
        return "\n".join(lines)

