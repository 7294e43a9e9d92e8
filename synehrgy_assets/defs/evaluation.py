"""Stage 5: evaluate the synthetic cohort against real held-out patients (fidelity, utility, privacy)."""


import json
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from synehrgy_assets.core.output_dirs import staged_dir
from synehrgy_assets.defs._metadata import gate_figures, md_escape, md_table, png_markdown
from synehrgy_assets.defs.gates import ReleaseGateResource, write_verdict
from synehrgy_assets.defs.synthesis import load_synthetic_cohort, synthetic_cohort
from synehrgy_assets.defs.tokens import (
    REAL_MART_DEPS,
    SPLITS,
    load_split,
    patient_split,
    split_subject_ids,
    token_sequences,
)
from synehrgy_assets.resources import MimicSourceResource, MlflowResource, WorkspaceResource, write_json


class EvaluationConfig(dg.Config):
    max_patients: int = Field(default=5000, description="Cap per set (seeded sample) to bound the cost.")
    seed: int = Field(default=0, description="Seed of the patient samples, the utility models and the attacks.")


def privacy_inputs(workspace: WorkspaceResource, provenance: dict):
    """What the privacy attacks need beside the cohorts: the token sequences of every real train and
    real test patient and of every generated synthetic patient (`TokenStreams`, or None and the
    reason when they cannot be compared), and the real sampling fraction, train patients / all
    patients of the split (the member share of the membership attack sets)."""
    import numpy as np

    from synehrgy_assets.core.metrics import TokenStreams
    from synehrgy_assets.core.tokens import TokenVocabulary
    from synehrgy_assets.core.tokens.encoding import TokenSequences

    with workspace.connect(read_only=True) as con:
        counts = {split: len(split_subject_ids(con, split)) for split in SPLITS}
    member_share = counts["train"] / max(sum(counts.values()), 1)
    try:
        vocab = TokenVocabulary.from_json(workspace.layout.vocabulary)
        real = {split: TokenSequences.load(workspace.layout.tokens / split) for split in ("train", "test")}
        seq_dir = workspace.layout.synthetic_sequences
        synthetic = TokenSequences(np.load(seq_dir / "tokens.npy", mmap_mode="r"),
                                   np.load(seq_dir / "offsets.npy"), np.zeros(0, np.int64), np.zeros(0, np.int64),
                                   vocab_version=str(provenance.get("vocabulary_version")))
    except (FileNotFoundError, ValueError) as exc:
        return None, f"token sequences unavailable: {exc}", member_share
    versions = {"vocabulary": vocab.version, "real train": real["train"].vocab_version,
                "real test": real["test"].vocab_version, "synthetic": synthetic.vocab_version}
    if len(set(versions.values())) > 1:
        return None, f"token sequences of different vocabularies {versions}: re-materialize them", member_share
    return TokenStreams(real["train"], real["test"], synthetic, vocab.token_types), "", member_share


