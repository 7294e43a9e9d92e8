"""The marts loader (`load_staged_cohort`, `MartReader`) and `encode_marts` on real DuckDB files.

The marts are written from a random marts-shaped cohort, once in the dbt project's stored order
and once shuffled (an older warehouse, or another writer), so both read paths are exercised.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from synehrgy_assets.core.cohort import (
    MART_COLUMNS,
    MART_ORDER,
    MartReader,
    StagedCohort,
    load_staged_cohort,
)
from synehrgy_assets.core.tokens import TokenVocabulary, encode, encode_marts
from tests.helpers.toy_cohort import synthetic_cohort


@pytest.fixture(scope="module")
def cohort() -> StagedCohort:
    return synthetic_cohort(240, seed=21, max_visits=3, rows_per_visit=10)


@pytest.fixture(scope="module")
def vocab(cohort) -> TokenVocabulary:
    return TokenVocabulary.fit(cohort)


def _write_marts(path, cohort: StagedCohort, stored_order: bool) -> str:
    rng = np.random.default_rng(4)
    with duckdb.connect(str(path)) as con:
        for name, frame in zip(MART_COLUMNS, cohort.frames()):
            frame = frame[MART_COLUMNS[name]].copy()
            for col in ("variable", "value_text"):
                if col in frame:
                    frame[col] = frame[col].astype(object)
            if name == "measurements" and not stored_order:
                frame = frame.iloc[rng.permutation(len(frame))]
            con.register("frame", frame)
            order = f"order by {', '.join(MART_ORDER[name])}" if stored_order else ""
            con.execute(f"create table {name} as select * from frame {order}")
            con.unregister("frame")
    return str(path)


@pytest.fixture(scope="module", params=["stored_order", "shuffled"])
def warehouse(request, cohort, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("marts") / "warehouse.duckdb"
    return _write_marts(path, cohort, stored_order=request.param == "stored_order")


def _expected(cohort: StagedCohort, ids) -> StagedCohort:
    sub = cohort if ids is None else cohort.subset(ids)
    return StagedCohort(*(f.sort_values(MART_ORDER[name], kind="stable").reset_index(drop=True)
                          for name, f in zip(MART_COLUMNS, sub.frames())))


def _subsets(cohort):
    subjects = np.sort(cohort.visits["subject_id"].unique())
    return {"all": None, "80%": subjects[np.arange(len(subjects)) % 5 != 0],
            "10%": subjects[::10], "none": subjects[:0]}


@pytest.mark.parametrize("subset", ["all", "80%", "10%", "none"])
def test_load_staged_cohort_orders_and_filters(warehouse, cohort, subset):
    ids = _subsets(cohort)[subset]
    with duckdb.connect(warehouse, read_only=True) as con:
        got = load_staged_cohort(con, ids)
    want = _expected(cohort, ids)
    for name, g, w in zip(MART_COLUMNS, got.frames(), want.frames()):
        assert list(g.columns) == MART_COLUMNS[name]
        assert len(g) == len(w), name
        for col in MART_COLUMNS[name]:
            if name == "measurements" and col in ("variable", "value_text"):
                assert isinstance(g[col].dtype, pd.CategoricalDtype)
                assert list(g[col].cat.categories) == sorted(g[col].cat.categories)
                np.testing.assert_array_equal(g[col].astype(object).fillna("<NULL>").to_numpy(),
                                              w[col].astype(object).fillna("<NULL>").to_numpy())
            elif col not in ("intime", "outtime"):
                np.testing.assert_array_equal(g[col].to_numpy(), w[col].to_numpy(), err_msg=f"{name}.{col}")


@pytest.mark.parametrize("subset", ["all", "80%", "10%", "none"])
@pytest.mark.parametrize("patients_per_block,n_threads", [(7, 2), (50, 2), (50, 1), (10**6, 2)])
def test_encode_marts_equals_encode(warehouse, cohort, vocab, subset, patients_per_block, n_threads):
    ids = _subsets(cohort)[subset]
    want = encode(_expected(cohort, ids), vocab)
    calls = []
    with duckdb.connect(warehouse, read_only=True) as con:
        con.execute("set threads = 3")
        got = encode_marts(con, vocab, ids, n_threads=n_threads, patients_per_block=patients_per_block,
                           progress=lambda done, total: calls.append((done, total)))
        assert con.sql("select current_setting('threads')").fetchall()[0][0] == 3  # restored
    for name in ("tokens", "offsets", "subject_ids", "visit_starts"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert got.stats == want.stats and got.vocab_version == vocab.version
    assert [d for d, _ in calls] == list(range(1, len(calls) + 1)) and calls[-1][0] == calls[-1][1]


def test_blocks_tile_every_subject(warehouse, cohort):
    with duckdb.connect(warehouse, read_only=True) as con, MartReader(con) as reader:
        blocks = reader.blocks(9)
        assert blocks[0].lo is None and blocks[-1].hi is None  # open ends: no row can be missed
        assert all(a.hi == b.lo for a, b in zip(blocks[:-1], blocks[1:]))
        n = sum(reader.load(b).n_patients for b in blocks)
    assert n == cohort.n_patients


def test_encode_marts_names_bad_rows(cohort, vocab, tmp_path):
    bad = StagedCohort(cohort.visits, cohort.visit_codes, cohort.visit_phenotypes,
                       cohort.measurements.astype({"variable": object}).copy())
    bad.measurements.loc[5, "variable"] = "not_a_variable"
    path = _write_marts(tmp_path / "bad.duckdb", bad, stored_order=True)
    with duckdb.connect(path, read_only=True) as con:
        with pytest.raises(ValueError, match="not_a_variable"):
            encode_marts(con, vocab, patients_per_block=20)
    orphan = StagedCohort(cohort.visits, cohort.visit_codes, cohort.visit_phenotypes,
                          cohort.measurements.copy())
    orphan.measurements.loc[7, "icustay_id"] = 1
    path = _write_marts(tmp_path / "orphan.duckdb", orphan, stored_order=True)
    with duckdb.connect(path, read_only=True) as con:
        with pytest.raises(ValueError, match="table 'measurements'.*icustay_id"):
            encode_marts(con, vocab, patients_per_block=20)


def test_is_sorted_detects_every_key(cohort):
    from synehrgy_assets.core.cohort import _is_sorted

    keys = MART_ORDER["measurements"]
    frame = cohort.measurements.copy()
    frame["variable"] = frame["variable"].astype("category")
    assert _is_sorted(frame, keys)
    # Swap two rows that differ only in the last key (variable) of one measurement row.
    same_row = (frame["icustay_id"].to_numpy()[1:] == frame["icustay_id"].to_numpy()[:-1]) & (
        frame["hours"].to_numpy()[1:] == frame["hours"].to_numpy()[:-1])
    i = int(np.flatnonzero(same_row)[0])
    swapped = frame.iloc[np.r_[0:i, i + 1, i, i + 2:len(frame)]].reset_index(drop=True)
    assert not _is_sorted(swapped, keys)
    assert not _is_sorted(frame.iloc[::-1].reset_index(drop=True), keys)
    with_nan = frame.copy()
    with_nan.loc[3, "hours"] = np.nan
    assert not _is_sorted(with_nan, keys)
