"""`python -m orchestration.cli`: `materialize` the whole graph on a local Dagster instance and say where
everything is (the same runs then show in `dg dev`, same DAGSTER_HOME, as runs of the code location
`synehrgy`); `generate` synthetic patients from a registered generator without the graph, `pull` a
release, or open a workspace's store in `mlflow-ui` (docs/consumers.md). The workspace is `--home`,
else $SYNEHRGY_HOME, else ./.synehrgy (core/workspace_layout.py), wherever it was moved or copied to."""


import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from synehrgy_assets.core.staging_checks import staging_loss_summary
from synehrgy_assets.core.workspace_layout import WorkspaceLayout, configured_tracking_uri


def _prepare_environment(layout: WorkspaceLayout) -> Path:
    """The Dagster instance's folder: $DAGSTER_HOME (Dagster's own setting), else the workspace's."""
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or layout.dagster_home).resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    # dbt-duckdb runs `dbt` from PATH: use the one next to this interpreter (P6 in docs/stack.md).
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    return dagster_home


def _quiet_instance_config(dagster_home: Path) -> None:
    """An instance without dagster.yaml prints a warning and a telemetry banner on every fresh home:
    give it one (telemetry off: a local tool for patient data)."""
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text("# written by `python -m orchestration.cli` (docs/reliability.md)\ntelemetry:\n  enabled: false\n")


def materialize(args: argparse.Namespace) -> int:
    problem = _source_argument_problem(args)
    if problem:
        print(f"synehrgy materialize: {problem}", file=sys.stderr)
        return 2
    layout = WorkspaceLayout.at(args.home)
    home = layout.root
    dagster_home = _prepare_environment(layout)
    _quiet_instance_config(dagster_home)
    level = str(args.log_level).upper()
    if args.budget:
        from synehrgy_assets.core.training_budget import parse_budget

        try:
            parse_budget(args.budget)
        except ValueError as exc:
            print(f"synehrgy materialize: --budget {args.budget!r}: {exc}", file=sys.stderr)
            return 2

    import dagster as dg

    from orchestration.location_runs import execute_as_location_run
    from orchestration.run_logging import (
        failure_report, file_logger, log_file_for, quiet_console_logger, run_logger_config,
    )
    from synehrgy_assets.recovery import WorkspaceBusy, fail_dead_dagster_runs, run_tags
    from synehrgy_assets.definitions import build_definitions
    from synehrgy_assets.resources import WorkspaceResource

    workspace = WorkspaceResource(home=str(home))
    run_id = str(uuid.uuid4())
    log_file = log_file_for(home, run_id)
    started = time.perf_counter()
    try:
        with workspace.lock(run_id=run_id):
            defs = build_definitions(home=str(home), mimic_dir=args.mimic_dir,
                                     synthetic_hospital=True if args.synthetic_hospital else None,
                                     synthetic_patients=args.patients)
            jobs = sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__"))
            if args.job not in jobs:
                print(f"synehrgy materialize: no job {args.job!r}; jobs: {', '.join(jobs)}", file=sys.stderr)
                return 2
            job = defs.resolve_job_def(args.job).with_logger_defs(
                {"console": quiet_console_logger, "file": file_logger}
            )
            with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
                fail_dead_dagster_runs(
                    instance, log=lambda m: print(f"synehrgy: {m}", file=sys.stderr),
                    holds_workspace=str(workspace.root),
                )
                run_config = run_logger_config(level, log_file)
                if args.budget:
                    run_config = {**run_config, "ops": {"gpt_checkpoint": {"config": {"budget": args.budget}}}}
                # A run of the code location `synehrgy`: the UI's overview lists it beside its own runs.
                result = execute_as_location_run(
                    job, instance, run_id=run_id, run_config=run_config, tags=run_tags(workspace.root),
                )
    except WorkspaceBusy as exc:
        print(f"synehrgy: {exc}", file=sys.stderr)
        return 2
    minutes = (time.perf_counter() - started) / 60
    for line in staging_loss_summary(home, run_failed=not result.success):  # what the published build lost
        print(f"synehrgy: {line}", file=sys.stderr)
    if not result.success:
        failed, messages, traces = failure_report(result)
        with open(log_file, "a") as f:
            f.write("\n\n=== failure tracebacks ===\n" + "\n".join(traces) + "\n")
        print(f"\nRun {result.run_id} FAILED in {minutes:.1f} min at step(s) {', '.join(failed) or '?'}:", file=sys.stderr)
        for message in messages:
            print(message, file=sys.stderr)
        if level == "DEBUG":
            print("\n".join(traces), file=sys.stderr)
        print(f"\nFull log with tracebacks: {log_file}", file=sys.stderr)
        return 1
    print_summary(layout, dagster_home, result, minutes)
    return 0