@dg.asset(
    group_name="evaluation",
    deps=[synthetic_cohort, patient_split, token_sequences, *REAL_MART_DEPS],
    kinds={"mlflow"},
    description=(
        "Fidelity (ICD prevalence correlation, per-variable marginal distances), utility (mortality AUROC: "
        "train-on-synthetic vs train-on-real, both tested on real held-out patients) and privacy "
        "(token-level copies and n-grams shared with train, membership inference by distance and density ratio, "
        "attribute inference, distance to closest record; each beside real held-out patients). Aggregates only; "
        "logged to MLflow."
    ),
)
def evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    workspace: WorkspaceResource,
    mlflow_tracking: MlflowResource,
    release_gate: ReleaseGateResource,
    mimic_source: MimicSourceResource,
) -> dg.MaterializeResult:
    from synehrgy_assets.core import patient_rules

    started = time.perf_counter()
    real_train = load_split(workspace, "train", config.max_patients, config.seed)
    real_test = load_split(workspace, "test", config.max_patients, config.seed)
    synthetic = load_synthetic_cohort(workspace)
    provenance = json.loads((workspace.layout.synthetic_cohort / "provenance.json").read_text())
    report, generation = evaluation_report(context, workspace, config.seed, real_train, real_test, synthetic,
                                           provenance)
    held, public = held_back_and_public(context, report.metrics, real_train, real_test)
    thresholds = release_gate.thresholds()
    rule_counts = patient_rule_counts(context, workspace, mimic_source, report.errors)
    targets = report.tables["quality_targets"] = _targets(report.metrics, generation, thresholds, held)
    n_met = int(targets["met"].sum())
    context.log.info(f"quality targets met: {n_met}/{len(targets)}")

    gates, gates_md = _gate_verdicts(context, workspace, release_gate, report, held, rule_counts)
    n_passed = sum(bool(v.passed) for v in gates)
    rules_md = (patient_rules.markdown_table(patient_rules.rule_table(rule_counts, thresholds))
                if rule_counts is not None else f"not measured: {report.errors.get('patient_rules', '')}")

    out, plots = _write_evaluation(workspace, report, public, held, gates_md, targets, rules_md, rule_counts,
                                   thresholds, provenance)

    run = _log_run(context, mlflow_tracking, provenance, {
        "real_train_patients": real_train.n_patients, "real_test_patients": real_test.n_patients,
        "synthetic_patients": synthetic.n_patients, "seed": config.seed}, public, out)
    panel_metadata = utility_panel_metadata(context, report.tables)
    # Curated: verdicts, targets and plots first; every figure in the linked report and MLflow run.
    run_url = mlflow_tracking.run_url(run.info.run_id, run.info.experiment_id)
    return dg.MaterializeResult(
        metadata={
            "release_gates_passed": f"{n_passed}/{len(gates)}",
            "quality_targets_met": f"{n_met}/{len(targets)}",
            "release_gates": dg.MetadataValue.md(gates_md),
            "quality_targets": dg.MetadataValue.md(md_table(targets)),
            **{f"plot/{name}": png_markdown(png, name) for name, png in plots.items()},
            "patient_rules": dg.MetadataValue.md(rules_md),
            **panel_metadata,
            "gate_thresholds": dg.MetadataValue.json(thresholds.as_dict()),
            "mlflow_run": run_url,
            "mlflow_artifacts": dg.MetadataValue.url(f"{run_url.value}/artifacts"),
            "full_report": dg.MetadataValue.path(str(out / "report.md")),
            "metrics_json": dg.MetadataValue.path(str(out / "metrics.json")),
            "metrics_published": len(public),
            "metrics_held_back": len(held),
            "errors": dg.MetadataValue.json(report.errors),
            "synthetic_patients": int(synthetic.n_patients),
            "cohort_id": str(provenance.get("cohort_id")),
            "model_version": str(provenance["model_version"]),
            "mlflow_run_id": run.info.run_id,
            "seconds": round(time.perf_counter() - started, 1),
        }
    )


def evaluation_report(context, workspace: WorkspaceResource, seed: int, real_train, real_test, synthetic,
                      provenance: dict):
    """The metrics of the synthetic cohort against the real samples (privacy on the token sequences
    too), each one that could not be computed logged, and the generation's own figures added as
    `generation/*`. Returns the report and those generation figures."""
    from synehrgy_assets.core.metrics import evaluate

    streams, streams_error, member_share = privacy_inputs(workspace, provenance)
    report = evaluate(real_train, real_test, synthetic, seed=seed,  # variables: the dbt seed
                      tokens=streams, member_share=member_share)
    if streams is None:  # the copy gates then fail as "not measured"
        report.errors["privacy/tokens"] = streams_error
    _say_metric_errors(context, workspace, report)
    generation = generation_metrics(provenance)
    report.metrics.update({f"generation/{k}": float(v) for k, v in generation.items()})
    return report, generation


def held_back_and_public(context, metrics: dict, real_train, real_test) -> tuple[dict, dict]:
    """(held back, published) metrics, each held-back one logged with its reason. The gates judge every
    metric (kept in the private folder); what leaves holds no small cell."""
    from synehrgy_assets.core.metrics.publish import publishable, small_cell_metrics

    held = small_cell_metrics(real_train, real_test)
    public = publishable(metrics, held)
    for key, why in sorted(held.items()):
        context.log.info(f"metric {key} is kept in the workspace, not published: {why}")
    return held, public


def generation_metrics(provenance: dict) -> dict[str, float]:
    """The generation's own figures from the cohort's provenance: forced closures and decode validity."""
    decode_report = provenance.get("decode_report", {})
    return {
        "forced_closure_rate": provenance.get("forced_closure_rate", float("nan")),
        "validity_rate": decode_report.get("n_valid", 0) / max(decode_report.get("n_sequences", 0), 1),
    }


