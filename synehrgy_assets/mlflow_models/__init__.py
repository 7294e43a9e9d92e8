"""MLflow "models from code" files: loaded by path, never unpickled."""

from pathlib import Path

GENERATOR_MODEL_CODE = Path(__file__).with_name("generator_model.py")
RELEASE_MODEL_CODE = Path(__file__).with_name("release_model.py")
