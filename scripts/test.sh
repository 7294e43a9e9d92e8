#!/usr/bin/env bash
# README command 2: set up, then run the whole test suite (unit, dbt, GX, MLflow, Dagster
# materializations). Tests that need the MIMIC-III demo read it from $SYNEHRGY_MIMIC_DEMO_DIR
# (default ../shared/data/mimic-iii-demo) and skip with a reason when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The browser UI test (tests/test_ui_browser.py) drives the Debian Chromium: playwright's own browser
# download does not work offline. Installed here when missing and apt-get can (as root); otherwise
# those tests skip and say why.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "synehrgy: installing the Debian chromium package for the browser UI test"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "synehrgy: could not install chromium; the browser UI tests will skip"
fi
# The PostgreSQL test (tests/test_postgres_instance.py) starts a real server on loopback from the
# initdb/postgres binaries on PATH or in Debian's /usr/lib/postgresql/<version>/bin; installed here
# (Debian's postgresql package) when neither has them and apt-get can (as root), else that test skips.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "synehrgy: installing the Debian postgresql package for the PostgreSQL instance test"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q postgresql >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1; } \
    || echo "synehrgy: could not install postgresql; the PostgreSQL instance test will skip"
fi
export PATH="$PWD/.venv/bin:$PATH"
export SYNEHRGY_MIMIC_DEMO_DIR="${SYNEHRGY_MIMIC_DEMO_DIR:-$(cd .. && pwd)/shared/data/mimic-iii-demo}"
# Two worker processes (pytest-xdist), one per core of the CI machine; tests that share a workspace
# or a module's fixtures stay on one worker (the scheduler in tests/conftest.py). `-n 0` runs
# everything in one process.
exec .venv/bin/python -m pytest -n "${SYNEHRGY_TEST_WORKERS:-2}" --dist loadscope "$@"