def _targets(metrics: dict, generation: dict, thresholds, held: dict):
    """The quality targets; the mortality-rate figures blanked when they are held back (small cells)."""
    from synehrgy_assets.core.quality_targets import quality_targets

    targets = quality_targets(metrics, generation, thresholds)
    targets.loc[targets["target"].str.startswith("mortality rate") &
                bool(held.keys() & {"fidelity/mortality_rate_abs_diff", "fidelity_baseline/mortality_rate_abs_diff"}),
                ["measured", "real_test_baseline"]] = float("nan")
    return targets


def _log_run(context, mlflow_tracking: MlflowResource, provenance: dict, params: dict, public: dict, out: Path):
    """The evaluation's MLflow run: the sizes, every published metric and the evaluation folder."""
    import mlflow

    with mlflow_tracking.start_run(
        context, run_name="evaluation", tags={"synehrgy.stage": "evaluate", "model_version": str(provenance["model_version"])}
    ) as run:
        mlflow.log_params(params)
        mlflow.log_metrics({k.replace("/", "."): float(v) for k, v in public.items()})
        mlflow.log_artifacts(str(out), artifact_path="evaluation")
    return run


def _say_metric_errors(context, workspace: WorkspaceResource, report) -> None:
    """Log each metric that could not be computed; a dataset without ICD codes is said once (its code
    gates say "not applicable", core/release_gates.py), with the raw code counts in the metrics."""
    from synehrgy_assets.core.release_gates import CODE_TABLE_ROWS, empty_code_tables
    from synehrgy_assets.core.staging_checks import read_audit

    with workspace.connect(read_only=True) as con:
        audit = read_audit(con, missing_ok=True)
    for table, key in CODE_TABLE_ROWS.items() if audit else ():
        code_type = "diagnosis" if table == "DIAGNOSES_ICD" else "procedure"
        report.metrics[key] = float(audit.get(("codes", code_type, "raw"), 0))
    code_words = ("code", "diagnos", "procedure", "phenotype")
    if empty := empty_code_tables(report.metrics):
        n_code = sum(any(w in name for w in code_words) for name in report.errors)
        context.log.warning(f"The dataset has no ICD codes in {' and '.join(empty)}: the code-based metrics "
                            f"({n_code} not computed) and gates report 'not applicable'.")
    for name, error in report.errors.items():
        if not (empty and any(w in name for w in code_words)):  # said once above
            context.log.warning(f"metric {name} could not be computed: {error}")


def _gate_verdicts(context, workspace: WorkspaceResource, release_gate: ReleaseGateResource, report, held: dict,
                   rule_counts) -> tuple[list, str]:
    """The gates as the checks will judge them (same functions and thresholds; the checks are the
    verdicts), and their markdown table."""
    gates = [judge(g, workspace, {"metrics": report.metrics, "held_back": held}, release_gate,
                   tables={**report.tables, "patient_rule_counts": rule_counts})[0]
             for g in _gate_functions()]
    for v in gates:
        if not v.passed:
            context.log.warning(f"gate {v.name} fails: {v.reason}")
    gates_md = "\n".join(["| gate | passed | why |", "|---|---|---|"]
                         + [f"| {v.name} | {'yes' if v.passed else '**no**'} | {md_escape(v.reason)} |" for v in gates])
    return gates, gates_md


def _write_evaluation(workspace: WorkspaceResource, report, public: dict, held: dict, gates_md: str, targets,
                      rules_md: str, rule_counts, thresholds, provenance: dict) -> tuple[Path, dict]:
    """The evaluation folder (plots, tables, report, published metrics), written aside and swapped in
    whole; every metric and the exact rule counts go to the private folder. Returns the folder and
    the plots."""
    out = workspace.layout.evaluation
    with staged_dir(out) as tmp:
        plots = _write_evaluation_files(tmp, workspace, report, public, held, gates_md, targets, rules_md,
                                        rule_counts, thresholds, provenance)
    return out, plots


