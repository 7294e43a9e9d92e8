"""The registered models explain themselves: signatures that name every column `predict` reads, an
input example and an output schema, the training data as an MLflow dataset (no rows), tags, a
datacard that tells the truth about the data, and a clear word when no version is `@champion`."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synehrgy_assets.core.datacard import champion_line, cohort_coverage, generator_datacard, release_datacard
from synehrgy_assets.core.training_data import (
    MIMIC_FOLDER, SYNTHETIC_HOSPITAL, TrainingData, patient_count, sequences_digest, source_kind,
)  # fmt: skip
from synehrgy_assets.mlflow_models import (
    GENERATOR_INPUT_EXAMPLE, GENERATOR_MODEL_CODE, RELEASE_INPUT_EXAMPLE, RELEASE_MODEL_CODE, generator_signature,
    release_signature,
)  # fmt: skip

# ---------------------------------------------------------------------------------------------
# signatures against what predict reads
# ---------------------------------------------------------------------------------------------


def columns_read(source: str, class_name: str) -> set[str]:
    """The input columns `class_name.predict` in `source` reads: string subscripts (`row["x"]`,
    `model_input["x"]`) and membership tests (`"x" in model_input`)."""
    cls = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == class_name)
    predict = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "predict")
    model_input = predict.args.args[2].arg
    rows = {model_input}  # names bound to the input or to one of its rows
    for node in ast.walk(predict):
        if isinstance(node, ast.Assign) and model_input in ast.unparse(node.value):
            rows |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    read = set()
    for node in ast.walk(predict):
        key = node.slice if isinstance(node, ast.Subscript) else None
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            if ast.unparse(node.value).split(".")[0].split("[")[0] in rows:
                read.add(key.value)
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
            if any(isinstance(op, ast.In) for op in node.ops) and ast.unparse(node.comparators[0]) in rows:
                read.add(node.left.value)
    return read


def unsigned_columns(source: str, class_name: str, signature) -> list[str]:
    """Columns predict reads that the signature lacks: MLflow drops those before predict sees them."""
    return sorted(columns_read(source, class_name) - set(signature.inputs.input_names()))


def test_every_column_predict_reads_is_in_its_signature():
    gen = GENERATOR_MODEL_CODE.read_text()
    assert columns_read(gen, "SynEHRgyGenerator") == {"n_patients", "seed", "table", "where"}
    assert unsigned_columns(gen, "SynEHRgyGenerator", generator_signature()) == []
    rel = RELEASE_MODEL_CODE.read_text()
    assert columns_read(rel, "SyntheticRelease") == {"table"}
    assert unsigned_columns(rel, "SyntheticRelease", release_signature()) == []
    # the examples ask only for signed columns
    assert set(GENERATOR_INPUT_EXAMPLE) <= set(generator_signature().inputs.input_names())
    assert set(RELEASE_INPUT_EXAMPLE) == set(release_signature().inputs.input_names())


def test_a_predict_reading_an_unsigned_column_fails_the_check():
    bad = GENERATOR_MODEL_CODE.read_text().replace(
        'tables = self.generate_tables(n, seed, where=where)',
        'tables = self.generate_tables(n, seed, temperature=float(row["temperature"]), where=where)')
    assert bad != GENERATOR_MODEL_CODE.read_text()
    assert unsigned_columns(bad, "SynEHRgyGenerator", generator_signature()) == ["temperature"]
    membership = RELEASE_MODEL_CODE.read_text().replace(
        "name = str(", 'limit = 5 if "limit" in model_input else None\n        name = str(')
    assert unsigned_columns(membership, "SyntheticRelease", release_signature()) == ["limit"]


def test_the_generator_output_schema_is_the_visits_table():
    from synehrgy_assets.core.cohort import OPTIONAL_VISIT_COLUMNS, VISIT_COLUMNS

    outputs = generator_signature().outputs
    assert outputs.input_names() == VISIT_COLUMNS
    optional = {c.name for c in outputs.inputs if not c.required}
    assert set(OPTIONAL_VISIT_COLUMNS) <= optional


# ---------------------------------------------------------------------------------------------
# training data: source, digest, tags
# ---------------------------------------------------------------------------------------------


def test_the_synthetic_hospital_folder_is_told_apart_from_a_mimic_folder(tmp_path):
    from synehrgy_assets.resources import MimicSourceResource, WorkspaceResource

    folder = MimicSourceResource(synthetic_patients=150).synthetic_dir(WorkspaceResource(home=str(tmp_path)))
    assert source_kind(folder) == SYNTHETIC_HOSPITAL
    assert source_kind("/data/mimic-iii-clinical-database-1.4") == MIMIC_FOLDER
    assert source_kind(Path("/x/synthetic_hospital_n1_s0_lower/../mimic-iii-demo")) == MIMIC_FOLDER


def test_the_sequences_digest_follows_every_token_and_the_vocabulary():
    tokens, offsets = np.arange(100, dtype=np.int32), np.array([0, 40, 100])
    digest = sequences_digest({"tokens": tokens, "offsets": offsets}, "v1")
    assert digest == sequences_digest({"offsets": offsets.copy(), "tokens": tokens.copy()}, "v1")
    changed = tokens.copy()
    changed[57] += 1
    assert sequences_digest({"tokens": changed, "offsets": offsets}, "v1") != digest
    assert sequences_digest({"tokens": tokens, "offsets": np.array([0, 41, 100])}, "v1") != digest
    assert sequences_digest({"tokens": tokens, "offsets": offsets}, "v2") != digest


def _training(kind=SYNTHETIC_HOSPITAL, folder="synthetic_hospital_n150_s0_lower", n=120, dx=30):
    return TrainingData(kind, folder, "fp123", "dig456", "voc789", n, "build-1",
                        {"diagnosis codes": dx, "procedure codes": 12, "phenotypes": 18, "measured variables": 60,
                         "ICU databases": ["carevue", "metavision"]})


def test_training_data_tags_round_trip_and_hide_counts_under_10():
    data = _training()
    tags = data.tags()
    assert tags["data_source"] == SYNTHETIC_HOSPITAL and tags["n_train_patients"] == "120"
    assert TrainingData.from_tags(tags) == data
    small = _training(n=7)
    assert small.tags()["n_train_patients"] == "< 10" and " 7 " not in small.describe()
    assert "< 10 patients" in small.describe()
    assert TrainingData.from_tags(small.tags()).n_train_patients < 10
    assert TrainingData.from_tags({"vocabulary_version": "v"}) is None  # a generator that recorded nothing
    assert [patient_count(n) for n in (0, 1, 9, 10, 1234)] == ["0", "< 10", "< 10", "10", "1,234"]


# ---------------------------------------------------------------------------------------------
# the datacard tells what the data is, holds and lacks
# ---------------------------------------------------------------------------------------------


def _tables(n_patients=40, diagnoses=True, databases=("carevue", "metavision")):
    ids = np.arange(n_patients)
    visits = pd.DataFrame({"subject_id": ids, "icu_database": [databases[i % len(databases)] for i in ids],
                           "mortality_inhospital": (ids % 4 == 0).astype(int)})
    codes = pd.DataFrame({"subject_id": ids, "code_type": "procedure", "icd9_code": "3893"})
    if diagnoses:
        codes = pd.concat([codes, pd.DataFrame({"subject_id": ids, "code_type": "diagnosis", "icd9_code": "0389"})])
    chart = pd.DataFrame({"subject_id": ids, "itemid": 211})
    stays = pd.DataFrame({"subject_id": ids, "first_careunit": "MICU", "last_careunit": "MICU"})
    return {"visits": visits, "visit_codes": codes, "ICUSTAYS": stays, "CHARTEVENTS": chart,
            "LABEVENTS": chart.iloc[:0], "visit_phenotypes": pd.DataFrame({"subject_id": [], "phenotype": []})}


CONTENTS = {"mimic_csv/PATIENTS.csv.gz": 40, "mimic_csv/OUTPUTEVENTS.csv.gz": 0, "mimic_csv/NOTEEVENTS.csv.gz": 0}


def _card(coverage, training=None, champion=None, passed=True):
    return release_datacard(
        release_name="synehrgy-synthetic-cohort", release_version="2", tracking_uri="sqlite:///x/mlflow.db",
        passed=passed, gates={"utility_gate": {"passed": passed, "reason": "TSTR/TRTR 0.91 >= 0.80"}},
        cohort={"cohort_id": "abc", "patients": 40}, generator={"name": "synehrgy-gpt", "version": "1"},
        data_versions={}, contents=CONTENTS, coverage=coverage, training=training, champion=champion)


def test_the_datacard_says_what_the_cohort_holds_and_lacks():
    full = _card(cohort_coverage(_tables(), CONTENTS), _training())
    assert "ICU stays with covariates, ICD-9 diagnoses, ICD-9 procedures, chart events." in full
    assert "| ICD-9 diagnoses | 40 | 40 | 1 |" in full and "- no lab events" in full and "- no phenotypes" in full
    assert "- no rows in NOTEEVENTS, OUTPUTEVENTS (header-only in `mimic_csv/`)" in full
    assert "no transfers between care units" in full and "one ICU database only" not in full
    lacking = _card(cohort_coverage(_tables(diagnoses=False, databases=("metavision",)), CONTENTS), _training(dx=0))
    assert "ICD-9 diagnoses" not in lacking.split("\n\n")[1]  # the first sentence does not claim any
    assert "- no ICD-9 diagnoses" in lacking
    assert "ICU stays of one ICU database only (`metavision`): no `carevue` stays" in lacking
    assert "the training data had no diagnosis codes" in lacking
    small = _card(cohort_coverage(_tables(n_patients=7), CONTENTS), _training())
    assert "< 10 synthetic patients" in small and "| ICD-9 diagnoses | < 10 |" in small
    assert "| 7 |" not in small and " 7 " not in small


def test_the_datacard_names_the_training_source_without_a_path():
    simulated = _card(None, _training())
    assert "Trained on the built-in simulated hospital (`synthetic_hospital_n150_s0_lower`), not on real" in simulated
    assert "fingerprint `fp123`" in simulated and "digest `dig456`" in simulated
    assert "no real patient's data went into the generator" in simulated
    real = _card(None, _training(kind=MIMIC_FOLDER, folder="mimic-iii-clinical-database-1.4"))
    assert "Trained on a real MIMIC-III folder, `mimic-iii-clinical-database-1.4` (fingerprint `fp123`)" in real
    assert "PhysioNet Credentialed Health Data License 1.5.0" in real and "simulated hospital" not in real
    unknown = _card(None, None)
    assert "unknown whether the simulated hospital or a real MIMIC-III folder" in unknown
    for card in (simulated, real, unknown):
        assert "## Intended use" in card and "**Not for:** clinical decisions" in card and "## Licence" in card
        assert "UPPERCASE quoted headers" in card and "lowercase headers" not in card
    gen = generator_datacard(generator_name="synehrgy-gpt", generator_version="1", tracking_uri="sqlite:///x",
                             release_name="r", training=_training(kind=MIMIC_FOLDER, folder="mimic-iii-demo"))
    assert "## Training data" in gen and "`mimic-iii-demo`" in gen and "Open Database License" in gen


def test_the_datacard_says_why_no_version_is_champion():
    line = champion_line("synehrgy-synthetic-cohort", None, {"1": "failed", "2": "failed"})
    assert "No version is `@champion`" in line and "versions: 1 (failed), 2 (failed)" in line
    assert "`models:/synehrgy-synthetic-cohort/2`" in line
    card = _card(None, _training(), champion=line, passed=False)
    assert line in card
    assert champion_line("r", "3") == "`@champion` is version 3: `models:/r@champion`."
    # a store that gives versions as numbers, ten of them: compared as numbers, not as text
    numeric = champion_line("r", None, {v: "failed" for v in range(1, 11)})
    assert "versions: 1 (failed), 2 (failed)" in numeric and "`models:/r/10`" in numeric


def test_a_missing_champion_names_the_versions_and_why(tmp_path):
    """What `generate` (consumer.load_generator) says when no generator version is `@champion`."""
    import mlflow

    from synehrgy_assets.consumer import load_generator

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("synehrgy-gpt")
    for status, gates in (("failed", "10/12"), ("pending", None)):
        v = client.create_model_version("synehrgy-gpt", str(tmp_path), tags={"validation_status": status})
        if gates:
            client.set_model_version_tag("synehrgy-gpt", v.version, "gates_passed", gates)
    with pytest.raises(ValueError) as err:
        load_generator("@champion", tracking_uri=uri)
    text = str(err.value)
    assert "models:/synehrgy-gpt@champion" in text
    assert "version(s) 1 (failed, 10/12 gates passed), 2 (pending)" in text
    assert "none is @champion" in text and "--model models:/synehrgy-gpt/2" in text


# ---------------------------------------------------------------------------------------------
# what the graph registered (tests/small_graph.py)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(released_workspace):
    import mlflow

    ws = released_workspace
    from synehrgy_assets.resources import point_mlflow_at
    point_mlflow_at(ws.tracking_uri)
    client = ws.mlflow.client()
    gen = client.get_model_version(ws.mlflow.model_name, str(_meta(ws, "gpt_checkpoint", "model_version")))
    rel = client.get_model_version(ws.mlflow.release_name, str(_meta(ws, "synthetic_release", "release_version")))
    return ws, client, gen, rel


def _meta(ws, asset: str, key: str):
    value = ws.metadata(asset)[key]
    return getattr(value, "value", value)


def _model(uri: str, tmp_path: Path):
    import mlflow
    from mlflow.models import Model

    local = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path))
    model = Model.load(local)
    return model, model.load_input_example(local)


def _output_types(frame: pd.DataFrame) -> dict:
    from mlflow.models import infer_signature

    return {c.name: str(c.type) for c in infer_signature(model_output=frame).outputs.inputs}


@pytest.mark.integration
def test_the_registered_generator_has_its_signature_example_and_output_schema(registry, tmp_path):
    import mlflow

    ws, _, gen, _ = registry
    uri = f"models:/{ws.mlflow.model_name}/{gen.version}"
    model, example = _model(uri, tmp_path)
    assert model.signature.to_dict() == generator_signature().to_dict()
    pd.testing.assert_frame_equal(example, pd.DataFrame(GENERATOR_INPUT_EXAMPLE), check_dtype=False)
    pyfunc = mlflow.pyfunc.load_model(uri)
    pyfunc.unwrap_python_model().configure(device="cpu", max_tokens_per_patient=300)
    visits = pyfunc.predict(example)
    assert list(visits.columns) == model.signature.outputs.input_names()
    declared = {c.name: str(c.type) for c in model.signature.outputs.inputs}
    assert {c: t for c, t in _output_types(visits).items()} == {c: declared[c] for c in visits.columns}
    # `table` reaches predict through the signature (MLflow drops unsigned columns)
    patients = pyfunc.predict(pd.DataFrame({"n_patients": [2], "seed": [0], "table": ["PATIENTS"]}))
    assert {"subject_id", "gender", "dob"} <= set(patients.columns)


@pytest.mark.integration
def test_the_registered_release_has_its_signature_example_and_output_schema(registry, tmp_path):
    import mlflow

    ws, _, _, rel = registry
    uri = f"models:/{ws.mlflow.release_name}/{rel.version}"
    model, example = _model(uri, tmp_path)
    assert model.signature.inputs.input_names() == ["table"]
    assert example.to_dict("list") == RELEASE_INPUT_EXAMPLE
    patients = mlflow.pyfunc.load_model(uri).predict(example)
    assert model.signature.outputs.input_names() == list(patients.columns)
    declared = {c.name: str(c.type) for c in model.signature.outputs.inputs}
    assert _output_types(patients) == declared


@pytest.mark.integration
def test_both_runs_log_the_training_data_as_a_dataset_without_rows(registry):
    ws, client, gen, rel = registry
    gen_inputs = client.get_run(gen.run_id).inputs.dataset_inputs
    rel_inputs = client.get_run(rel.run_id).inputs.dataset_inputs
    assert len(gen_inputs) == 1 and len(rel_inputs) == 1
    for dataset_input, context in ((gen_inputs[0], "training"), (rel_inputs[0], "generator_training")):
        ds = dataset_input.dataset
        assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == context
        assert ds.digest == gen.tags["training_data.digest"] and len(ds.digest) == 16
        assert ds.name.startswith("train split of synthetic hospital synthetic_hospital_n150_")
        assert ds.source_type == "synehrgy_training_data"
        source = json.loads(ds.source)
        assert source["kind"] == "synthetic hospital" and "/" not in source["folder"]
        assert source["fingerprint"] == gen.tags["training_data.source_fingerprint"]
        assert not ds.profile  # no rows, no statistics of them
        assert json.loads(ds.schema)["mlflow_colspec"][0]["name"] == "tokens"
    assert str(ws.home) not in json.dumps([gen_inputs[0].dataset.to_dictionary(), gen.tags])


@pytest.mark.integration
def test_registered_models_and_versions_carry_tags(registry):
    ws, client, gen, rel = registry
    from synehrgy_assets.mlflow_models import synehrgy_version

    n_train = int(gen.tags["n_train_patients"])
    assert n_train >= 10 and gen.tags["data_source"] == "synthetic hospital"
    assert gen.tags["vocabulary_version"] == _meta(ws, "token_vocabulary", "version")
    assert gen.tags["synehrgy_version"] == synehrgy_version() != "unknown"
    n_gates = len(_meta(ws, "synthetic_release", "checks"))
    assert gen.tags["gates_passed"] == rel.tags["gates_passed"] == f"{n_gates}/{n_gates}"
    assert rel.tags["data_source"] == "synthetic hospital" and rel.tags["validation_status"] == "passed"
    assert json.loads(gen.tags["training_data.vocabulary"])["diagnosis codes"] > 0
    gen_model = client.get_registered_model(ws.mlflow.model_name).tags
    rel_model = client.get_registered_model(ws.mlflow.release_name).tags
    assert gen_model["model_kind"] == "generator" and rel_model["model_kind"] == "synthetic release"
    assert gen_model["data_source"] == rel_model["data_source"] == "synthetic hospital"
    assert rel_model["champion"] == str(rel.version) and "clinical decisions" in rel_model["intended_use"]


@pytest.mark.integration
def test_the_registered_datacards_describe_the_training_data_and_contents(registry):
    ws, client, gen, rel = registry
    card = rel.description
    assert "Trained on the built-in simulated hospital (`synthetic_hospital_n150_" in card
    assert f"digest `{gen.tags['training_data.digest']}`" in card
    assert "## What the cohort holds and lacks" in card and "| ICD-9 diagnoses |" in card
    assert "no rows in CALLOUT" in card and "OUTPUTEVENTS" in card  # the header-only MIMIC tables
    assert f"`@champion` is version {rel.version}" in card
    assert "## Intended use" in card and "## Licence" in card and "UPPERCASE quoted headers" in card
    assert str(ws.home) not in card.split("## How to pull it")[0]  # the pull snippet is another matter
    assert "## Training data" in gen.description and "simulated hospital" in gen.description
