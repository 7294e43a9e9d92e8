"""The source of a generator's training data as an MLflow `DatasetSource`: what it is (the built-in
simulated hospital or a MIMIC-III folder), the folder's name and a fingerprint of its files. It
cannot be loaded: the rows stay in the workspace that trained the generator."""

from __future__ import annotations

from typing import Any

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source


class TrainingDataSource(DatasetSource):
    def __init__(self, kind: str, folder: str, fingerprint: str):
        self.kind, self.folder, self.fingerprint = kind, folder, fingerprint

    @staticmethod
    def _get_source_type() -> str:
        return "synehrgy_training_data"

    def load(self, **kwargs):
        raise NotImplementedError(
            f"{self.kind} {self.folder!r}: the training rows stay in the workspace that trained the generator")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> "TrainingDataSource":
        raise NotImplementedError

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "folder": self.folder, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, source_dict: dict) -> "TrainingDataSource":
        return cls(source_dict["kind"], source_dict["folder"], source_dict["fingerprint"])


register_dataset_source(TrainingDataSource)