def _write_evaluation_files(tmp: Path, workspace: WorkspaceResource, report, public: dict, held: dict,
                            gates_md: str, targets, rules_md: str, rule_counts, thresholds, provenance: dict) -> dict:
    from synehrgy_assets.core import patient_rules

    (tmp / "plots").mkdir(parents=True)
    plots = report.plots()
    for name, png in plots.items():
        (tmp / "plots" / f"{name}.png").write_bytes(png)
    if rule_counts is not None:  # exact counts stay private; the shares that may leave go beside the report
        report.tables["patient_rules"] = patient_rules.publishable_table(
            patient_rules.rule_table(rule_counts, thresholds))
        workspace.layout.private_rule_counts.parent.mkdir(parents=True, exist_ok=True)
        rule_counts.to_csv(workspace.layout.private_rule_counts, index=False)
    else:
        workspace.layout.private_rule_counts.unlink(missing_ok=True)
    for name, table in report.tables.items():
        table.to_csv(tmp / f"{name}.csv", index=False)
    (tmp / "report.md").write_text(full_report(public, held, report.tables, report.errors, gates_md, targets,
                                               rules_md))
    evaluated = {"errors": report.errors, "model_version": provenance["model_version"],
                 "cohort_id": provenance.get("cohort_id")}
    write_json(tmp / "metrics.json", {"metrics": public, "held_back": held, **evaluated})
    write_json(workspace.layout.private_metrics, {"metrics": report.metrics, "held_back": held, **evaluated})
    return plots


def utility_panel_metadata(context, tables: dict) -> dict:
    """The utility panel (tasks, TSTR/TRTR with bootstrap intervals; no figure from fewer than 10
    real test patients of a class) as metadata, and one log line per task."""
    from synehrgy_assets.core.metrics.utility import panel_markdown

    table = tables.get("utility_panel")
    if table is None:
        return {}
    for _, row in table.iterrows():
        if row["task"].startswith("phenotype/"):
            continue
        ratio = ("–" if row["auroc_ratio"] != row["auroc_ratio"] else
                 f"{row['auroc_ratio']:.3f} [{row['auroc_ratio_ci_low']:.3f}, {row['auroc_ratio_ci_high']:.3f}]")
        context.log.info(f"utility {row['task']}: TSTR/TRTR AUROC {ratio}, "
                         f"{'gated' if row['gated'] else 'not gated'}{'; ' + row['note'] if row['note'] else ''}")
    return {"utility_panel": dg.MetadataValue.md(panel_markdown(table))}


def full_report(public: dict, held: dict, tables: dict, errors: dict, gates_md: str, targets,
                rules_md: str = "") -> str:
    """Markdown: every published metric and where the tables are (`artifacts/evaluation/report.md`).
    Public figures only: held-back metrics are named with the reason, never with their value."""
    lines = ["# Evaluation", "", "## Release gates", "", gates_md, "", "## Quality targets", "",
             md_table(targets), "", "## Patient rules", "", rules_md or "not measured", "",
             "## Metrics", "", "| metric | value |", "|---|---:|"]
    lines += [f"| {k} | {float(v):.6g} |" for k, v in sorted(public.items())]
    lines += ["", "## Held back (small cells of the real data)", ""]
    lines += [f"- {k}: {why}" for k, why in sorted(held.items())] or ["none"]
    lines += ["", "## Tables", ""] + [f"- [{name}.csv]({name}.csv) ({len(t)} rows)" for name, t in tables.items()]
    if errors:
        lines += ["", "## Not computed", ""] + [f"- {k}: {v}" for k, v in errors.items()]
    return "\n".join(lines) + "\n"


def patient_rule_counts(context, workspace: WorkspaceResource, mimic_source: MimicSourceResource, errors: dict):
    """The patient rules (core/patient_rules.py) on the synthetic cohort's MIMIC-III tables and on the
    raw tables of the real test patients (the dbt staging views), as one `both_sides` table; None
    (and the reason in `errors`) when either side cannot be read."""
    import pandas as pd

    from synehrgy_assets.core import patient_rules

    started = time.perf_counter()
    mimic_dir = workspace.layout.synthetic_cohort / "mimic"
    try:
        synthetic = {t: pd.read_parquet(mimic_dir / f"{t}.parquet") for t in patient_rules.REQUIRED_COLUMNS}
        try:
            files = mimic_source.resolve(workspace).files
        except Exception as exc:  # noqa: BLE001 - the staging views may still read them; else said below
            context.log.info(f"raw MIMIC files not resolved ({exc}); the patient rules read the staging views only")
            files = None
        with workspace.connect(read_only=True) as con:
            real = patient_rules.load_raw_tables(con, split_subject_ids(con, "test"), files)
        counts = patient_rules.both_sides(patient_rules.rule_counts(synthetic, f"synthetic cohort {mimic_dir}"),
                                          patient_rules.rule_counts(real, "real test patients (stg_mimic__*)"))
    except (FileNotFoundError, patient_rules.PatientTablesError) as exc:
        errors["patient_rules"] = str(exc)
        context.log.warning(f"patient rules not measured: {exc}")
        return None
    context.log.info(f"patient rules: {time.perf_counter() - started:.1f}s")
    return counts


