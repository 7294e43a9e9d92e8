"""Loud staging: structural defects found before dbt runs, every drop counted and judged after.

* `check_structure(files)`: one DuckDB scan of each small table (PATIENTS, ADMISSIONS, ICUSTAYS,
  the code and dictionary tables; never CHARTEVENTS or LABEVENTS, whose repeated header rows the
  ITEMID filter discards anyway) for a header line repeated inside the file, duplicate keys
  (SUBJECT_ID, HADM_ID, ICUSTAY_ID) and bytes that are not UTF-8 in any column. It raises
  `MimicStructureError` naming the file, the line and what was expected, with the first few ids.
  No row content is quoted.
* `evaluate_losses(audit, thresholds)`: the loss checks, from `staging_audit` (aggregates only).
  Each has a WARN and an ERROR threshold as shares of rows and of patients.
* `dbt_failure_message(run_results)`: dbt's failing nodes as one clear message.
* `staging_loss_summary(home)`: the short lines the CLI prints at the end of a run.

Plain Python and DuckDB, no Dagster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

# table -> key columns that must be unique (None: only the repeated-header scan)
STRUCTURE_TABLES: dict[str, tuple[str, bool]] = {
    "patients": ("subject_id", True),
    "admissions": ("hadm_id", True),
    "icustays": ("icustay_id", True),
    "diagnoses_icd": ("hadm_id", False),
    "procedures_icd": ("hadm_id", False),
    "d_items": ("itemid", True),
    "d_labitems": ("itemid", True),
}
FIRST_IDS = 5
CSV_OPTIONS = "header = true, all_varchar = true, delim = ',', quote = '\"', escape = '\"'"


class MimicStructureError(ValueError):
    """A raw file is structurally broken; the message names the file, the line and what was expected."""


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _scrub(message: str) -> str:
    """DuckDB's CSV errors quote the offending row ('Original Line: ...'): real data, never shown."""
    lines = [ln for ln in message.splitlines() if not ln.strip().startswith("Original Line")]
    return "\n".join(lines)


def csv_error_summary(message: str, with_file: bool = True) -> str:
    """The parts of a DuckDB read error a user needs: the line, the reason, the file. No row content."""
    message = _scrub(message)
    line = re.search(r"CSV Error on Line: (\d+)", message)
    file = re.search(r"^\s*file = (.+)$", message, re.M)
    reason = next(
        (ln.strip() for ln in message.splitlines()[1:] if ln.strip() and not ln.strip().startswith("Possible")),
        message.splitlines()[0] if message else "",
    )
    parts = []
    if file and with_file:
        parts.append(file.group(1).strip())
    if line:
        parts.append(f"line {line.group(1)}")
    head = ", ".join(parts)
    return f"{head}: {reason}" if head else reason


def check_structure(files: dict[str, Path], tables: dict[str, tuple[str, bool]] | None = None) -> None:
    """Raise MimicStructureError listing every structural defect of the small tables."""
    import duckdb

    problems: list[str] = []
    con = duckdb.connect()
    try:
        con.execute("set enable_progress_bar = false")
        con.execute("set preserve_insertion_order = true")
        for table, (key, unique) in (tables or STRUCTURE_TABLES).items():
            if table not in files:
                continue
            path = Path(files[table])
            rel = f"read_csv('{_sql_path(path)}', {CSV_OPTIONS})"
            try:
                # Every column is read (not only the key): DuckDB checks UTF-8 only in the columns
                # a query reads, and a bad byte in D_ITEMS.LABEL would otherwise pass unseen.
                con.execute(
                    f"create or replace temp table t as select row_number() over () + 1 as line, "
                    f'"{key}" as k, * from {rel}'
                )
            except duckdb.Error as exc:
                problems.append(f"{path}: cannot be read as UTF-8 CSV: {csv_error_summary(str(exc), with_file=False)}")
                continue
            headers = con.execute(
                f"select line from t where lower(trim(k)) = '{key}' order by line limit {FIRST_IDS}"
            ).fetchall()
            if headers:
                lines = ", ".join(str(r[0]) for r in headers)
                problems.append(
                    f"{path}: the header line is repeated inside the file at line(s) {lines} "
                    f"(column {key.upper()} holds {key.upper()!r}); expected one header line, then data rows"
                )
            if unique:
                dups = con.execute(
                    f"""select k, count(*) as n, list(line order by line)[1:3] as lines from t
                        where k is not null and lower(trim(k)) <> '{key}'
                        group by k having count(*) > 1 order by min(line)"""
                ).fetchall()
                if dups:
                    shown = "; ".join(
                        f"{k} ({n} rows, lines {', '.join(map(str, lines))})" for k, n, lines in dups[:FIRST_IDS]
                    )
                    more = f" and {len(dups) - FIRST_IDS} more" if len(dups) > FIRST_IDS else ""
                    problems.append(
                        f"{path}: {len(dups)} duplicated {key.upper()} value(s), expected each once: {shown}{more}"
                    )
    finally:
        con.close()
    if problems:
        raise MimicStructureError("MIMIC-III files are structurally broken:\n  - " + "\n  - ".join(problems))


