"""Datacards: the Markdown that goes into the MLflow registry descriptions of a release and of its
generator (what it is, what made it, its gate results, how to pull it).

Plain Python. Only synthetic-side facts and gate verdicts go in (ids, versions, counts of synthetic
rows, PASSED/FAILED with the gate's reason): never a real patient row or an individual real value.
"""

from __future__ import annotations

import math
from typing import Mapping

from synehrgy_assets.core.training_data import SYNTHETIC_HOSPITAL, TrainingData, patient_count

PATIENT_RULES_GATE = "patient_rules_gate"
ICU_DATABASES = ("carevue", "metavision")  # MIMIC-III's two ICU information systems

INTENDED_USE_SHORT = ("method development, teaching and testing of MIMIC-III code; not clinical decisions, "
                      "not estimates about real patients")
INTENDED_USE = [
    "- **For:** developing and testing code written for MIMIC-III or MEDS, teaching, and methods research on "
    "synthetic EHRs, where this card's gate figures say how close the synthetic patients come to the real ones.",
    "- **Not for:** clinical decisions, or estimates about real patients or hospitals (effects the generator "
    "did not learn are absent or distorted: compare the gate figures), or any attempt to re-identify the "
    "patients the generator was trained on.",
]

RELEASE_FORMATS = {
    "tables/": "Parquet: the MIMIC-III-shaped tables (PATIENTS, ADMISSIONS, ICUSTAYS, DIAGNOSES_ICD, "
    "PROCEDURES_ICD, CHARTEVENTS, LABEVENTS, D_*) and the marts-shaped ones (visits, visit_codes, "
    "visit_phenotypes, measurements)",
    "mimic_csv/": "the MIMIC-III v1.4 CSV layout of the full release (`TABLE.csv.gz`, UPPERCASE quoted headers, all "
    "26 tables in the official column order; tables nothing generates are header-only): existing MIMIC-III code "
    "and this project's dbt staging read it like a MIMIC folder",
    "meds/": "MEDS 0.4 (data/*.parquet, metadata/codes.parquet, subject_splits.parquet, dataset.json)",
    "datacard.md": "this card",
}


