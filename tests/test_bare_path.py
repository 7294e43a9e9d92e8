"""`dg check defs` passes, and the UI command printed by README command 1 works in a fresh shell
without the venv on PATH.

`DAGSTER_HOME=… SYNEHRGY_HOME=… .venv/bin/dg dev` loads the definitions (the `dg` project layout in
pyproject's [tool.dg]) in a shell whose PATH holds no `dbt`: the dbt resource and the dbt project
preparer use the `dbt` next to the running interpreter
(`synehrgy_assets.defs.staging.dbt_executable`). `dg check defs` loads them the same way.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).parent / "dg"
BARE_PATH = "/usr/bin:/bin"


def bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A fresh shell's environment: a bare PATH and the two variables of the printed command."""
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    env = {
        "PATH": BARE_PATH,
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "SYNEHRGY_HOME": str(tmp_path / "synehrgy"),
    }
    env.update(extra)
    return env


def test_bare_path_has_no_dbt():
    """The premise: the bare PATH of the test finds no dbt (else the test below proves nothing)."""
    assert shutil.which("dbt", path=BARE_PATH) is None, f"a dbt on {BARE_PATH}: the bare-PATH test is void"


@pytest.mark.parametrize(
    "dev_cli",
    [
        pytest.param(False, id="validate"),
        # `dg dev` sets DAGSTER_IS_DEV_CLI, which makes the dbt project re-parse on load.
        pytest.param(True, id="validate-as-dg-dev"),
    ],
)
def test_dg_check_defs_with_bare_path(tmp_path, dev_cli):
    assert DG.exists(), f"{DG} missing: run bash scripts/setup.sh (pyproject pins dagster-dg-cli)"
    env = bare_env(tmp_path, **({"DAGSTER_IS_DEV_CLI": "1"} if dev_cli else {}))
    done = subprocess.run(
        [str(DG), "check", "defs"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = done.stdout + done.stderr
    assert "not found on PATH" not in out, out[-3000:]
    assert done.returncode == 0, out[-3000:]
    assert "All definitions loaded successfully" in out, out[-3000:]


def test_dbt_executable_is_next_to_the_interpreter():
    from synehrgy_assets.defs.staging import dbt_executable

    assert Path(dbt_executable()) == Path(sys.executable).parent / "dbt"