# ---------------------------------------------------------------------------------------------
# Loss checks
# ---------------------------------------------------------------------------------------------

# Stay drop reasons that are data defects (age_under_18 is the cohort rule, not a loss).
DEFECT_REASONS = (
    "missing_ids", "missing_intime_or_outtime", "outtime_before_intime", "missing_admission",
    "dob_unparseable", "missing_patient_or_dob", "dob_after_admission", "dob_implausible",
    "gender_not_m_or_f",
)  # fmt: skip


@dataclass(frozen=True)
class Thresholds:
    """A share strictly above `warn_*` warns, at or above `error_*` is an error."""

    warn_row_share: float = 0.0
    error_row_share: float = 0.10
    warn_patient_share: float = 0.0
    error_patient_share: float = 0.10


@dataclass
class LossResult:
    check: str
    mart: str
    what: str
    rows_lost: int
    rows_total: int
    patients_lost: int
    patients_total: int
    severity: str  # 'PASS' | 'WARN' | 'ERROR'
    details: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def row_share(self) -> float:
        return self.rows_lost / self.rows_total if self.rows_total else 0.0

    @property
    def patient_share(self) -> float:
        return self.patients_lost / self.patients_total if self.patients_total else 0.0

    @property
    def passed(self) -> bool:
        return self.severity == "PASS"

    def message(self) -> str:
        if self.note:
            return self.note
        return (
            f"{self.what}: {self.rows_lost:,} of {self.rows_total:,} rows ({self.row_share:.2%}), "
            f"{self.patients_lost:,} of {self.patients_total:,} patients ({self.patient_share:.2%})"
            + (f" [{', '.join(f'{k} {v:,}' for k, v in self.details.items() if v)}]" if self.rows_lost else "")
        )


def _judge(rows_share: float, patient_share: float, t: Thresholds) -> str:
    if rows_share >= t.error_row_share or patient_share >= t.error_patient_share:
        return "ERROR"
    if rows_share > t.warn_row_share or patient_share > t.warn_patient_share:
        return "WARN"
    return "PASS"


def read_audit(con, missing_ok: bool = False) -> dict[tuple[str, str, str], int]:
    """staging_audit as {(section, item, metric): n}; {} when absent and `missing_ok`."""
    if missing_ok and not con.execute(
        "select count(*) from duckdb_tables() where schema_name = 'main' and table_name = 'staging_audit'"
    ).fetchall()[0][0]:
        return {}
    return {(s, i, m): int(n) for s, i, m, n in con.execute("select section, item, metric, n from main.staging_audit").fetchall()}


def _sum(audit: dict, section: str, metric: str) -> int:
    return sum(n for (s, i, m), n in audit.items() if s == section and m == metric and i != "")


def variable_coverage(audit: dict) -> dict:
    """How much of the variable set the staged data fills: candidate rows of the seed's ITEMIDs
    attached to ICU stays, the share of them kept, and the variables with no kept row at all.
    Totals over every variable only (a per-variable count could come from a handful of patients)."""
    candidate, kept = _sum(audit, "measurements", "candidate"), _sum(audit, "measurements", "kept")
    variables = sorted({i for (s, i, m) in audit if s == "measurements" and m == "candidate" and i})
    empty = [v for v in variables if audit.get(("measurements", v, "kept"), 0) == 0]
    return {
        "variables": len(variables),
        "variables_with_rows": len(variables) - len(empty),
        "variables_without_rows": empty,
        "candidate_rows": candidate,
        "kept_rows": kept,
        "kept_share": round(kept / candidate, 4) if candidate else None,
    }


LOSS_CHECKS = {
    "stays_dropped_for_bad_data": "visits",
    "measurement_values_dropped": "measurements",
    "valuenum_not_numeric": "measurements",
    "measurement_rows_of_unknown_stays": "measurements",
    "code_rows_dropped": "visit_codes",
    "code_tables_not_empty": "visit_codes",
}