def _cell(value) -> str:
    """A Markdown table cell: `|` escaped, one line."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _figure(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "held back / n/a"
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else _cell(value)


def _gate_lines(gates: Mapping[str, Mapping]) -> list[str]:
    """The verdicts (every failing quantity is in the reason), then each gate's compared figures,
    the patient rule table and the thresholds the gates used, where the verdicts carry them."""
    lines = ["| gate | result | reason |", "|---|---|---|"]
    for name, verdict in sorted(gates.items()):
        result = "PASSED" if verdict.get("passed") else "FAILED"
        lines.append(f"| `{name}` | {result} | {_cell(verdict.get('reason', ''))} |")
    figures = [(name, row) for name, verdict in sorted(gates.items()) if name != PATIENT_RULES_GATE
               for row in verdict.get("rows") or []]
    if figures:
        lines += ["", "### Gate figures", "", "| gate | quantity | measured | real-test baseline | threshold | ok |",
                  "|---|---|---:|---:|---:|---|"]
        lines += [f"| `{name}` | {_cell(r.get('quantity', ''))} | {_figure(r.get('measured'))} | "
                  f"{_figure(r.get('real_test_baseline'))} | {_cell(r.get('op', ''))} {_figure(r.get('threshold'))} | "
                  f"{'yes' if r.get('ok') else '**no**'} |" for name, r in figures]
    rules = (gates.get(PATIENT_RULES_GATE) or {}).get("rows") or []
    if rules:
        lines += ["", "### Patient rules", "",
                  "Share of patients breaking each rule, synthetic beside the real test patients (hard rules: none "
                  "allowed; real figures resting on fewer than 10 patients are held back).", "",
                  "| rule | synthetic | real test | limit | ok |", "|---|---:|---:|---:|---|"]
        lines += [f"| {_cell(r.get('quantity', '').replace(': share of patients', ''))} | {_figure(r.get('measured'))} | "
                  f"{_figure(r.get('real_test_baseline'))} | {_figure(r.get('threshold'))} | "
                  f"{'yes' if r.get('ok') else '**no**'} |" for r in rules]
    thresholds = next((v["thresholds"] for v in gates.values() if v.get("thresholds")), None)
    if thresholds:
        lines += ["", "### Thresholds", "", "| threshold | value |", "|---|---:|",
                  *[f"| `{k}` | {_figure(v)} |" for k, v in sorted(thresholds.items())]]
    return lines


def registry_access(tracking_uri: str) -> tuple[str, str, str]:
    """How a snippet reaches the registry that holds the models: (a note for the reader, the CLI
    option, the Python line that points MLflow at it). A workspace's own store (`sqlite:///.../mlflow.db`)
    is named by no path at all (the card would hold the absolute path of the workspace that wrote
    it, wrong once that is moved or copied): the CLI and `open_workspace` find it from
    $SYNEHRGY_HOME, else ./.synehrgy, and point it at where the workspace is now. A server is named
    by its URI."""
    if tracking_uri.startswith("sqlite:///") and tracking_uri.rstrip("/").endswith("/mlflow.db"):
        note = ("Run from the synehrgy repository, with `SYNEHRGY_HOME` set to the folder of the workspace "
                "that made this (default `./.synehrgy`), wherever it is now: a moved or copied workspace reads "
                "its own files.")
        return (note, "",
                "from synehrgy_assets.consumer import open_workspace\n"
                "mlflow.set_tracking_uri(open_workspace())  # or open_workspace(\"path/to/workspace\")")
    return ("", f" --tracking-uri {tracking_uri}", f'mlflow.set_tracking_uri("{tracking_uri}")')


def cohort_coverage(tables: Mapping, contents: Mapping[str, int] | None = None) -> dict:
    """What a synthetic cohort holds, from its tables (`visits`, `visit_codes`, `visit_phenotypes`,
    `ICUSTAYS`, `CHARTEVENTS`, `LABEVENTS`; a missing table counts as empty): patients, ICU stays and
    their ICU databases, in-hospital deaths, and per kind of content the patients with it, rows and
    distinct codes or items; and the MIMIC-III CSV tables `contents` lists with no rows."""
    import pandas as pd

    def frame(name: str) -> pd.DataFrame:
        return tables.get(name) if tables.get(name) is not None else pd.DataFrame()

    visits, codes, stays = frame("visits"), frame("visit_codes"), frame("ICUSTAYS")

    def kind(rows: pd.DataFrame, distinct: str | None) -> dict:
        return {"patients": int(rows["subject_id"].nunique()) if len(rows) else 0, "rows": int(len(rows)),
                "distinct": int(rows[distinct].nunique()) if distinct and len(rows) else 0}

    code_type = codes["code_type"] if len(codes) else pd.Series(dtype=str)
    databases = visits["icu_database"].dropna().astype(str) if "icu_database" in visits else pd.Series(dtype=str)
    transfers = None
    if {"first_careunit", "last_careunit"} <= set(stays.columns):
        transfers = int((stays["first_careunit"].astype(str) != stays["last_careunit"].astype(str)).sum())
    return {
        "patients": int(visits["subject_id"].nunique()) if len(visits) else 0,
        "icu_stays": int(len(visits)),
        "icu_databases": sorted(set(databases)),
        "died_in_hospital": int(visits.loc[visits["mortality_inhospital"] == 1, "subject_id"].nunique())
        if len(visits) else 0,
        "stays_with_a_care_unit_transfer": transfers,
        "kinds": {
            "ICD-9 diagnoses": kind(codes[code_type == "diagnosis"] if len(codes) else codes, "icd9_code"),
            "ICD-9 procedures": kind(codes[code_type == "procedure"] if len(codes) else codes, "icd9_code"),
            "phenotypes": kind(frame("visit_phenotypes"), "phenotype"),
            "chart events (vitals and other bedside measurements)": kind(frame("CHARTEVENTS"), "itemid"),
            "lab events": kind(frame("LABEVENTS"), "itemid"),
        },
        "header_only_tables": sorted(name.split("/")[-1].split(".")[0] for name, rows in (contents or {}).items()
                                     if name.startswith("mimic_csv/") and rows == 0),
    }


def _what_it_holds(coverage: Mapping | None) -> str:
    """The kinds of content a cohort has, for the card's first sentence."""
    if not coverage:
        return "ICU stays with covariates"
    held = [k.split(" (")[0] for k, v in coverage["kinds"].items() if v["rows"]]
    return "ICU stays with covariates" + ("".join(f", {k}" for k in held) if held else " and nothing else")


