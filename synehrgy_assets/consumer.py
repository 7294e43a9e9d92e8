"""Generate synthetic patients from a registered generator without the Dagster graph.

Used by `python -m orchestration.cli generate` and by the generator's MLflow pyfunc
(`mlflow_models/generator_model.py`); both run `core/generation.Generator` (as the synthesis asset
does), so the same seed gives the same tables:

    sample (KV-cached, grammar-constrained; `--where`: rejection, core/conditions.py) -> decode tokens
    -> marts-shaped cohort -> MIMIC-III-shaped tables (`core/mimic_writer.py`)
    -> Parquet | MIMIC CSV | MEDS (`core/exports.py`, into a folder `core/output_dirs.py` allows)

A local workspace's store is opened where the workspace is now (core/mlflow_store.py: a moved
workspace finds its files, a copy reads its own). The generator is read from any MLflow registry: `models:/synehrgy-gpt@champion`,
`models:/synehrgy-gpt@candidate`, `models:/synehrgy-gpt/3` (or the short forms `@champion`, `3`).
Its artifacts are a safetensors checkpoint (`config.json` + `model.safetensors`, loaded without
unpickling) and the token vocabulary (`token_vocabulary.json`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from synehrgy_assets.core.generation import GeneratedCohort, Generator, SamplingParams  # noqa: F401  (the API)
from synehrgy_assets.core.mlflow_store import open_store_of, open_workspace_store
from synehrgy_assets.core.workspace_layout import WorkspaceLayout, configured_tracking_uri

DEFAULT_GENERATOR = "synehrgy-gpt"
DEFAULT_RELEASE = "synehrgy-synthetic-cohort"


def open_workspace(home: str | Path | None = None) -> str:
    """The tracking URI of the workspace at `home` (default $SYNEHRGY_HOME, else ./.synehrgy), its
    store pointed at where the folder is now (a moved workspace finds its files, a copy reads its
    own). Call it before `mlflow.set_tracking_uri` / `mlflow.pyfunc.load_model` on a local workspace."""
    return open_workspace_store(WorkspaceLayout.at(home))


def default_tracking_uri(home: str | Path | None = None) -> str:
    """The workspace at `home` when given; else $MLFLOW_TRACKING_URI; else the default workspace's store."""
    if home:
        return WorkspaceLayout.at(home).mlflow_tracking_uri
    return configured_tracking_uri() or WorkspaceLayout.at(None).mlflow_tracking_uri


def resolve_model_uri(model: str, default_name: str = DEFAULT_GENERATOR) -> str:
    """`models:/name@alias` and `models:/name/version` as given; `@alias`, `alias` or `version` of the
    default generator otherwise."""
    model = model.strip()
    if model.startswith("models:/"):
        if not re.fullmatch(r"models:/[^/@]+(@[\w.-]+|/\d+)", model):
            raise ValueError(f"model URI {model!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
        return model
    if model.isdigit():
        return f"models:/{default_name}/{model}"
    alias = model[1:] if model.startswith("@") else model
    if not re.fullmatch(r"[\w.-]+", alias):
        raise ValueError(f"model {model!r}: expected a models:/ URI, an @alias or a version number")
    return f"models:/{default_name}@{alias}"


def _verdict(tags: dict) -> str:
    """A version's validation status and, once a release judged it, how many gates passed."""
    status = tags.get("validation_status", "untagged")
    return f"{status}, {tags['gates_passed']} gates passed" if tags.get("gates_passed") else status


def registry_hint(client, name: str) -> str:
    """What the registry holds for `name`: its versions (with validation_status) and aliases, and why
    none is `champion` when none is; or the registered models when `name` is not one of them."""
    try:
        registered = client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - not registered (or the registry is unreachable): list what is
        try:
            names = sorted(m.name for m in client.search_registered_models())
        except Exception:  # noqa: BLE001
            names = []
        return f"no registered model {name!r}; registered models: {', '.join(names) or 'none'}"
    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    aliases = dict(getattr(registered, "aliases", {}) or {})
    shown = ", ".join(f"{v.version} ({_verdict(v.tags or {})})" for v in versions)
    lines = [f"{name} has version(s) {shown or 'none'}; aliases: "
             + (", ".join(f"@{a} -> {v}" for a, v in sorted(aliases.items())) or "none")]
    if "champion" not in aliases and versions:
        lines.append("none is @champion: champion moves only when a release passes every gate (validation_status "
                     f"passed); pull a version instead, e.g. --model models:/{name}/{versions[-1].version}")
    return "; ".join(lines)


def download_model(uri: str, tracking_uri: str, dst_path: str | Path | None = None) -> Path:
    """Download a registered model's files (`models:/...`) from `tracking_uri` (a workspace's own store
    is opened with `open_store_of` first); a download that brings no file is an error naming where
    the registry says the files are."""
    import mlflow

    from synehrgy_assets.resources import point_mlflow_at

    tracking_uri = open_store_of(tracking_uri)
    point_mlflow_at(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name = uri[len("models:/"):].split("@")[0].split("/")[0]
    try:
        local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(dst_path) if dst_path else None,
                                                         tracking_uri=tracking_uri))
    except Exception as exc:  # MlflowException / RestException: say what was asked, where, and what exists
        location = _registered_location(client, uri)
        if location.startswith("file://") and not Path(location[len("file://"):]).exists():
            raise ValueError(_no_files(uri, tracking_uri, location)) from exc  # MLflow: "No such artifact: ''"
        raise ValueError(f"cannot read {uri} from {tracking_uri}: {str(exc).splitlines()[0]}. "
                         f"{registry_hint(client, name)}") from exc
    if not any(p.is_file() for p in local.rglob("*")):
        raise ValueError(_no_files(uri, tracking_uri, _registered_location(client, uri)))
    return local


