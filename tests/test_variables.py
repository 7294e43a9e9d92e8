"""The variables seed has one loader (core/variables.py), shared by the tokenizer and the metrics."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synehrgy_assets.core import metrics, variables
from synehrgy_assets.core.metrics import MetricInputError, resolve_variables
from synehrgy_assets.core.tokens import vocabulary
from synehrgy_assets.core.variables import VariablesTableError, check_variables, load_variables, parse_edges

SMALL = pd.DataFrame({
    "variable": ["lactate", "heart_rate", "gcs_total"],
    "kind": ["continuous", "continuous", "categorical"],
    "valid_low": [0.4, 0.0, 3.0],
    "valid_high": [30.0, 350.0, 15.0],
    "clinical_edges": ["1 1.5 2 3 4 6", "100 50 60", None],
})


def test_tokenizer_and_metrics_share_one_loader(tmp_path, monkeypatch):
    assert metrics.load_variables is variables.load_variables
    assert vocabulary._parse_edges is variables.parse_edges
    seed = tmp_path / "variables.csv"
    SMALL.to_csv(seed, index=False)
    monkeypatch.setattr(variables, "VARIABLES_CSV", seed)  # both consumers read the seed through it
    for_tokens = vocabulary.load_variables()
    for_metrics = resolve_variables(None)
    # Same checked table; only the row order differs: the tokenizer's ids follow the names.
    assert for_tokens["variable"].tolist() == ["gcs_total", "heart_rate", "lactate"]
    assert for_metrics["variable"].tolist() == ["lactate", "heart_rate", "gcs_total"]
    pd.testing.assert_frame_equal(for_tokens, for_metrics.sort_values("variable").reset_index(drop=True))
    assert list(for_tokens.columns) == variables.VARIABLE_COLUMNS
    # Optional columns get their defaults; edges are parsed once, to sorted floats.
    assert for_metrics["label"].tolist() == for_metrics["variable"].tolist()
    assert for_metrics["unit"].tolist() == ["", "", ""]
    assert for_metrics["clinical_edges"].tolist() == [[1, 1.5, 2, 3, 4, 6], [50, 60, 100], []]
    assert resolve_variables(["gcs_total", "lactate"])["variable"].tolist() == ["gcs_total", "lactate"]


def test_the_seed_loads_for_both_consumers():
    seed = load_variables()
    assert len(seed) == 53 and seed["variable"].is_unique
    assert seed["valid_low"].dtype == float and (seed["valid_low"] < seed["valid_high"]).all()
    continuous = seed[seed["kind"] == "continuous"]
    assert all(len(e) > 0 and e == sorted(e) for e in continuous["clinical_edges"])  # binning="clinical"
    assert vocabulary.load_variables()["variable"].tolist() == sorted(seed["variable"])


def _broken(column: str, value) -> pd.DataFrame:
    table = SMALL.copy()
    table[column] = table[column].astype(object)
    table.loc[1, column] = value
    return table


@pytest.mark.parametrize("table, column", [
    (SMALL.drop(columns=["kind"]), "kind"),
    (SMALL.drop(columns=["clinical_edges"]), "clinical_edges"),
    (_broken("kind", "ordinal"), "kind"),
    (_broken("kind", None), "kind"),
    (_broken("variable", "lactate"), "variable"),
    (_broken("variable", None), "variable"),
    (_broken("valid_high", "high"), "valid_high"),
    (_broken("valid_low", 400.0), "valid_low"),
    (_broken("clinical_edges", "50 sixty"), "clinical_edges"),
    (_broken("clinical_edges", "50 nan"), "clinical_edges"),
])
def test_a_bad_table_gets_an_error_naming_the_column(table, column):
    with pytest.raises(VariablesTableError, match=f"variables table.*'{column}'"):
        vocabulary._check_variables_table(table)
    with pytest.raises(MetricInputError, match=f"variables argument.*'{column}'") as info:
        resolve_variables(table)
    assert isinstance(info.value.__cause__, VariablesTableError)
    assert issubclass(VariablesTableError, ValueError)


def test_errors_name_the_variable_and_the_file(tmp_path):
    with pytest.raises(VariablesTableError, match=r"'heart_rate' is not space-separated finite numbers"):
        check_variables(_broken("clinical_edges", "50 sixty"))
    with pytest.raises(VariablesTableError, match=r"valid_low >= valid_high for variable\(s\) \['heart_rate'\]"):
        check_variables(_broken("valid_low", 400.0))
    path = tmp_path / "bad.csv"
    SMALL.drop(columns=["valid_low"]).to_csv(path, index=False)
    with pytest.raises(VariablesTableError, match=rf"{path}: variables table lacks column\(s\) \['valid_low'\]"):
        vocabulary.load_variables(path)
    with pytest.raises(MetricInputError, match="unknown variable name"):
        resolve_variables(["heart_rate", "no_such_variable"])


def test_parse_edges():
    assert parse_edges("3 1  2") == [1.0, 2.0, 3.0]
    assert parse_edges([2, 1.5]) == [1.5, 2.0] and parse_edges(np.array([4.0])) == [4.0]
    for empty in (None, math.nan, pd.NA, "", "  "):
        assert parse_edges(empty) == []
    with pytest.raises(VariablesTableError, match="'ph'"):
        parse_edges("7.2 inf", "ph")


DEMO_DIR = Path(os.environ.get("SYNEHRGY_MIMIC_DEMO_DIR",
                               Path(__file__).resolve().parents[2] / "shared" / "data" / "mimic-iii-demo"))
# The mimic3-benchmarks variables and the ICU labs the default set must hold: charted ones need a
# CareVue and a MetaVision item, labs a LABEVENTS item (and, where MIMIC charts a copy, chart items).
BENCHMARK_CHARTED = ["capillary_refill_rate", "diastolic_blood_pressure", "fraction_inspired_oxygen",
                     "gcs_eye_opening", "gcs_motor_response", "gcs_total", "gcs_verbal_response", "glucose",
                     "heart_rate", "height", "mean_blood_pressure", "oxygen_saturation", "ph", "respiratory_rate",
                     "systolic_blood_pressure", "temperature", "weight"]
ICU_LABS = ["sodium", "potassium", "creatinine", "blood_urea_nitrogen", "bicarbonate", "chloride", "hemoglobin",
            "platelets", "white_blood_cell_count", "lactate", "partial_pressure_o2", "partial_pressure_co2",
            "magnesium", "troponin_t", "troponin_i", "bilirubin"]


def test_the_default_set_holds_the_benchmark_variables_and_the_icu_labs_from_both_databases():
    items_path = DEMO_DIR / "D_ITEMS.csv.gz"
    if not items_path.exists():
        pytest.skip(f"{items_path} not found")
    seed = pd.read_csv(variables.SEEDS_DIR / "variable_itemids.csv")
    assert set(BENCHMARK_CHARTED + ICU_LABS) <= set(load_variables()["variable"])
    d_items = pd.read_csv(items_path, usecols=["itemid", "dbsource"])
    d_labs = pd.read_csv(DEMO_DIR / "D_LABITEMS.csv.gz", usecols=["itemid", "fluid"])
    chart = seed[seed["source_table"] == "chartevents"].merge(d_items, on="itemid", how="left")
    labs = seed[seed["source_table"] == "labevents"].merge(d_labs, on="itemid", how="left")
    assert chart["dbsource"].notna().all(), chart[chart["dbsource"].isna()]  # every ITEMID is a real item
    assert (labs["fluid"] == "Blood").all(), labs[labs["fluid"] != "Blood"]  # blood tests only
    sources = chart.groupby("variable")["dbsource"].agg(set)
    for name in BENCHMARK_CHARTED:
        if name != "gcs_total":  # MetaVision charts the three parts only
            assert {"carevue", "metavision"} <= sources[name], name
    for name in ICU_LABS:
        assert name in set(labs["variable"]), name
    troponin = sources["troponin_t"] | sources["troponin_i"]  # one assay per database
    for name in [n for n in ICU_LABS if not n.startswith("troponin")] + ["troponin"]:
        have = troponin if name == "troponin" else sources[name]
        assert {"carevue", "metavision"} <= have, name


def test_variable_coverage_totals_and_empty_variables():
    from synehrgy_assets.core.staging_checks import variable_coverage

    audit = {("measurements", "heart_rate", "candidate"): 90, ("measurements", "heart_rate", "kept"): 80,
             ("measurements", "weight", "candidate"): 10, ("measurements", "weight", "kept"): 0,
             ("measurements", "", "patients_with_candidates"): 12, ("icustays", "", "kept"): 5}
    coverage = variable_coverage(audit)
    assert coverage == {"variables": 2, "variables_with_rows": 1, "variables_without_rows": ["weight"],
                        "candidate_rows": 100, "kept_rows": 80, "kept_share": 0.8}
    assert variable_coverage({})["kept_share"] is None