# Checks that block publication and the tokens (code_tables_not_empty only ever warns).
BLOCKING_LOSS_CHECKS = tuple(name for name in LOSS_CHECKS if name != "code_tables_not_empty")


# check -> (staging_audit metric of rows, of patients, what the check counts), out of the candidate rows
MEASUREMENT_ROW_COUNTERS = {
    "valuenum_not_numeric": ("valuenum_not_numeric", "patients_valuenum_not_numeric",
                             "measurement rows with a non-numeric VALUENUM (VALUE parsed instead, else dropped)"),
    "measurement_rows_of_unknown_stays": ("rows_of_unknown_stay", "patients_with_rows_of_unknown_stay",
                                          "CHARTEVENTS rows dropped because their ICUSTAY_ID is in no row of ICUSTAYS (orphans)"),
}


MEASUREMENT_DROP_REASONS = ("dropped_unparseable", "dropped_not_finite", "dropped_out_of_range")


def evaluate_loss(name: str, audit: dict, t: Thresholds) -> LossResult:
    """One loss check from the staging_audit counts."""
    a = lambda section, item, metric: audit.get((section, item, metric), 0)  # noqa: E731
    if name == "stays_dropped_for_bad_data":
        details = {r: a("icustays", "", f"dropped_{r}") for r in DEFECT_REASONS}
        lost, total = sum(details.values()), a("icustays", "", "raw")
        p_lost, p_total = a("icustays", "", "patients_dropped_bad_data"), a("icustays", "", "patients_raw")
        what = "ICU stays dropped for bad data (not counting the age_under_18 rule)"
    elif name == "measurement_values_dropped":
        details = {s: _sum(audit, "measurements", s) for s in MEASUREMENT_DROP_REASONS}
        lost, total = sum(details.values()), _sum(audit, "measurements", "candidate")
        p_lost = a("measurements", "", "patients_dropped_unparseable_or_out_of_range")
        p_total = a("measurements", "", "patients_with_candidates")
        what = "measurement values dropped as unparseable, not finite (±inf, NaN, overflow) or out of range"
    elif name in MEASUREMENT_ROW_COUNTERS:  # one audit counter of rows and one of patients
        metric, patients, what = MEASUREMENT_ROW_COUNTERS[name]
        details = {metric: a("measurements", "", metric)}
        lost, total = details[metric], _sum(audit, "measurements", "candidate")
        p_lost, p_total = a("measurements", "", patients), a("measurements", "", "patients_with_candidates")
    elif name == "code_rows_dropped":
        details = {
            f"{ct}_{m}": a("codes", ct, m) for ct in ("diagnosis", "procedure") for m in ("dropped_null_code", "orphan_admission")
        }
        lost, total = sum(details.values()), a("codes", "diagnosis", "raw") + a("codes", "procedure", "raw")
        p_lost, p_total = a("codes", "", "patients_dropped"), a("codes", "", "patients_raw")
        what = "ICD code rows dropped (empty code, or HADM_ID not in ADMISSIONS)"
    elif name == "code_tables_not_empty":
        dx, px = a("codes", "diagnosis", "raw"), a("codes", "procedure", "raw")
        empty = [tbl for tbl, n in (("DIAGNOSES_ICD", dx), ("PROCEDURES_ICD", px)) if n == 0]
        note = ""
        if empty:
            note = (
                f"code tables are empty: {' and '.join(empty)} {'has' if len(empty) == 1 else 'have'} no rows. "
                "Visits are staged without those codes; the code-based metrics and release gates report "
                "'not applicable'."
            )
        return LossResult(name, "visit_codes", "ICD code tables", len(empty), 2, 0, 0,
                          "WARN" if empty else "PASS", {"diagnosis_rows": dx, "procedure_rows": px}, note)  # fmt: skip
    else:
        raise KeyError(f"unknown loss check {name!r}; known: {sorted(LOSS_CHECKS)}")
    r = LossResult(name, LOSS_CHECKS[name], what, lost, total, p_lost, p_total, "PASS", details)
    r.severity = _judge(r.row_share, r.patient_share, t)
    if r.severity == "PASS" and details.get("dropped_not_finite"):
        # An infinite or overflowing value is a broken extract, not noise: it always shows.
        r.severity = "WARN"
    return r


def code_tables_empty(audit: dict) -> list[str]:
    """The ICD tables with no rows (empty list when both have codes)."""
    return [
        tbl for tbl, ct in (("DIAGNOSES_ICD", "diagnosis"), ("PROCEDURES_ICD", "procedure"))
        if audit.get(("codes", ct, "raw"), 0) == 0
    ]  # fmt: skip