def _source_argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the raw-source arguments, or None (the raw asset itself refuses a run with
    no source at all, naming the ways to pick one)."""
    from synehrgy_assets.definitions import synthetic_hospital_requested

    if args.synthetic_hospital and args.mimic_dir:
        return "--synthetic-hospital and --mimic-dir name two raw sources: pick one"
    if args.patients is not None and not (args.synthetic_hospital or synthetic_hospital_requested()):
        return "--patients sizes the simulated hospital: it needs --synthetic-hospital"
    if args.patients is not None and args.patients < 1:
        return f"--patients {args.patients}: must be at least 1"
    return None


def shell_path(path: Path) -> str:
    """`path` for a printed shell command: `$PWD/...` when it is under the current directory, so the
    command still works after the whole folder is moved (Dagster wants DAGSTER_HOME absolute)."""
    path = Path(path)
    try:
        text = "$PWD/" + str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        text = str(path)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def ui_commands(layout: WorkspaceLayout, dagster_home: Path | None = None, tracking_uri: str = "",
                source_env: str = "") -> list[str]:
    """The two commands that open the UIs on `layout` (as printed after a run), `source_env` naming the
    run's raw source for the UI's runs (`SYNEHRGY_SYNTHETIC_HOSPITAL=1 ` or `MIMIC_DIR=... `). The MLflow
    one opens the workspace's store through `mlflow-ui`, which first points it at where the workspace is now."""
    dagster_home = dagster_home or layout.dagster_home
    dagster = (f"DAGSTER_HOME={shell_path(dagster_home)} SYNEHRGY_HOME={shell_path(layout.root)} "
               f"{source_env}.venv/bin/dg dev")
    if tracking_uri.startswith(("http://", "https://")):
        return [dagster, f"MLflow UI: {tracking_uri}"]
    if tracking_uri:
        return [dagster, f".venv/bin/mlflow ui --backend-store-uri {tracking_uri}"]
    return [dagster, f".venv/bin/python -m orchestration.cli mlflow-ui --home {shell_path(layout.root)}"]


