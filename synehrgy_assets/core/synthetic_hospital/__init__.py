"""A built-in synthetic hospital that writes raw MIMIC-III v1.4 tables.

It is the project's default data source (no real data needed) and its scale generator: every
step is vectorized numpy, patients are generated in chunks and each table is streamed to its
CSV (optionally gzip) file, so memory stays bounded whatever the size.

Modules: `config` (settings and summary), `model` (clinical clusters, background codes,
administrative vocabularies), `structure` (patients, admissions, ICU stays, ICD-9 codes),
`chartevents` and `labevents` (the measurements), `tables` (the structural tables as writer
input) and `generate` (chunking, writing, the command line). What it shares with the decoder
lives outside the package: the table schemas and the CSV writer in `core/mimic_tables.py`, the
item catalogue, the built-in ICD-9 codes and the dictionary tables in `core/mimic_dictionaries.py`.

Nothing here is real patient data: every row comes from the random model.
"""

from synehrgy_assets.core.synthetic_hospital.arrays import NO_TIME
from synehrgy_assets.core.synthetic_hospital.config import DEFAULT_CHART_DENSITY, HospitalConfig, HospitalSummary
from synehrgy_assets.core.synthetic_hospital.generate import generate_hospital, main

__all__ = ["DEFAULT_CHART_DENSITY", "NO_TIME", "HospitalConfig", "HospitalSummary", "generate_hospital", "main"]
