"""Hand-made staging builds for the publication tests: the six marts with a `staging_audit`, as a
green dbt build leaves them waiting for their checks, and the loss checks run on them in the
Dagster run that staged them."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import duckdb

from synehrgy_assets.core.staging_build import MARTS, new_build, record_pending, write_marker
from synehrgy_assets.core.staging_checks import BLOCKING_LOSS_CHECKS
from synehrgy_assets.resources import WorkspaceResource


def _audit(valuenum_not_numeric: int) -> list[tuple[str, str, str, int]]:
    return [
        ("icustays", "", "raw", 100), ("icustays", "", "patients_raw", 50),
        ("measurements", "heart_rate", "candidate", 1000), ("measurements", "", "patients_with_candidates", 50),
        ("measurements", "", "valuenum_not_numeric", valuenum_not_numeric),
        ("measurements", "", "patients_valuenum_not_numeric", 20 if valuenum_not_numeric else 0),
        ("codes", "diagnosis", "raw", 10), ("codes", "procedure", "raw", 5), ("codes", "", "patients_raw", 50),
    ]


def write_build(db: Path, build_id: str, visits: int, valuenum_not_numeric: int = 0) -> None:
    with duckdb.connect(str(db)) as con:
        for mart in MARTS:
            if mart != "staging_audit":
                con.execute(f"create table main.{mart} as select range as subject_id from range({visits})")
        con.execute("create table main.staging_audit (section varchar, item varchar, metric varchar, n bigint)")
        con.executemany("insert into main.staging_audit values (?, ?, ?, ?)", _audit(valuenum_not_numeric))
    write_marker(db, build_id, "/raw", "fp")


_RUN_IDS: dict[str, str] = {}  # home -> the Dagster run id of its next check run (as dbt_mimic_models records it)


def stage_by_hand(home: Path, visits: int, valuenum_not_numeric: int = 0) -> str:
    """What dbt_mimic_models leaves after a green dbt build: the build waits for its checks."""
    build_id, db = new_build(home)
    write_build(db, build_id, visits, valuenum_not_numeric)
    _RUN_IDS[str(home)] = str(uuid.uuid4())
    record_pending(home, build_id, db, list(BLOCKING_LOSS_CHECKS), run_id=_RUN_IDS[str(home)])
    return build_id


def run_checks(home: Path, checks=None) -> dg.ExecuteInProcessResult:
    """The loss checks in one Dagster run, the run that staged the build (its id recorded above)."""
    from synehrgy_assets.defs.staging import mart_key
    from synehrgy_assets.defs.staging_checks import staging_loss_checks

    checks = checks or staging_loss_checks
    keys = [k for c in checks for k in c.check_keys]
    marts = [dg.AssetSpec(mart_key(m)) for m in ("visits", "measurements", "visit_codes")]
    defs = dg.Definitions(assets=marts, asset_checks=checks, resources={"workspace": WorkspaceResource(home=str(home))},
                          jobs=[dg.define_asset_job("judge", selection=dg.AssetSelection.checks(*keys))])
    return defs.resolve_job_def("judge").execute_in_process(
        run_id=_RUN_IDS.get(str(home), str(uuid.uuid4())), raise_on_error=False)