def _coverage_lines(coverage: Mapping) -> list[str]:
    """The cohort's contents and what it lacks, every patient count under 10 written "< 10"."""
    databases = coverage["icu_databases"]
    lines = ["## What the cohort holds and lacks", "",
             f"{patient_count(coverage['patients'])} synthetic patients, {patient_count(coverage['icu_stays'])} "
             "ICU stays "
             f"({', '.join(f'`{d}`' for d in databases) or 'no ICU database'}); "
             f"{patient_count(coverage['died_in_hospital'])} patients died in hospital.", "",
             "| content | patients with it | rows | distinct codes / items |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {patient_count(v['patients'])} | {patient_count(v['rows'])} | {v['distinct']:,} |"
              for k, v in coverage["kinds"].items()]
    lacks = [f"no {k.split(' (')[0]}" for k, v in coverage["kinds"].items() if v["rows"] == 0]
    missing = [d for d in ICU_DATABASES if d not in databases]
    if databases and missing:
        lacks.append(f"ICU stays of one ICU database only (`{'`, `'.join(databases)}`): no "
                     f"{', '.join(f'`{d}`' for d in missing)} stays")
    if coverage.get("stays_with_a_care_unit_transfer") == 0:
        lacks.append("no transfers between care units (every ICU stay has one care unit)")
    if coverage["header_only_tables"]:
        lacks.append("no rows in " + ", ".join(coverage["header_only_tables"]) + " (header-only in `mimic_csv/`)")
    if lacks:
        lines += ["", "It lacks:", "", *[f"- {item}" for item in lacks]]
    return lines


def _training_lines(training: TrainingData | None) -> list[str]:
    """Where the generator's training data came from and what its vocabulary holds."""
    if training is None:
        return ["## Training data", "", "- not recorded by this generator version (trained before synehrgy recorded "
                "it): unknown whether the simulated hospital or a real MIMIC-III folder"]
    lines = ["## Training data", "", f"- {training.describe()}"]
    vocab = training.vocabulary or {}
    if vocab:
        counts = [f"{vocab[k]:,} {k}" for k in ("diagnosis codes", "procedure codes", "phenotypes",
                                                  "measured variables") if k in vocab]
        dbs = ", ".join(f"`{d}`" for d in vocab.get("ICU databases", [])) or "none"
        lines.append(f"- the generator's vocabulary (fitted on the train split): {', '.join(counts)}; "
                     f"ICU databases {dbs}")
        absent = [k for k in ("diagnosis codes", "procedure codes") if vocab.get(k) == 0]
        if absent:
            lines.append(f"- the training data had no {' and no '.join(absent)} (or none held by enough patients to "
                         "keep): the generator cannot write them")
    return lines


def _licence_lines(training: TrainingData | None) -> list[str]:
    lines = ["## Intended use", "", *INTENDED_USE, "", "## Licence", "",
             "- code: MIT (the synehrgy repository's LICENSE)"]
    if training is not None and training.kind == SYNTHETIC_HOSPITAL:
        lines.append("- data: generated from the built-in simulated hospital only; no real patient's data went "
                     "into the generator, so nothing beyond the code's licence applies")
    else:
        folder = f"`{training.folder}`" if training is not None else "a MIMIC-III folder (unrecorded which)"
        lines.append(f"- data: the generator learned from {folder}. Its licence governs what was derived from it: "
                     "the full MIMIC-III v1.4 is under the PhysioNet Credentialed Health Data License 1.5.0 (share the "
                     "generator and its releases only as that licence and its data use agreement allow), the "
                     "open demo under the Open Database License v1.0")
    return lines


def _source_phrase(training: TrainingData | None) -> str:
    if training is None:
        return "data its generator did not record (unknown: simulated or real)"
    if training.kind == SYNTHETIC_HOSPITAL:
        return f"the built-in simulated hospital (`{training.folder}`), not on real patients"
    return f"a real MIMIC-III folder, `{training.folder}` (fingerprint `{training.source_fingerprint}`)"