def print_summary(layout: WorkspaceLayout, dagster_home: Path, result, minutes: float) -> None:
    from synehrgy_assets.core.training_data import SYNTHETIC_HOSPITAL
    from synehrgy_assets.resources import MlflowResource

    def meta(asset: str) -> dict:
        for event in result.get_asset_materialization_events():
            mat = event.event_specific_data.materialization
            if mat.asset_key.to_user_string() == asset:
                return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
        return {}

    ml = MlflowResource(home=str(layout.root), tracking_uri=configured_tracking_uri())
    ckpt, rel = meta("gpt_checkpoint"), meta("synthetic_release")
    source = meta("mimic_raw/patients")
    # The UI's runs read the same raw source as this one.
    source_env = ("SYNEHRGY_SYNTHETIC_HOSPITAL=1 " if str(source.get("data_source")) == SYNTHETIC_HOSPITAL
                  else f"MIMIC_DIR={shell_path(Path(str(source.get('path'))).parent)} ")
    print(
        f"""
synehrgy: run {result.run_id} succeeded in {minutes:.1f} min.

  raw data            {source.get('data_source')} in {Path(str(source.get('path'))).parent}
  DuckDB file         {layout.duckdb}
                      real marts: main.visits, main.visit_codes, main.visit_phenotypes, main.measurements
                      synthetic:  synthetic.* (marts shape), synthetic_mimic.* (MIMIC-III shape)
  synthetic Parquet   {layout.synthetic_cohort}
  MLflow tracking     {ml.resolved_tracking_uri}
  generator model     {ml.model_name} v{ckpt.get('model_version')} (alias candidate{', champion' if rel.get('promoted_to_champion') else ''})
  training            {ckpt.get('budget_choice') or 'the configured epochs (no --budget)'}
  synthetic release   {ml.release_name} v{rel.get('release_version')} — validation {rel.get('validation_status')}
  Dagster instance    {dagster_home}

Open the UIs:
"""
        + "".join(f"  {line}\n" for line in ui_commands(layout, dagster_home, ml.tracking_uri, source_env))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestration.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("materialize", help="run a job end to end on the local instance")
    m.add_argument("--job", default="synehrgy_end_to_end")
    m.add_argument("--home", help="workspace folder (default $SYNEHRGY_HOME or ./.synehrgy)")
    m.add_argument("--mimic-dir", help="a MIMIC-III v1.4 folder (default $MIMIC_DIR)")
    m.add_argument("--synthetic-hospital", action="store_true",
                   help="train on the built-in simulated hospital instead of a MIMIC-III folder (also "
                   "SYNEHRGY_SYNTHETIC_HOSPITAL=1); never the default: with neither, the run stops at the raw data")
    m.add_argument("--patients", type=int, help="simulated hospital size (with --synthetic-hospital; default 1000)")
    m.add_argument("--budget", help="training time budget, e.g. 30m or 1h30m (gpt_checkpoint.budget): the "
                   "epochs are chosen from a short throughput probe; default: the configured epochs")
    m.add_argument("--log-level", default="INFO", help="console log level (DEBUG shows every Dagster event and full tracebacks; the log file always has them)")
    g = sub.add_parser(
        "generate", help="generate synthetic patients from a registered generator (no Dagster graph)",
        description="Generate synthetic patients from a registered generator and write them as Parquet, the "
        "MIMIC-III CSV layout or MEDS 0.4 (docs/consumers.md).")
    g.add_argument("--model", default="models:/synehrgy-gpt@champion",
                   help="models:/<name>@<alias>, models:/<name>/<version>, or @alias / version of synehrgy-gpt "
                   "(default models:/synehrgy-gpt@champion)")
    _registry_arguments(g)
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = CUDA when present")
    g.add_argument("-n", "--n-patients", type=int, default=100, help="patients to generate (default 100)")
    g.add_argument("--seed", type=int, default=0, help="sampler seed: the same seed, model and device give the same tables")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)")
    g.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = off)")
    g.add_argument("--top-p", type=float, default=0.0, help="nucleus sampling mass in (0, 1] (0 = off)")
    g.add_argument("--batch-size", type=int, default=64, help="rows sampled together")
    g.add_argument("--max-tokens-per-patient", type=int, default=0,
                   help="cap on each patient's tokens (0 = the cap stored with the generator)")
    g.add_argument("--format", default="parquet", choices=["parquet", "mimic-csv", "mimic-csv-plain", "meds"],
                   dest="fmt", help="mimic-csv: TABLE.csv.gz as the full MIMIC-III release; mimic-csv-plain: TABLE.csv")
    g.add_argument("--out", required=True, help="output folder: new, empty, or an earlier output of ours with "
                   "--overwrite; a folder holding MIMIC-III tables we did not write is always refused")
    g.add_argument("--overwrite", action="store_true",
                   help="replace --out whole (written beside it, then swapped in) when it holds an earlier output")
    g.add_argument("--where", action="append", default=[], metavar="CONDITION",
                   help="only patients satisfying CONDITION, e.g. 'age>=65' 'died=1' 'admission_type=EMERGENCY' "
                   "'code=038*' (repeatable, ANDed; docs/consumers.md lists the fields)")
    g.add_argument("--max-attempts", type=int, default=None,
                   help="with --where: patients sampled at most (default 50 per patient asked for)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p = sub.add_parser("pull", help="download a registered release (tables, MIMIC-III CSV, MEDS, datacard)",
                       description="Download a registered release into a new folder (docs/consumers.md).")
    p.add_argument("--model", default="models:/synehrgy-synthetic-cohort@champion",
                   help="models:/<name>@<alias>, models:/<name>/<version>, or @alias / version of "
                   "synehrgy-synthetic-cohort (default models:/synehrgy-synthetic-cohort@champion)")
    _registry_arguments(p)
    p.add_argument("--out", required=True, help="a new or empty folder")
    u = sub.add_parser("mlflow-ui", help="`mlflow ui` on a workspace's store, wherever the workspace is now",
                       description="Point the workspace's MLflow store at where the folder is now, then run "
                       "`mlflow ui` on it; arguments after -- go to mlflow ui (e.g. -- --port 5001).")
    u.add_argument("--home", help="workspace folder (default $SYNEHRGY_HOME or ./.synehrgy)")
    u.add_argument("mlflow_args", nargs="*", help="arguments for mlflow ui, after --")
    args = parser.parse_args(argv)
    commands = {"generate": generate, "pull": pull, "mlflow-ui": mlflow_ui, "materialize": materialize}
    return commands[args.command](args)