def staging_loss_summary(
    home: str | Path, thresholds: dict[str, Thresholds] | None = None, run_failed: bool = False
) -> list[str]:
    """Short lines on what the published staging build lost (for the CLI's end-of-run summary).

    Reads `<home>/warehouse.duckdb` read-only; returns [] when there is no published build. When the
    newest staging build failed or waits for its checks, the first line says so, naming it. A
    failed run never gets a line saying the staging is clean (the run did not get that far, or the
    published build is an older one); a clean one says "no data lost" only when no row was lost."""
    import duckdb

    from synehrgy_assets.core.staging_build import StagingBuildError, read_marker, read_state, refusal

    from synehrgy_assets.core.workspace_layout import WorkspaceLayout

    db = WorkspaceLayout(home).duckdb
    state = read_state(Path(home))
    if run_failed and state and state.get("status") == "failed" and state.get("build_id") is None:
        return []  # the raw files were refused in this run: its own error names them
    if not db.exists():
        why = refusal(state, None)
        return [f"staging: {why}"] if why else []
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            try:
                build = read_marker(con).build_id
            except StagingBuildError as exc:
                return [f"staging: {exc}"]
            audit = read_audit(con)
    except duckdb.Error as exc:
        return [f"staging: could not read {db} ({exc})"]
    why = refusal(state, build)
    if why:
        return [f"staging: {why}"]
    lines, lost = [], 0
    for name in LOSS_CHECKS:
        t = (thresholds or {}).get(name, LOSS_DEFAULTS[name])
        r = evaluate_loss(name, audit, t)
        lost += r.rows_lost if name != "code_tables_not_empty" else 0
        if r.severity != "PASS":
            lines.append(f"{r.severity:<5} {name} on {r.mart}: {r.message()}")
    if lines:
        return [f"staging build {build}: {len(lines)} loss check(s) not clean", *lines]
    if run_failed:
        return []
    if lost:
        return [f"staging build {build}: every loss check within its thresholds "
                f"({lost:,} rows dropped in all; counts per reason in main.staging_audit)"]
    return [f"staging build {build}: no data lost beyond the cohort rules"]


LOSS_DEFAULTS: dict[str, Thresholds] = {
    "stays_dropped_for_bad_data": Thresholds(),
    # The demo drops 0.12% of candidate values, touching 36% of its patients (an odd value each); the
    # synthetic hospital (1,000 patients) drops 0.32%, touching 65%.
    "measurement_values_dropped": Thresholds(0.01, 0.10, 0.75, 0.95),
    "valuenum_not_numeric": Thresholds(),
    "measurement_rows_of_unknown_stays": Thresholds(),
    "code_rows_dropped": Thresholds(),
    "code_tables_not_empty": Thresholds(),
}


# ---------------------------------------------------------------------------------------------
# dbt failures
# ---------------------------------------------------------------------------------------------

_HINTS = {
    "Unexpected end of GZIP stream": "the gzip file is truncated or corrupt (re-copy or re-download it)",
    "Invalid unicode": "the file is not UTF-8 (re-encode it, e.g. iconv -f latin1 -t utf-8)",
}


def dbt_failure_message(run_results: dict | None, fallback: str = "") -> str:
    """One message for a failed `dbt build`: each failing node, its (scrubbed) error, and a hint."""
    if not run_results:
        return _scrub(fallback) or "dbt build failed before it produced run_results.json"
    lines = []
    for r in run_results.get("results", []):
        if r.get("status") not in ("error", "fail", "runtime error"):
            continue
        name = r.get("unique_id", "?").split(".")[-1]
        msg = _scrub(str(r.get("message") or "")).strip()
        if "CSV Error on Line" in msg:  # the file, the line and the reason, before the options list
            msg = csv_error_summary(msg[msg.find("CSV Error on Line"):])
        msg = re.sub(r"\s+", " ", msg)
        msg = re.sub(r" LINE \d+:.*$", "", msg)[:600]  # DuckDB's pointer into dbt's SQL: noise here
        hint = next((h for k, h in _HINTS.items() if k in msg), "")
        if r.get("status") == "fail":
            lines.append(f"dbt test {name} failed ({r.get('failures')} failing rows): {msg}")
        else:
            lines.append(f"dbt model {name}: {msg}" + (f" ({hint})" if hint else ""))
    if not lines:
        return _scrub(fallback) or "dbt build failed (no failing node in run_results.json)"
    return "Staging failed; the previously published marts are untouched.\n  - " + "\n  - ".join(lines)