def _no_files(uri: str, tracking_uri: str, location: str) -> str:
    return (f"{uri} from {tracking_uri} downloaded no files: the registry keeps them at {location}, which holds "
            "none (a store whose artifacts were moved apart from it? open the workspace with --home <its folder>)")


def _registered_location(client, uri: str) -> str:
    """Where the registry says the files of `models:/name@alias` or `models:/name/version` are."""
    ref = uri[len("models:/"):]
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = client.get_model_version_by_alias(name, alias).version
        else:
            name, version = ref.split("/", 1)
        return client.get_model_version_download_uri(name, version)
    except Exception as exc:  # noqa: BLE001 - only for the message
        return f"? ({str(exc).splitlines()[0]})"


def load_generator(model: str, *, tracking_uri: str | None = None, device: str = "auto",
                   dst_path: str | Path | None = None) -> Generator:
    """Download a registered generator (any MLflow registry) and load it on `device` (auto|cpu|cuda)."""
    uri = resolve_model_uri(model)
    local = download_model(uri, tracking_uri or default_tracking_uri(), dst_path)
    return Generator.from_artifacts(local, device=device, source=uri)


def pull(model: str, out_dir: str | Path, *, tracking_uri: str | None = None) -> Path:
    """Download a registered release (default `synehrgy-synthetic-cohort`, any alias or version) into
    `out_dir`, which must be new or empty; returns `out_dir`."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder: pull into a new one")
    uri = resolve_model_uri(model, default_name=DEFAULT_RELEASE)
    out.mkdir(parents=True, exist_ok=True)
    try:
        download_model(uri, tracking_uri or default_tracking_uri(), out)
    except BaseException:
        if not any(out.iterdir()):
            out.rmdir()
        raise
    return out


def progress_printer(total: int, label: str = "patients"):
    """A progress callback (done, total): a tqdm bar on stderr (tqdm comes with dagster), else a plain
    stderr line. Returns (callback, close)."""
    import sys

    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency of dagster
        tqdm = None
    if tqdm is not None:
        bar = tqdm(total=total, unit=label[:-1] if label.endswith("s") else label, file=sys.stderr,
                   dynamic_ncols=True, mininterval=0.5)

        def update(done: int, _total: int) -> None:
            bar.update(max(0, int(done) - bar.n))

        return update, bar.close

    def line(done: int, _total: int) -> None:
        print(f"\r{done:,}/{total:,} {label}", end="", file=sys.stderr, flush=True)

    return line, lambda: print(file=sys.stderr)


def generate_to(out_dir: str | Path, fmt: str, *, model: str, n_patients: int,
                params: SamplingParams | None = None, where=None, max_attempts: int | None = None,
                overwrite: bool = False, tracking_uri: str | None = None, progress: bool = True):
    """Check every argument, then load the generator, generate and write `fmt` (core/exports.FORMATS)
    into `out_dir`. Returns (ExportResult, stats)."""
    from synehrgy_assets.core.conditions import parse_where
    from synehrgy_assets.core.exports import FORMATS, export_cohort
    from synehrgy_assets.core.output_dirs import check_target

    params = params or SamplingParams()
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")
    if n_patients < 1:
        raise ValueError(f"-n/--n-patients must be >= 1, got {n_patients}")
    if max_attempts is not None and max_attempts < n_patients:
        raise ValueError(f"--max-attempts ({max_attempts}) must be at least the patients asked for ({n_patients})")
    where = parse_where(where)
    check_target(out_dir, overwrite=overwrite)  # again when writing: the folder may change meanwhile
    generator = load_generator(model, tracking_uri=tracking_uri, device=params.device)
    callback, close = progress_printer(n_patients) if progress else (None, lambda: None)
    try:
        cohort = generator.generate(n_patients, params, where=where, max_attempts=max_attempts, on_progress=callback)
    finally:
        close()
    started = time.perf_counter()
    result = export_cohort(fmt, out_dir, cohort.marts, cohort.mimic_tables, overwrite=overwrite)
    stats = {**cohort.stats, "model": generator.source, "write_seconds": round(time.perf_counter() - started, 2)}
    return result, stats
