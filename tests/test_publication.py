"""Publication only after every blocking check passes (core/staging_build.py, defs/staging_checks.py).

A hand-made build (the six marts with a `staging_audit`, as dbt writes them) waits in its folder as
`dbt_mimic_models` leaves it; the real loss checks then judge it as Dagster asset checks. A build
with an ERROR is discarded and the published warehouse keeps its previous bytes; the retrain paths
(the weekly schedule, the retrain job, an ad-hoc materialization of `patient_split`) refuse it
with a message naming it. The same flow with real dbt runs in tests/test_bad_inputs.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from synehrgy_assets.core.staging_build import new_build, publish, read_marker, read_state
from synehrgy_assets.resources import WorkspaceResource
from tests.helpers.staged_builds import run_checks, stage_by_hand, write_build


def _digest(home: Path) -> str:
    return hashlib.sha256((home / "warehouse.duckdb").read_bytes()).hexdigest()


def _failure_text(result) -> str:
    from orchestration.run_logging import failure_report

    return "\n".join(failure_report(result)[1])


@pytest.fixture
def failed_home(tmp_path) -> tuple[Path, str, str]:
    """A workspace whose published build (135 visits) is good and whose newest build (130 visits,
    20 % of VALUENUM junk) failed its blocking check `valuenum_not_numeric`."""
    home = (tmp_path / "home").resolve()
    good = stage_by_hand(home, 135)
    result = run_checks(home)
    assert result.success and read_state(home)["status"] == "published"
    before = _digest(home)
    bad = stage_by_hand(home, 130, valuenum_not_numeric=200)
    result = run_checks(home)
    assert not result.success
    evaluation = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}["valuenum_not_numeric"]
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["staging_build_state"].value == "failed"
    # Every check of the run speaks of the new build: those after the ERROR say it was discarded,
    # none judges the older published one instead.
    evaluations = result.get_asset_check_evaluations()
    assert {e.metadata["staging_build_id"].value for e in evaluations} == {bad}
    # Nothing overwritten: the published file is byte for byte the good build; the bad one is gone.
    assert _digest(home) == before
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        assert read_marker(con).build_id == good
        assert con.execute("select count(*) from main.visits").fetchall()[0][0] == 135
    assert not list((home / "staging_builds").glob("*/warehouse.duckdb"))
    state = read_state(home)
    assert state["status"] == "failed" and state["build_id"] == bad
    assert state["reason"].startswith("blocking check valuenum_not_numeric failed: measurement rows with a non-numeric")
    return home, good, bad


def test_a_build_is_published_only_when_every_blocking_check_has_passed(tmp_path):
    home = (tmp_path / "home").resolve()
    build = stage_by_hand(home, 135)
    assert not (home / "warehouse.duckdb").exists()
    from synehrgy_assets.defs.staging_checks import staging_loss_checks

    # One blocking check alone is not enough: the build still waits, nothing is published.
    run_checks(home, [staging_loss_checks[0]])
    state = read_state(home)
    assert state["status"] == "pending" and len(state["verdicts"]) == 1
    assert not (home / "warehouse.duckdb").exists()
    assert run_checks(home).success
    assert read_state(home)["status"] == "published"
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        assert read_marker(con).build_id == build


def test_patient_split_refuses_a_failed_build_naming_it(failed_home):
    """The UI / ad-hoc path: materializing patient_split alone."""
    from synehrgy_assets.defs.tokens import patient_split

    home, good, bad = failed_home
    result = dg.materialize([patient_split], resources={"workspace": WorkspaceResource(home=str(home))},
                            raise_on_error=False)
    assert not result.success
    text = _failure_text(result)
    assert f"Refusing the staged marts: staging build {bad} failed and was not published: blocking check " \
           "valuenum_not_numeric failed" in text, text
    assert f"still holds the older build {good}" in text


def test_patient_split_refuses_a_build_whose_checks_have_not_run(tmp_path):
    from synehrgy_assets.defs.tokens import patient_split

    home = (tmp_path / "home").resolve()
    good = stage_by_hand(home, 135)
    assert run_checks(home).success
    waiting = stage_by_hand(home, 140)
    result = dg.materialize([patient_split], resources={"workspace": WorkspaceResource(home=str(home))},
                            raise_on_error=False)
    text = _failure_text(result)
    assert not result.success
    assert f"staging build {waiting} is not published: its blocking checks have not all run (missing: " in text, text
    assert good in text


def test_the_retrain_job_refuses_a_failed_build(failed_home):
    from synehrgy_assets.definitions import build_definitions

    home, _good, bad = failed_home
    job = build_definitions(home=str(home), mimic_dir="/nonexistent").resolve_job_def("synehrgy_retrain")
    result = job.execute_in_process(raise_on_error=False, instance=dg.DagsterInstance.ephemeral())
    assert not result.success
    from orchestration.run_logging import failure_report

    failed, messages, _ = failure_report(result)
    assert failed == ["patient_split"], failed
    assert any(f"staging build {bad} failed and was not published" in m for m in messages), messages
    assert not [e for e in result.get_asset_materialization_events()]  # nothing downstream ran


def test_the_weekly_schedule_skips_a_failed_build(failed_home):
    from synehrgy_assets.defs.schedules import weekly_retraining_schedule

    home, good, bad = failed_home
    with dg.build_schedule_context(resources={"workspace": WorkspaceResource(home=str(home))}) as context:
        data = weekly_retraining_schedule.evaluate_tick(context)
    assert not data.run_requests
    assert data.skip_message.startswith(f"Refusing to retrain: staging build {bad} failed and was not published")
    assert good in data.skip_message


def test_the_weekly_schedule_runs_on_a_published_build(tmp_path):
    from synehrgy_assets.defs.schedules import weekly_retraining_schedule

    home = (tmp_path / "home").resolve()
    stage_by_hand(home, 135)
    assert run_checks(home).success
    with dg.build_schedule_context(resources={"workspace": WorkspaceResource(home=str(home))}) as context:
        data = weekly_retraining_schedule.evaluate_tick(context)
    assert len(data.run_requests) == 1


def test_publish_carries_over_the_other_schemas(tmp_path):
    """The swap keeps what is not dbt's (the split, the synthetic tables) from the old warehouse."""
    home = (tmp_path / "home").resolve()
    stage_by_hand(home, 5)
    assert run_checks(home).success
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        con.execute("create schema synehrgy; create table synehrgy.patient_split as select 1 as x")
    build_id, db = new_build(home)
    write_build(db, build_id, 6)
    publish(db, home / "warehouse.duckdb")
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("select x from synehrgy.patient_split").fetchall() == [(1,)]
        assert read_marker(con).build_id == build_id


def test_the_measurements_mart_records_the_variable_coverage(tmp_path):
    """The staging asset's materialization of `measurements` carries the coverage totals from
    `staging_audit`; the other marts do not."""
    from synehrgy_assets.defs.staging import with_row_counts

    db = tmp_path / "warehouse.duckdb"
    write_build(db, "b1", visits=7)
    with duckdb.connect(str(db)) as con:
        con.execute("insert into main.staging_audit values ('measurements', 'heart_rate', 'kept', 900), "
                    "('measurements', 'weight', 'candidate', 0)")
    events = [dg.Output(None, output_name="measurements"), dg.Output(None, output_name="visits")]
    out = {e.output_name: e.metadata for e in with_row_counts(events, WorkspaceResource(home=str(tmp_path)), db_path=db)}
    coverage = out["measurements"]["variable_coverage"].data
    assert coverage["candidate_rows"] == 1000 and coverage["kept_rows"] == 900 and coverage["kept_share"] == 0.9
    assert coverage["variables_without_rows"] == ["weight"] and coverage["variables_with_rows"] == 1
    assert out["measurements"]["dagster/row_count"].value == 7 and "variable_coverage" not in out["visits"]
