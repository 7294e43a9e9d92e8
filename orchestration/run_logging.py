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

FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
_SUMMARIZED_EVENTS = {"STEP_FAILURE", "RUN_FAILURE", "STEP_UP_FOR_RETRY"}


def log_file_for(home: Path, run_id: str) -> Path:
    path = Path(home) / "logs" / f"{run_id}.log"
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
    description="Console logger: failures shown once by the CLI, tracebacks only at DEBUG.",
)
def quiet_console_logger(init_context) -> logging.Logger:
    level = str(init_context.logger_config["log_level"]).upper()
    logger = logging.Logger(init_context.logger_config["name"], level=level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
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
