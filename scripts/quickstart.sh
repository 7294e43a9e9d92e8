#!/usr/bin/env bash
# README command 1: set up, then materialize the whole graph on the embedded default
# (synthetic hospital → DuckDB → GPT → MLflow registry → release). Extra arguments go to
# `python -m orchestration.cli materialize` (e.g. --mimic-dir /data/mimic-iii-1.4).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m orchestration.cli materialize "$@"