def _number(version: str) -> int:
    return int(version) if version.isdigit() else -1


def champion_line(release_name: str, champion: str | None, versions: Mapping[str, str] | None = None) -> str:
    """Which version `@champion` names, or why none does and which versions exist (`versions`:
    version -> validation_status)."""
    if champion:
        return f"`@champion` is version {champion}: `models:/{release_name}@champion`."
    # MLflow gives versions as int or str depending on the store: compare them as numbers.
    versions = {str(v): status for v, status in (versions or {}).items()}
    shown = ", ".join(f"{v} ({status})" for v, status in sorted(versions.items(), key=lambda kv: _number(kv[0])))
    newest = max(versions or {"?": ""}, key=_number)
    return (f"No version is `@champion`: `champion` moves only when a release passes every gate, and none has "
            f"(versions: {shown or 'none'}). `models:/{release_name}@champion` fails with \"alias not found\"; "
            f"pull a version instead, e.g. `models:/{release_name}/{newest}`.")


def pull_instructions(tracking_uri: str, release_name: str, release_version: str | None,
                      generator_name: str, generator_version: str | None) -> list[str]:
    rel_uri = f"models:/{release_name}/{release_version}" if release_version else f"models:/{release_name}@champion"
    gen_uri = f"models:/{generator_name}/{generator_version}" if generator_version else f"models:/{generator_name}@champion"
    note, option, point = registry_access(tracking_uri)
    return [
        "## How to pull it",
        "",
        *([note, ""] if note else []),
        "```bash",
        f".venv/bin/python -m orchestration.cli pull --model {rel_uri}{option} --out ./release",
        "# ./release/artifacts/tables/*.parquet, ./release/artifacts/mimic_csv/*.csv.gz, ./release/artifacts/meds/",
        "# or generate new patients from the generator that made it (docs/consumers.md):",
        f".venv/bin/python -m orchestration.cli generate --model {gen_uri}{option} "
        "-n 1000 --seed 0 --format mimic-csv --out ./synthetic",
        "```",
        "",
        "```python",
        "import mlflow, pandas as pd",
        *point.split("\n"),
        f'path = mlflow.artifacts.download_artifacts("{rel_uri}")',
        "# path/artifacts/tables/*.parquet, path/artifacts/mimic_csv/*.csv.gz, path/artifacts/meds/",
        f'release = mlflow.pyfunc.load_model("{rel_uri}")',
        'patients = release.predict(pd.DataFrame({"table": ["PATIENTS"]}))',
        "```",
    ]


def release_datacard(
    *,
    release_name: str,
    release_version: str | None,
    tracking_uri: str,
    passed: bool,
    gates: Mapping[str, Mapping],
    cohort: Mapping,
    generator: Mapping,
    data_versions: Mapping[str, str],
    contents: Mapping[str, int] | None = None,
    coverage: Mapping | None = None,
    training: TrainingData | None = None,
    champion: str | None = None,
) -> str:
    """The release's card. `cohort`: cohort_id, patients, visits, seed, temperature, top_k, top_p, valid
    sequences; `generator`: name, version, mlflow_run_id, vocabulary_version; `data_versions`: named ids
    of what the generator was trained on (e.g. the staging build); `contents`: rows per released file;
    `coverage`: `cohort_coverage` of its tables; `training`: what its generator recorded of its training
    data (None: nothing recorded); `champion`: `champion_line`, for the registry's description."""
    gen_name, gen_version = generator.get("name", ""), generator.get("version")
    status = "PASSED" if passed else "FAILED"
    lines = [
        f"# {release_name}" + (f" v{release_version}" if release_version else ""),
        "",
        f"**What it is.** A synthetic MIMIC-III cohort made by a SynEHRgy GPT generator (synehrgy): "
        f"{_what_it_holds(coverage)}. Every row is synthetic; no real patient row is part of it. "
        f"Trained on {_source_phrase(training)}.",
        "",
        f"**Validation: {status}** ({sum(1 for g in gates.values() if g.get('passed'))} of {len(gates)} gates "
        f"passed; alias `champion` moves only when all pass).",
        "",
        *([champion, ""] if champion else []),
        "## What made it",
        "",
        f"- generator: `{gen_name}` version {gen_version} (MLflow run `{generator.get('mlflow_run_id', '?')}`), "
        f"vocabulary `{generator.get('vocabulary_version', '?')}`",
        f"- cohort: `{cohort.get('cohort_id')}`: {cohort.get('patients', '?')} patients, {cohort.get('visits', '?')} "
        f"visits ({cohort.get('valid_sequences', '?')} of {cohort.get('sequences', '?')} sampled sequences decoded)",
        f"- sampling: seed {cohort.get('seed')}, temperature {cohort.get('temperature')}, top_k "
        f"{cohort.get('top_k') or 'off'}, top_p {cohort.get('top_p') or 'off'}",
        *[f"- {name}: `{value}`" for name, value in data_versions.items()],
        "",
        *_training_lines(training),
        "",
        *(_coverage_lines(coverage) + [""] if coverage else []),
        "## Gate results",
        "",
        *_gate_lines(gates),
        "",
        *_licence_lines(training),
        "",
        "## Contents",
        "",
        *[f"- `{name}`: {what}" for name, what in RELEASE_FORMATS.items()],
    ]
    if contents:
        lines += ["", "| file | rows |", "|---|---:|", *[f"| `{k}` | {v:,} |" for k, v in sorted(contents.items())]]
    lines += ["", *pull_instructions(tracking_uri, release_name, release_version, gen_name, gen_version)]
    return "\n".join(lines) + "\n"


