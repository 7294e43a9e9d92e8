#!/usr/bin/env bash
# Regenerate README's screenshots (docs/img: lineage, evaluation, evaluation_plot) from a materialized
# workspace, by default README command 1's ./.synehrgy: tests/test_ui_browser.py opens it in place
# with `dg dev` and `mlflow ui` (read only: the tests that would write to it skip) and saves what
# the browser shows. Usage: bash scripts/screenshots.sh [WORKSPACE] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
home="${1:-.synehrgy}"
out="${2:-docs/img}"
if [ ! -d "$home/dagster_home" ]; then
  echo "synehrgy: $home is not a materialized workspace (no dagster_home): run README command 1 first" >&2
  exit 2
fi
mkdir -p "$out"
SYNEHRGY_UI_WORKSPACE="$(cd "$home" && pwd)" SYNEHRGY_SCREENSHOT_DIR="$(cd "$out" && pwd)" \
  exec .venv/bin/python -m pytest -n 0 -p no:cacheprovider -q tests/test_ui_browser.py \
  -k "lineage_shows or evaluation_plots_render or code_location"
