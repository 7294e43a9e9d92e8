"""MLflow pyfunc for the trained generator (logged as "models from code": no pickles).

Artifacts: `checkpoint` (safetensors + config.json) and `vocabulary` (token_vocabulary.json).
The generation is `core/generation.Generator` with one `SamplingParams`, the same as `python -m
orchestration.cli generate` and the synthesis asset, so the same seed gives the same tables.

- `predict(pd.DataFrame({"n_patients": [10], "seed": [0]}))` returns the synthetic visits table; a
  `table` column picks another one (`PATIENTS`, `CHARTEVENTS`, `measurements`, ...), a `where`
  column asks for patients that satisfy a condition (`"age>=65; died=1"`, docs/consumers.md).
- `unwrap_python_model().generate_tables(10, seed=0, where="code=038*")` returns every table
  (marts- and MIMIC-shaped).
- The device and the length cap: `unwrap_python_model().configure(device="cuda", max_tokens_per_patient=512)`
  (defaults: `auto` = CUDA when present, else CPU; the cap stored with the weights, as the CLI).
  `mlflow.pyfunc.load_model(uri, model_config={"device": "cuda"})` does the same once the model is
  logged with a `model_config` (MLflow ignores it otherwise).
"""

from __future__ import annotations

import mlflow
import pandas as pd


class SynEHRgyGenerator(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from synehrgy_assets.core.generation import Generator

        config = getattr(context, "model_config", None) or {}
        self.generator = Generator.from_files(context.artifacts["checkpoint"], context.artifacts["vocabulary"],
                                              device=str(config.get("device", "auto")))
        self.max_tokens_per_patient = config.get("max_tokens_per_patient")  # None = the stored cap

    def configure(self, device: str | None = None, max_tokens_per_patient: int | None = None):
        """Move the generator to `device` (auto|cpu|cuda) and/or set the length cap; returns self."""
        if device is not None:
            self.generator.to(device)
        if max_tokens_per_patient is not None:
            self.max_tokens_per_patient = int(max_tokens_per_patient)
        return self

    def generate_tables(self, n_patients: int, seed: int = 0, temperature: float = 1.0, top_k: int | None = None,
                        top_p: float | None = None, batch_size: int = 64, where=None,
                        max_attempts: int | None = None) -> dict[str, pd.DataFrame]:
        """Every table of one generation: visits, visit_codes, visit_phenotypes, measurements and the
        MIMIC-III tables (PATIENTS, ADMISSIONS, ICUSTAYS, DIAGNOSES_ICD, ..., D_*)."""
        from synehrgy_assets.core.generation import SamplingParams

        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, batch_size=batch_size,
                                seed=seed, max_tokens_per_patient=self.max_tokens_per_patient)
        cohort = self.generator.generate(int(n_patients), params, where=where, max_attempts=max_attempts)
        return {**cohort.marts, **cohort.mimic_tables}

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        row = model_input.iloc[0]
        n = int(row["n_patients"])
        seed = int(row["seed"]) if "seed" in model_input and pd.notna(row["seed"]) else 0
        table = str(row["table"]) if "table" in model_input and pd.notna(row["table"]) else "visits"
        where = str(row["where"]) if "where" in model_input and pd.notna(row["where"]) else None
        tables = self.generate_tables(n, seed, where=where)
        if table not in tables:
            raise ValueError(f"no table {table!r}; available: {sorted(tables)}")
        return tables[table]


mlflow.models.set_model(SynEHRgyGenerator())