def generator_datacard(
    *,
    generator_name: str,
    generator_version: str | None,
    tracking_uri: str,
    release_name: str,
    vocabulary_version: str | None = None,
    mlflow_run_id: str | None = None,
    data_versions: Mapping[str, str] | None = None,
    release: Mapping | None = None,
    gates: Mapping[str, Mapping] | None = None,
    training: TrainingData | None = None,
) -> str:
    """The generator's card: what it is, what it was trained on (`training`, what the version recorded),
    how to generate with it and (once a release was made from it) that release's gate results."""
    uri = f"models:/{generator_name}/{generator_version}" if generator_version else f"models:/{generator_name}@champion"
    lines = [
        f"# {generator_name}" + (f" v{generator_version}" if generator_version else ""),
        "",
        "**What it is.** A SynEHRgy GPT (decoder-only transformer over tokens of covariates, ICD-9 codes and "
        "irregularly sampled vitals and labs) that generates synthetic MIMIC-III patients. Logged as an MLflow "
        "pyfunc (artifacts: a safetensors checkpoint and the token vocabulary; no pickles).",
        "",
    ]
    if generator_version:
        lines += [
            "## What made it",
            "",
            f"- MLflow run `{mlflow_run_id or '?'}`, vocabulary `{vocabulary_version or '?'}`",
            *[f"- {name}: `{value}`" for name, value in (data_versions or {}).items()],
            "",
            *_training_lines(training),
            "",
        ]
    if release is not None and gates is not None:
        passed = all(g.get("passed") for g in gates.values())
        lines += [
            f"## Latest release made from it: `{release_name}` v{release.get('version')} "
            f"({'PASSED' if passed else 'FAILED'})",
            "",
            f"cohort `{release.get('cohort_id')}`",
            "",
            *_gate_lines(gates),
            "",
        ]
    note, option, point = registry_access(tracking_uri)
    lines += [
        "## How to generate",
        "",
        *([note, ""] if note else []),
        "```bash",
        f".venv/bin/python -m orchestration.cli generate --model {uri}{option} "
        "-n 1000 --seed 0 --device auto --format parquet --out ./synthetic",
        "```",
        "",
        "```python",
        "import mlflow, pandas as pd",
        *point.split("\n"),
        f'gen = mlflow.pyfunc.load_model("{uri}")',
        'visits = gen.predict(pd.DataFrame({"n_patients": [100], "seed": [0], "table": ["visits"]}))',
        "tables = gen.unwrap_python_model().generate_tables(100, seed=0)  # every table, as the CLI writes",
        "```",
        "",
        *_licence_lines(training),
    ]
    return "\n".join(lines) + "\n"
