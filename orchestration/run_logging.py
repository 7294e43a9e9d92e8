"""Loggers for the CLI's runs: a console that shows each failure once, and a log file with everything.

Below DEBUG the console drops Dagster's failure events (STEP_FAILURE, RUN_FAILURE, and the
"Dependencies for step ... Not executing" lines, which repeat the same failure once per
downstream step) and keeps other errors to their first paragraph; the CLI then prints the failing
step(s) and the user-facing message once. The file logger writes every event at DEBUG, tracebacks
included, to `<home>/logs/<run_id>.log`.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import dagster as dg

from synehrgy_assets.core.workspace_layout import WorkspaceLayout

FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
_SUMMARIZED_EVENTS = {"STEP_FAILURE", "RUN_FAILURE", "STEP_UP_FOR_RETRY"}


def log_file_for(home: Path, run_id: str) -> Path:
    path = WorkspaceLayout(home).log_file(run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def run_logger_config(level: str, log_file: Path) -> dict:
    return {
        "loggers": {
            "console": {"config": {"log_level": level}},
            "file": {"config": {"path": str(log_file)}},
        }
    }


def _event_type(record: logging.LogRecord) -> str | None:
    meta = getattr(record, "dagster_meta", None) or {}
    event = meta.get("dagster_event") if isinstance(meta, dict) else None
    return getattr(getattr(event, "event_type", None), "name", None)


def format_progress(asset: str, metadata: dict, width: int = 24) -> str:
    """One progress line from a progress observation's metadata (defs/_metadata.py `Progress`):
    `gpt_checkpoint [#########...............]  38% step 120 · epoch 3.04 · val 2.311 · ETA 1m05s`."""
    fraction = min(max(float(metadata.get("progress") or 0.0), 0.0), 1.0)
    filled = int(round(fraction * width))
    parts = []
    if metadata.get("patients_total") is not None:
        parts.append(f"{metadata.get('patients_done', 0)}/{metadata['patients_total']} patients")
    if metadata.get("step") is not None:
        parts.append(f"step {metadata['step']}")
    if metadata.get("epoch") is not None:
        parts.append(f"epoch {float(metadata['epoch']):.2f}")
    if metadata.get("train_loss") is not None:
        parts.append(f"train {float(metadata['train_loss']):.3f}")
    if metadata.get("val_loss") is not None:
        parts.append(f"val {float(metadata['val_loss']):.3f}")
    eta = metadata.get("eta_seconds")
    parts.append("ETA " + ("?" if eta is None else _duration(float(eta))))
    return f"{asset} [{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%} " + " · ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_line(record: logging.LogRecord) -> str | None:
    """The progress line of a record that carries a progress observation, else None."""
    meta = getattr(record, "dagster_meta", None) or {}
    event = meta.get("dagster_event") if isinstance(meta, dict) else None
    if getattr(event, "event_type_value", None) != "ASSET_OBSERVATION":
        return None
    observation = event.event_specific_data.asset_observation
    metadata = {k: getattr(v, "value", v) for k, v in observation.metadata.items()}
    if "progress" not in metadata:
        return None
    return format_progress(observation.asset_key.to_user_string(), metadata)


class _ProgressFilter(logging.Filter):
    """Progress observations (DEBUG events) become progress lines at any level; other records
    below the console's level are dropped (the logger itself lets DEBUG through for this)."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        line = progress_line(record)
        if line is not None:
            record.msg, record.args, record.levelname = line, None, "PROGRESS"
            return True
        return record.levelno >= self.level


class _ConciseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        if _event_type(record) in _SUMMARIZED_EVENTS or "Not executing." in message:
            return False  # the CLI summarizes these once
        first = message.split("\n\n", 1)[0]
        if first != message:
            record.msg, record.args = first + " (details in the run's log file)", None
        return True


@dg.logger(
    {
        "log_level": dg.Field(str, is_required=False, default_value="INFO"),
        "name": dg.Field(str, is_required=False, default_value="dagster"),
    },
    description="Console logger: failures shown once by the CLI, tracebacks only at DEBUG, progress "
    "observations of training and generation as progress bars.",
)
def quiet_console_logger(init_context) -> logging.Logger:
    level = str(init_context.logger_config["log_level"]).upper()
    # DEBUG reaches the handler so that progress observations (DEBUG events) can be drawn.
    logger = logging.Logger(init_context.logger_config["name"], level=logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_ProgressFilter(logging.getLevelName(level)))
    if level != "DEBUG":
        handler.addFilter(_ConciseFilter())
    logger.addHandler(handler)
    return logger


@dg.logger(
    {"path": dg.Field(str), "log_level": dg.Field(str, is_required=False, default_value="DEBUG")},
    description="Every event of the run, tracebacks included, in one file.",
)
def file_logger(init_context) -> logging.Logger:
    logger = logging.Logger("dagster", level=str(init_context.logger_config["log_level"]).upper())
    handler = logging.FileHandler(init_context.logger_config["path"])
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    return logger


def _short(message: str) -> str:
    """`pkg.mod.SomeError: text` -> `SomeError: text`."""
    return re.sub(r"^(?:[A-Za-z_][\w]*\.)+(?=[A-Za-z_]\w*(?:: |$))", "", message.strip(), count=1)


def user_message(error, user_failure=None) -> str:
    """The innermost user-facing message: a `dg.Failure` description, else the first exception in the
    cause chain that is not Dagster's own wrapper."""
    if user_failure is not None and getattr(user_failure, "description", None):
        return user_failure.description.strip()
    if error is None:
        return "(no error message)"
    chain, e = [], error
    while e is not None:
        chain.append(e)
        e = e.cause or e.context
    for e in chain:
        if not e.cls_name.startswith("Dagster") and not e.message.startswith("dagster."):
            return _short(e.message)
    return _short(chain[-1].message)


def failure_report(result) -> tuple[list[str], list[str], list[str]]:
    """(failed step keys, distinct user-facing messages, full tracebacks) of a failed run."""
    failed: list[str] = []
    messages: list[str] = []
    traces: list[str] = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            data = event.step_failure_data
            failed.append(event.step_key)
            message = user_message(data.error, data.user_failure_data)
            if data.error is not None:
                traces.append(f"--- step {event.step_key} ---\n{data.error.to_string()}")
        elif event.event_type.name == "RUN_FAILURE" and not failed:
            error = getattr(event.event_specific_data, "error", None)
            message = user_message(error) if error is not None else (event.message or "run failed")
            if error is not None:
                traces.append(f"--- run ---\n{error.to_string()}")
        else:
            continue
        if message not in messages:
            messages.append(message)
    return failed, messages, traces
