#!/usr/bin/env bash
# README command 1: set up, then materialize the whole graph (raw data → DuckDB → GPT → MLflow
# registry → release). The raw data source is always named: `--synthetic-hospital` (the built-in
# simulated hospital: README command 1) or a MIMIC-III folder (`--mimic-dir /data/mimic-iii-1.4`, or
# MIMIC_DIR). Arguments go to `python -m orchestration.cli materialize`.
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in
  *" --synthetic-hospital "*|*" --mimic-dir"*) ;;
  *) if [ -z "${MIMIC_DIR:-}" ] && [ -z "${SYNEHRGY_SYNTHETIC_HOSPITAL:-}" ]; then
       echo "synehrgy: no raw data source: pass --mimic-dir /path/to/mimic-iii (or set MIMIC_DIR), or" \
            "--synthetic-hospital for the built-in simulated hospital (simulated patients only)" >&2
       exit 2
     fi ;;
esac
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m orchestration.cli materialize "$@"
