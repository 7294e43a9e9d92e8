"""What a generator was trained on, told without a real row: which source (the built-in simulated
hospital or a real MIMIC-III folder, by its name only), fingerprints of the raw files and of the
train token sequences, and the train patient count where it is at least 10.

These facts travel as MLflow model-version tags (`TrainingData.tags`), as the run's logged dataset
(mlflow_models.training_dataset) and into the datacards; `from_tags` reads them back, so the release
describes the data its generator version recorded rather than whatever the workspace holds now.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from synehrgy_assets.core.privacy_aggregates import DEFAULT_MIN_PATIENTS

SYNTHETIC_HOSPITAL = "synthetic hospital"
MIMIC_FOLDER = "MIMIC-III folder"
# The folder the built-in simulated hospital is written to starts with this (resources.MimicSourceResource
# names it; a test keeps the two in step).
SYNTHETIC_HOSPITAL_PREFIX = "synthetic_hospital_"
TAG_PREFIX = "training_data."
UNKNOWN = "unknown"


def patient_count(n) -> str:
    """A count that may leave the workspace: 1 to 9 are written "< 10" (0 singles out no one)."""
    if n is None:
        return UNKNOWN
    n = int(n)
    return f"< {DEFAULT_MIN_PATIENTS}" if 0 < n < DEFAULT_MIN_PATIENTS else f"{n:,}"


def source_kind(source_dir: str | Path) -> str:
    """`synthetic hospital` for a folder the built-in simulator wrote, else `MIMIC-III folder`."""
    return SYNTHETIC_HOSPITAL if Path(str(source_dir)).name.startswith(SYNTHETIC_HOSPITAL_PREFIX) else MIMIC_FOLDER


def sequences_digest(arrays: Mapping[str, object], vocabulary_version: str) -> str:
    """sha256 (16 hex digits) of the vocabulary version and the bytes of each token array (in name
    order): changes whenever the encoded training data does, reveals nothing of it."""
    import numpy as np

    h = hashlib.sha256(f"vocabulary:{vocabulary_version}\n".encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{array.dtype.str}:{array.shape}\n".encode())
        flat = array.reshape(-1)
        step = max(1, (1 << 24) // max(array.itemsize, 1))  # 16 MB at a time: memory-mapped arrays stay on disk
        for start in range(0, len(flat), step):
            h.update(flat[start:start + step].tobytes())
    return h.hexdigest()[:16]


def vocabulary_contents(vocab) -> dict:
    """What the generator's vocabulary (fitted on the train split) holds, by kind: the codes and
    variables it can write. A kind with none (no diagnosis codes) is one the training data lacked or
    held too rarely to keep; the catch-all `UNK` tokens are not counted."""
    import numpy as np

    from synehrgy_assets.core.tokens.grammar import TokenType

    types = np.asarray(vocab.token_types)

    def names(token_type) -> list[str]:
        tokens = [vocab.tokens[i] for i in np.flatnonzero(types == token_type)]
        return [t.split("//", 1)[-1] for t in tokens if not t.endswith("//UNK")]

    return {"diagnosis codes": len(names(TokenType.DX)), "procedure codes": len(names(TokenType.PX)),
            "phenotypes": len(names(TokenType.PHENOTYPE)), "measured variables": len(vocab.variables),
            "ICU databases": sorted(names(TokenType.ICU_DATABASE))}


@dataclass(frozen=True)
class TrainingData:
    kind: str                  # SYNTHETIC_HOSPITAL or MIMIC_FOLDER
    folder: str                # the raw folder's name (never its path)
    source_fingerprint: str    # the staging build's fingerprint of the raw files (names, sizes, mtimes)
    digest: str                # sequences_digest of the train token sequences
    vocabulary_version: str
    n_train_patients: int | None
    staging_build_id: str = ""
    vocabulary: Mapping = field(default_factory=dict)  # vocabulary_contents

    @property
    def dataset_name(self) -> str:
        return f"train split of {self.kind} {self.folder}"

    def describe(self) -> str:
        """One line for a datacard."""
        what = ("the built-in simulated hospital (no real patient)" if self.kind == SYNTHETIC_HOSPITAL
                else "a real MIMIC-III folder")
        return (f"{what}: folder `{self.folder}`, raw files fingerprint `{self.source_fingerprint}`; "
                f"train split: {patient_count(self.n_train_patients)} patients, token sequences digest "
                f"`{self.digest}`, vocabulary `{self.vocabulary_version}`")

    def tags(self) -> dict[str, str]:
        """Model-version tags; the train patient count only where it is at least 10."""
        tags = {"data_source": self.kind, f"{TAG_PREFIX}folder": self.folder,
                f"{TAG_PREFIX}source_fingerprint": self.source_fingerprint, f"{TAG_PREFIX}digest": self.digest,
                "vocabulary_version": self.vocabulary_version}
        if self.staging_build_id:
            tags[f"{TAG_PREFIX}staging_build_id"] = self.staging_build_id
        if self.vocabulary:
            tags[f"{TAG_PREFIX}vocabulary"] = json.dumps(self.vocabulary, sort_keys=True)
        if self.n_train_patients is not None:
            tags["n_train_patients"] = patient_count(self.n_train_patients).replace(",", "")
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> "TrainingData | None":
        """The facts a generator version recorded (`tags`); None when it recorded none."""
        if "data_source" not in tags or f"{TAG_PREFIX}digest" not in tags:
            return None
        n = tags.get("n_train_patients", "")
        return cls(tags["data_source"], tags.get(f"{TAG_PREFIX}folder", UNKNOWN),
                   tags.get(f"{TAG_PREFIX}source_fingerprint", UNKNOWN), tags[f"{TAG_PREFIX}digest"],
                   tags.get("vocabulary_version", UNKNOWN),
                   int(n) if n.isdigit() else (0 if n.startswith("<") else None),
                   tags.get(f"{TAG_PREFIX}staging_build_id", ""),
                   json.loads(tags.get(f"{TAG_PREFIX}vocabulary") or "{}"))
