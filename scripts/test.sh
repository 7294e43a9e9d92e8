#!/usr/bin/env bash
# README command 2: set up, then run the whole test suite (unit, dbt, GX, MLflow, Dagster
# materializations). Tests that need the MIMIC-III demo read it from $SYNEHRGY_MIMIC_DEMO_DIR
# (default ../shared/data/mimic-iii-demo) and skip with a reason when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
export SYNEHRGY_MIMIC_DEMO_DIR="${SYNEHRGY_MIMIC_DEMO_DIR:-$(cd .. && pwd)/shared/data/mimic-iii-demo}"
exec .venv/bin/python -m pytest "$@"