def _registry_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--home", default=None,
                       help="the workspace whose MLflow store to read, wherever it was moved or copied to "
                       "(default $SYNEHRGY_HOME, else ./.synehrgy, unless $MLFLOW_TRACKING_URI is set)")
    where.add_argument("--tracking-uri", default=None,
                       help="MLflow tracking/registry URI (default $MLFLOW_TRACKING_URI, else the workspace's "
                       "sqlite:///<home>/mlflow.db)")


def _tracking_uri(args: argparse.Namespace) -> str:
    from synehrgy_assets.consumer import default_tracking_uri

    return args.tracking_uri or default_tracking_uri(args.home)


def pull(args: argparse.Namespace) -> int:
    from synehrgy_assets.consumer import pull as pull_release

    try:
        out = pull_release(args.model, args.out, tracking_uri=_tracking_uri(args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"synehrgy pull: {exc}", file=sys.stderr)
        return 2
    files = sorted(p for p in out.rglob("*") if p.is_file())
    print(f"synehrgy pull: {len(files)} files of {args.model} in {out}")
    return 0


def mlflow_ui(args: argparse.Namespace) -> int:
    from synehrgy_assets.core.mlflow_store import WorkspaceStoreError, open_workspace_store

    try:
        uri = open_workspace_store(WorkspaceLayout.at(args.home))
    except WorkspaceStoreError as exc:
        print(f"synehrgy mlflow-ui: {exc}", file=sys.stderr)
        return 2
    mlflow = Path(sys.executable).parent / "mlflow"
    return subprocess.call([str(mlflow), "ui", "--backend-store-uri", uri, *args.mlflow_args])


def generate(args: argparse.Namespace) -> int:
    """Every argument is checked (numbers, --where, --out) before the model loads; every refusal is
    one line on stderr and exit status 2."""
    from synehrgy_assets.consumer import generate_to
    from synehrgy_assets.core.generation import SamplingParams

    try:
        params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                max_tokens_per_patient=args.max_tokens_per_patient, batch_size=args.batch_size,
                                seed=args.seed, device=args.device)
        result, stats = generate_to(
            args.out, args.fmt, model=args.model, n_patients=args.n_patients, params=params, where=args.where,
            max_attempts=args.max_attempts, overwrite=args.overwrite, tracking_uri=_tracking_uri(args),
            progress=not args.no_progress)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"synehrgy generate: {exc}", file=sys.stderr)
        return 2
    condition = ""
    if "where" in stats:
        condition = (f"; where {stats['where']}: {stats['accepted_patients']:,} of {stats['sampled_patients']:,} "
                     f"sampled patients accepted ({stats['acceptance_rate']:.1%})")
    print(f"synehrgy generate: {stats['n_patients']} patients from {stats['model']} on {stats['device']} "
          f"(seed {stats['seed']}; {stats['valid_sequences']} valid sequences{condition}) in "
          f"{stats['sample_seconds'] + stats['decode_seconds'] + stats['write_seconds']:.1f} s")
    print(result.describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
