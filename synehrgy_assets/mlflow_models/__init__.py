"""MLflow "models from code" files: loaded by path, never unpickled; and what each registered model
tells about itself: its signature (inputs and outputs), an input example and the training data it
records as an MLflow dataset (a name, a digest and a source; no rows)."""

from pathlib import Path

GENERATOR_MODEL_CODE = Path(__file__).with_name("generator_model.py")
RELEASE_MODEL_CODE = Path(__file__).with_name("release_model.py")

# The generator's default output (predict without a `table` column): the visits table. Columns the
# decoder may leave empty are optional (a patient's first stay has no previous one).
VISIT_TYPES = {
    "subject_id": "long", "hadm_id": "long", "icustay_id": "long", "visit_index": "integer",
    "intime": "datetime", "outtime": "datetime", "admittime": "datetime", "dischtime": "datetime",
    "los_hours": "double", "hours_since_previous_visit": "double", "age_years": "double",
    "age_is_capped": "boolean", "gender": "string", "ethnicity_group": "string", "insurance": "string",
    "admission_type": "string", "first_careunit": "string", "icu_database": "string",
    "mortality_inhospital": "integer",
}
OPTIONAL_VISIT_OUTPUTS = ("hours_since_previous_visit", "admittime", "dischtime", "icu_database")

# A consumer's first call, synthetic-side only: one patient (MLflow runs the example when it logs the
# model), a seed, the table to return.
GENERATOR_INPUT_EXAMPLE = {"n_patients": [1], "seed": [0], "table": ["visits"]}
RELEASE_INPUT_EXAMPLE = {"table": ["PATIENTS"]}


def generator_signature():
    """The generator pyfunc's input, as `SynEHRgyGenerator.predict` reads it (MLflow drops columns a
    signature does not name, so every column predict reads is here), and its default output, the
    visits table (`table` picks another, whose columns are those of that table)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from synehrgy_assets.core.cohort import VISIT_COLUMNS

    outputs = Schema([ColSpec(VISIT_TYPES[c], c, required=c not in OPTIONAL_VISIT_OUTPUTS) for c in VISIT_COLUMNS])
    return ModelSignature(inputs=Schema([
        ColSpec("long", "n_patients"), ColSpec("long", "seed", required=False),
        ColSpec("string", "table", required=False), ColSpec("string", "where", required=False)]), outputs=outputs)


def release_signature(example_output=None):
    """The release pyfunc's input (`table`, the one column `SyntheticRelease.predict` reads) and, when
    given the table the input example asks for, its columns as the output schema."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    import warnings

    outputs = None
    if example_output is not None:
        with warnings.catch_warnings():  # its hint on integer columns concerns samples; this is the whole table
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
            outputs = infer_signature(model_output=example_output).outputs
    return ModelSignature(inputs=Schema([ColSpec("string", "table")]), outputs=outputs)


def input_example(example: dict):
    import pandas as pd

    return pd.DataFrame(example)


def training_dataset(data):
    """The generator's training data (`core.training_data.TrainingData`) as an MLflow dataset with no
    rows: named after its source, the digest of the train token sequences, the source folder's name
    and file fingerprint, and a schema of one token sequence per train patient."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array, DataType

    from synehrgy_assets.mlflow_models.datasets import TrainingDataSource

    source = TrainingDataSource(kind=data.kind, folder=data.folder, fingerprint=data.source_fingerprint)
    return MetaDataset(source=source, name=data.dataset_name, digest=data.digest,
                       schema=Schema([ColSpec(Array(DataType.integer), "tokens")]))


def synehrgy_version() -> str:
    """The installed synehrgy package's version (pyproject.toml), or `unknown` when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("synehrgy")
    except PackageNotFoundError:
        return "unknown"


def registered_model_tags(kind: str, data=None) -> dict[str, str]:
    """Tags of a registered model: what it is, what it is for, and (from its newest version's
    `TrainingData`) what the newest version was trained on."""
    from synehrgy_assets.core.datacard import INTENDED_USE_SHORT

    tags = {"model_kind": kind, "synehrgy_version": synehrgy_version(), "intended_use": INTENDED_USE_SHORT}
    if data is not None:
        tags.update({"data_source": data.kind, "data_source_folder": data.folder,
                     "training_data.digest": data.digest})
    return tags
