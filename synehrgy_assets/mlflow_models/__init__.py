"""MLflow "models from code" files: loaded by path, never unpickled."""

from pathlib import Path

GENERATOR_MODEL_CODE = Path(__file__).with_name("generator_model.py")
RELEASE_MODEL_CODE = Path(__file__).with_name("release_model.py")


def generator_signature():
    """The generator pyfunc's input, as `SynEHRgyGenerator.predict` reads it: MLflow drops columns a
    signature does not name, so every column predict reads is here."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([
        ColSpec("long", "n_patients"), ColSpec("long", "seed", required=False),
        ColSpec("string", "table", required=False), ColSpec("string", "where", required=False)]))
