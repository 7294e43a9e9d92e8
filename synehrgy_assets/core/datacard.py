"""Datacards: the Markdown that goes into the MLflow registry descriptions of a release and of its
generator (what it is, what made it, its gate results, how to pull it).

Plain Python. Only synthetic-side facts and gate verdicts go in (ids, versions, counts of synthetic
rows, PASSED/FAILED with the gate's reason): never a real patient row or an individual real value.
"""

from __future__ import annotations

import math
from typing import Mapping

PATIENT_RULES_GATE = "patient_rules_gate"

RELEASE_FORMATS = {
    "tables/": "Parquet: the MIMIC-III-shaped tables (PATIENTS, ADMISSIONS, ICUSTAYS, DIAGNOSES_ICD, "
    "PROCEDURES_ICD, CHARTEVENTS, LABEVENTS, D_*) and the marts-shaped ones (visits, visit_codes, "
    "visit_phenotypes, measurements)",
    "mimic_csv/": "the MIMIC-III v1.4 CSV layout (`TABLE.csv.gz`, lowercase headers as in the demo): existing "
    "MIMIC code and this project's dbt staging read it like a MIMIC folder",
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
) -> str:
    """The release's card. `cohort`: cohort_id, patients, visits, seed, temperature, top_k, top_p, valid
    sequences; `generator`: name, version, mlflow_run_id, vocabulary_version; `data_versions`: named ids
    of what the generator was trained on (e.g. the staging build); `contents`: rows per released file."""
    gen_name, gen_version = generator.get("name", ""), generator.get("version")
    status = "PASSED" if passed else "FAILED"
    lines = [
        f"# {release_name}" + (f" v{release_version}" if release_version else ""),
        "",
        "**What it is.** A synthetic MIMIC-III cohort made by a SynEHRgy GPT generator (synehrgy): ICU stays "
        "with covariates, ICD-9 diagnoses and procedures, vitals and labs. Every row is synthetic; no real "
        "patient row is part of it.",
        "",
        f"**Validation: {status}** ({sum(1 for g in gates.values() if g.get('passed'))} of {len(gates)} gates "
        f"passed; alias `champion` moves only when all pass).",
        "",
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
        "## Gate results",
        "",
        *_gate_lines(gates),
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
) -> str:
    """The generator's card: what it is, what it was trained on, how to generate with it and (once a
    release was made from it) that release's gate results."""
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
    ]
    return "\n".join(lines) + "\n"