def _evaluated(workspace: WorkspaceResource) -> dict:
    return json.loads(workspace.layout.private_metrics.read_text())


def _gate(gate):
    """One release gate of core/release_gates.py as an asset check on `evaluation`.

    ERROR severity and not blocking: a failed gate must not stop the release from being recorded
    (as `failed`); it stops `champion` from moving (synthetic_release reads the verdict).
    """
    from synehrgy_assets.core.release_gates import GateThresholds

    example = gate({}, GateThresholds())

    @dg.asset_check(name=example.name, asset=evaluation, blocking=False,
                    description=example.description + " Gates `champion` (severity ERROR, not blocking).")
    def _check(workspace: WorkspaceResource, release_gate: ReleaseGateResource) -> dg.AssetCheckResult:
        evaluated = _evaluated(workspace)
        cohort_id = evaluated.get("cohort_id")
        verdict, table = judge(gate, workspace, evaluated, release_gate)
        current = json.loads((workspace.layout.synthetic_cohort / "provenance.json").read_text()).get("cohort_id")
        if current != cohort_id:  # the cohort was regenerated after it was evaluated
            verdict.passed = False
            verdict.reason = f"stale: evaluation judged cohort {cohort_id}, the workspace holds {current}"
        write_verdict(workspace, verdict.name, cohort_id, verdict.passed,
                      {**verdict.to_dict(), "thresholds": release_gate.thresholds().as_dict()})
        return dg.AssetCheckResult(
            passed=bool(verdict.passed),
            severity=dg.AssetCheckSeverity.ERROR,
            description=verdict.reason,
            metadata={"cohort_id": str(cohort_id), "comparison": dg.MetadataValue.md(md_table(table)),
                      "thresholds": dg.MetadataValue.json(release_gate.thresholds().as_dict()),
                      **gate_figures(verdict.rows)},
        )

    return _check


def judge(gate, workspace: WorkspaceResource, evaluated: dict, release_gate: ReleaseGateResource,
          tables: dict | None = None):
    """(verdict, comparison table) of one gate on the evaluated metrics, small-cell figures masked.
    The marginal gate reads its tables from `tables` when given, else from artifacts/evaluation/."""
    import pandas as pd

    from synehrgy_assets.core.patient_rules import patient_rules_gate
    from synehrgy_assets.core.release_gates import marginal_gate

    metrics = evaluated["metrics"]
    if gate is patient_rules_gate:
        if tables is None:
            path = workspace.layout.private_rule_counts
            tables = {"patient_rule_counts": pd.read_csv(path) if path.exists() else None}
        verdict = gate(metrics, release_gate.thresholds(), tables.get("patient_rule_counts"))
    elif gate is marginal_gate:
        if tables is None:
            out = workspace.layout.evaluation
            tables = {n: pd.read_csv(out / f"{n}.csv") for n in ("fidelity_marginals", "fidelity_baseline_marginals")}
        verdict = gate(metrics, release_gate.thresholds(), tables["fidelity_marginals"],
                       tables["fidelity_baseline_marginals"])
    else:
        verdict = gate(metrics, release_gate.thresholds())
    table = pd.DataFrame(verdict.rows)
    if verdict.name == "mortality_rate_gate" and any("mortality" in k for k in evaluated.get("held_back", {})):
        # The figures are small cells of the real data: the verdict stays, the numbers do not leave
        # (the reason travels to the release card).
        table[["measured", "real_test_baseline", "threshold"]] = float("nan")
        for row in verdict.rows:  # the verdict file and the release card carry the rows too
            row.update(measured=float("nan"), real_test_baseline=float("nan"), threshold=float("nan"))
        verdict.reason = ("within threshold" if verdict.passed else "outside threshold") + \
            " (figures held back: a real sample has fewer than 10 in-hospital deaths or survivors)"
    return verdict, table


def _gate_functions():
    from synehrgy_assets.core.patient_rules import patient_rules_gate
    from synehrgy_assets.core.release_gates import FIDELITY_GATES, PRIVACY_GATES, marginal_gate

    return (*FIDELITY_GATES, marginal_gate, patient_rules_gate, *PRIVACY_GATES)


def _evaluation_checks():
    return [_gate(g) for g in _gate_functions()]


evaluation_checks = _evaluation_checks()
