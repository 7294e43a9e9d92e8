"""MLflow pyfunc for the trained generator (logged as "models from code": no pickles).

Artifacts: `checkpoint` (safetensors + config.json) and `vocabulary` (token_vocabulary.json).
`predict(pd.DataFrame({"n_patients": [10], "seed": [0]}))` returns the synthetic visits table;
the full cohort is available from `generate_cohort`.
"""

from __future__ import annotations

import mlflow
import pandas as pd


class SynEHRgyGenerator(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from synehrgy_assets.core.model import load_checkpoint, read_checkpoint_config
        from synehrgy_assets.core.tokens import TokenVocabulary

        self.model = load_checkpoint(context.artifacts["checkpoint"], device="cpu")
        extra = read_checkpoint_config(context.artifacts["checkpoint"]).get("extra", {})
        self.max_tokens_per_patient = extra.get("max_tokens_per_patient")
        self.vocabulary = TokenVocabulary.from_json(context.artifacts["vocabulary"])

    def generate_cohort(self, n_patients: int, seed: int = 0, temperature: float = 1.0):
        from synehrgy_assets.core.generation import generate_cohort

        cohort, _report, _result = generate_cohort(
            self.model, self.vocabulary, n_patients=n_patients, seed=seed, temperature=temperature,
            max_tokens_per_patient=self.max_tokens_per_patient,
        )
        return cohort

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        n = int(model_input["n_patients"].iloc[0])
        seed = int(model_input["seed"].iloc[0]) if "seed" in model_input else 0
        return self.generate_cohort(n, seed).visits


mlflow.models.set_model(SynEHRgyGenerator())
