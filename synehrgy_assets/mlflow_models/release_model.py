"""MLflow pyfunc for a synthetic release (logged as "models from code": no pickles).

The release's artifacts are Parquet files of synthetic tables (MIMIC-shaped and marts-shaped).
`predict(pd.DataFrame({"table": ["PATIENTS"]}))` returns that table; or download the files with
`mlflow.artifacts.download_artifacts("models:/synehrgy-synthetic-cohort@champion")`.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd


class SyntheticRelease(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.tables_dir = Path(context.artifacts["tables"])

    def table_names(self) -> list[str]:
        return sorted(p.stem for p in self.tables_dir.glob("*.parquet"))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        name = str(model_input["table"].iloc[0])
        path = self.tables_dir / f"{name}.parquet"
        if not path.exists():
            raise ValueError(f"release has no table '{name}'; available: {self.table_names()}")
        return pd.read_parquet(path)


mlflow.models.set_model(SyntheticRelease())
