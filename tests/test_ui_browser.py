"""Both UIs in a real browser: Playwright drives the Debian Chromium (/usr/bin/chromium).

On a copy of the session's released workspace (`released_workspace` in tests/conftest.py: the
simulated hospital, a small generator, gates every cohort passes), the test starts

- `dg dev` exactly as README command 1 prints it (`DAGSTER_HOME=… SYNEHRGY_HOME=…
  SYNEHRGY_SYNTHETIC_HOSPITAL=1 .venv/bin/dg dev`, here on a free loopback port) with a bare PATH, and
- `mlflow ui --backend-store-uri sqlite:///…/mlflow.db` on a free loopback port,

then checks, in the browser: the code location is `synehrgy`, the lineage shows the whole chain,
`gpt_checkpoint` shows its loss curve and an MLflow link that opens the run, the evaluation plots
render, `evaluation` launched with the UI's Materialize button succeeds, the MLflow registry shows
both models with their aliases and descriptions, and, last (its failed run marks the graph's assets
in the UI), a run of the CLI's `materialize` with no raw source fails at the raw asset, saying how
to pick one, and shows on the overview's timeline.

README's screenshots: with SYNEHRGY_UI_WORKSPACE naming a materialized workspace (README command 1's
`.synehrgy`), the UI opens that workspace in place instead, the tests that would write to it (the CLI
run, the UI's Materialize) skip, and with SYNEHRGY_SCREENSHOT_DIR set the others save the screenshots
(`bash scripts/screenshots.sh`).

Playwright's own browser download does not work offline: scripts/test.sh installs the Debian
`chromium` package (as root, when apt-get can) and pyproject's test extra pins playwright. Where
either is missing the tests skip and say which.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CHROMIUM = Path(os.environ.get("SYNEHRGY_CHROMIUM", "/usr/bin/chromium"))
# Without the background-networking flags Chromium's own connections (component updates, sync)
# are refused by a closed network and slow every page down.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}
SCREENSHOT_DIR = os.environ.get("SYNEHRGY_SCREENSHOT_DIR", "")
UI_WORKSPACE = os.environ.get("SYNEHRGY_UI_WORKSPACE", "")  # an existing workspace, opened in place
BARE_PATH = "/usr/bin:/bin"
UI_TIMEOUT_MS = 120_000  # generous: the machine is shared
RUN_TIMEOUT_S = 900

# The asset chain, each one downstream of the one before (raw table → staging marts → tokens →
# generator → synthetic cohort → evaluation → release); the raw tables show as their last key part.
CHAIN = ("patients", "visits", "patient_split", "token_vocabulary", "token_sequences", "gpt_checkpoint",
         "synthetic_sequences", "synthetic_cohort", "evaluation", "synthetic_release")
ALSO_UPSTREAM = ("chartevents", "labevents", "measurements", "visit_codes", "visit_phenotypes")
GROUPS = ("raw", "staging", "tokens", "model", "synthesis", "evaluation", "release")


def _skip_reason() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pyproject test extra; run bash scripts/setup.sh)"
    if not CHROMIUM.exists():
        return (f"no Chromium at {CHROMIUM}: scripts/test.sh installs the Debian package `chromium` when it runs "
                "as root with apt-get; playwright's own browser download does not work offline")
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 10) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen
    log: Path

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def stop(self) -> None:
        # Each server runs in its own process group (dagster dev: webserver, daemon, code server,
        # run workers): end that group, this test's own processes only.
        # A server's children can outlive it (mlflow's workers): the group gets SIGKILL at the end.
        for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                pass


def start(name: str, argv: list[str], env: dict[str, str], log: Path, url: str) -> Server:
    fh = open(log, "wb")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    fh.close()
    return Server(name, url, proc, log)


def graphql(server: Server, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        server.url + "/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = json.load(r)
    assert "errors" not in body, body["errors"]
    return body["data"]


LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
RUNS = """{ runsOrError(limit: 20) { ... on Runs { results { runId status jobName
  repositoryOrigin { repositoryLocationName repositoryName } } } } }"""
LATEST_MATERIALIZATION = """query($path: [String!]!) { assetOrError(assetKey: {path: $path}) {
  ... on Asset { assetMaterializations(limit: 1) { runId } } } }"""


def wait_for_dagster(server: Server, timeout_s: float = 300) -> None:
    """Until the webserver answers and the code location is loaded; a load error fails with its message."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        server.check_alive()
        if http_get(server.url + "/server_info") == 200:
            entries = graphql(server, LOCATIONS)["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e["locationOrLoadError"].get("message") for e in entries
                          if e["locationOrLoadError"]["__typename"] == "PythonError"]
                assert not errors, f"the code location failed to load:\n{errors[0]}"
                return
        time.sleep(1)
    pytest.fail(f"dg dev did not load the definitions within {timeout_s:.0f} s:\n{server.tail()}")


def wait_for_http(server: Server, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        server.check_alive()
        if http_get(server.url + "/") == 200:
            return
        time.sleep(1)
    pytest.fail(f"{server.name} did not answer within {timeout_s:.0f} s:\n{server.tail()}")


def screenshot(page, name: str) -> None:
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"{name}.png"))


def label_matches(full: str, shown: str) -> bool:
    """The lineage shortens long names in the middle (`synthet…_sequences`)."""
    if "…" not in shown:
        return shown == full
    head, _, tail = shown.partition("…")
    return full.startswith(head) and full.endswith(tail) and len(head) + len(tail) < len(full)


def test_label_matching_is_strict():
    """The lineage check reads shortened labels; a different asset's label must not pass for it."""
    assert label_matches("synthetic_sequences", "synthet…_sequences")
    assert label_matches("gpt_checkpoint", "gpt_checkpoint")
    assert not label_matches("synthetic_sequences", "synthetic_cohort")
    assert not label_matches("synthetic_cohort", "synthet…_sequences")
    assert not label_matches("visits", "visit_codes")


@dataclass
class UI:
    home: Path
    dagster: Server
    mlflow: Server
    mlflow_link_base: str  # the MLFLOW_UI_URL the workspace's metadata links were made with
    tracking_uri: str


def cli_run_without_a_source(home: Path) -> str:
    """`python -m orchestration.cli materialize` on `home` with neither a MIMIC-III folder nor
    --synthetic-hospital: it fails at the raw asset, which says how to pick one (nothing is written
    to the workspace); returns the run's id."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MIMIC_DIR", "SYNEHRGY_SYNTHETIC_HOSPITAL", "MLFLOW_TRACKING_URI")}
    env.update({"DAGSTER_HOME": str(home / "dagster_home"), "SYNEHRGY_HOME": str(home)})
    done = subprocess.run([sys.executable, "-m", "orchestration.cli", "materialize", "--home", str(home)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.count("No raw data source configured") == 1, done.stderr[-3000:]
    assert "--synthetic-hospital" in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
    match = re.search(r"Run ([0-9a-f-]{36}) FAILED .* at step\(s\) mimic_raw_files", done.stderr)
    assert match, done.stderr[-3000:]
    return match.group(1)


@pytest.fixture(scope="module")
def ui(request, tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from synehrgy_assets.resources import default_mlflow_ui_url

    logs = tmp_path_factory.mktemp("ui")
    if UI_WORKSPACE:
        home = Path(UI_WORKSPACE).resolve()
        assert (home / "dagster_home").is_dir(), f"{home} is not a materialized workspace (no dagster_home)"
    else:
        # A copy: launching `evaluation` from the UI writes new verdicts, and the release stays as
        # the other tests of the session left it.
        home = logs / "workspace"
        shutil.copytree(request.getfixturevalue("released_workspace").home, home,
                        ignore=shutil.ignore_patterns("*.lock", "lock"))
    mlflow_port, dagster_port = free_port(), free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    # README command 1's UI command in a fresh shell: a bare PATH and the variables it sets (the
    # port and loopback host are this test's); runs launched from the UI link to this MLflow UI.
    env = {"PATH": BARE_PATH, "HOME": str(logs), "LANG": "C.UTF-8", "DAGSTER_HOME": str(home / "dagster_home"),
           "SYNEHRGY_HOME": str(home), "SYNEHRGY_SYNTHETIC_HOSPITAL": "1", "MLFLOW_UI_URL": mlflow_url,
           "GX_ANALYTICS_ENABLED": "false", "DAGSTER_DISABLE_TELEMETRY": "1"}
    if not UI_WORKSPACE:
        env["SYNEHRGY_SYNTHETIC_PATIENTS"] = "150"  # the size the shared workspace was made with
    dagster = start("dg dev", [str(VENV_BIN / "dg"), "dev", "-h", "127.0.0.1", "-p", str(dagster_port)],
                    env, logs / "dagster_dev.log", f"http://127.0.0.1:{dagster_port}")
    mlflow = start("mlflow ui", [str(VENV_BIN / "mlflow"), "ui", "--backend-store-uri", tracking_uri,
                                 "--host", "127.0.0.1", "--port", str(mlflow_port)],
                   # no job-execution workers: the registry pages need none
                   {"PATH": BARE_PATH, "HOME": str(logs), "LANG": "C.UTF-8",
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, logs / "mlflow_ui.log", mlflow_url)
    try:
        wait_for_http(mlflow)
        wait_for_dagster(dagster)
        # A fresh instance greets its first visitor with a newsletter dialog that takes the keyboard
        # (typed text lands in its e-mail box): dismissed here as a visitor's "Skip" would.
        graphql(dagster, "mutation { setNuxSeen }")
        yield UI(home, dagster, mlflow, default_mlflow_ui_url(), tracking_uri)
    finally:
        dagster.stop()
        mlflow.stop()


@pytest.fixture(scope="module")
def browser(ui):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(UI_TIMEOUT_MS)
    p = context.new_page()
    # Should the newsletter dialog still show (see `ui`), it is skipped before any click.
    skip = p.get_by_role("button", name="Skip", exact=True)
    p.add_locator_handler(skip, lambda: skip.click())
    yield p
    context.close()


def open_asset(page, ui: UI, asset: str) -> None:
    page.goto(f"{ui.dagster.url}/assets/{asset}")
    page.get_by_text("Latest materialization").wait_for()


def metadata_rows(page, key_filter: str):
    """The asset overview's metadata rows whose key contains `key_filter`, filtered the way a user
    does (the filter box: long tables are cut at "show more")."""
    page.get_by_placeholder("Filter metadata keys").fill(key_filter)
    rows = page.locator("tr").filter(has_text=key_filter)
    rows.first.wait_for()
    return rows


def metadata_row(page, key: str):
    """The metadata row of exactly `key`."""
    metadata_rows(page, key)
    row = page.locator("tr").filter(has=page.get_by_text(key, exact=True)).first
    row.wait_for()
    return row


def show_markdown_image(page, row) -> dict:
    """Open a markdown metadata value ([Show Markdown]) and return its first image once rendered."""
    row.get_by_text("Show Markdown").click()
    dialog = page.get_by_role("dialog")
    img = dialog.locator("img").first
    img.wait_for()
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=img.element_handle())
    info = img.evaluate("i => ({w: i.naturalWidth, h: i.naturalHeight, src: i.src.slice(0, 22),"
                        " shown: i.getBoundingClientRect().width})")
    return info


def close_dialog(page) -> None:
    page.get_by_role("dialog").get_by_role("button", name="Close").click()
    page.get_by_role("dialog").wait_for(state="hidden")


def test_the_code_location_is_synehrgy(page, ui):
    entries = graphql(ui.dagster, LOCATIONS)["workspaceOrError"]["locationEntries"]
    assert [e["name"] for e in entries] == ["synehrgy"]
    page.goto(f"{ui.dagster.url}/deployment/locations")
    page.locator('a[href="/locations/synehrgy/"]').first.wait_for()
    page.locator('a[href="/locations/synehrgy/jobs"]').first.wait_for()
    assert page.get_by_text("definitions:defs").count() == 0  # not a module path


def test_lineage_shows_the_whole_chain(page, ui):
    """Global lineage filtered to everything upstream of the release, every group expanded: each
    asset of the chain is drawn, left of the assets that depend on it."""
    page.goto(f"{ui.dagster.url}/asset-groups")
    for group in GROUPS:
        page.locator("foreignObject").get_by_text(group, exact=True).first.wait_for()
    page.locator(".CodeMirror").first.click()  # the "Search and filter assets" box
    page.keyboard.type('+key:"synthetic_release"')
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/asset-groups~"))
    # The whole chain, every group expanded, fits the screen only zoomed out so far that the UI
    # draws the nodes without their names: a large screen keeps them legible.
    page.set_viewport_size({"width": 3200, "height": 2000})
    page.goto(page.url.split("?")[0] + "?expanded=" + ",".join(f"global@global:{g}" for g in GROUPS))
    page.locator("foreignObject").get_by_text("gpt_checkpoint", exact=True).wait_for()
    page.wait_for_timeout(1500)  # let the layout settle (zoom to fit)
    nodes = page.locator("foreignObject").evaluate_all(
        "els => els.map(e => ({x: +e.getAttribute('x'), text: (e.textContent || '').trim()}))")
    xs: dict[str, float] = {}
    for name in CHAIN + ALSO_UPSTREAM:
        found = [n["x"] for n in nodes if n["text"] and label_matches(name, n["text"].split("\n")[0])]
        assert found, f"{name} is not drawn in the lineage upstream of synthetic_release"
        xs[name] = min(found)
    for up, down in zip(CHAIN, CHAIN[1:]):
        assert xs[up] < xs[down], f"the lineage draws {up} (x={xs[up]}) not left of {down} (x={xs[down]})"
    screenshot(page, "lineage")


def test_gpt_checkpoint_shows_the_loss_curve_and_an_mlflow_link(page, ui):
    open_asset(page, ui, "gpt_checkpoint")
    image = show_markdown_image(page, metadata_row(page, "loss_curve"))
    assert image["src"].startswith("data:image/png") and image["w"] > 200 and image["shown"] > 200, image
    close_dialog(page)

    link = metadata_row(page, "mlflow_run").locator("a").first
    href = link.get_attribute("href")
    run_id = re.search(r"/runs/([0-9a-f]{32})", href or "")
    assert href and href.startswith(ui.mlflow_link_base) and run_id, f"mlflow_run is not a run URL: {href!r}"
    # The link's base is MLFLOW_UI_URL as it was when the workspace was materialized (default
    # the local `mlflow ui` address); here that UI runs on a free port: follow the link there.
    page.goto(ui.mlflow.url + href[len(ui.mlflow_link_base.rstrip("/")):])
    page.get_by_text(run_id.group(1)).first.wait_for()
    page.get_by_text("gpt_checkpoint").first.wait_for()  # the run's name


def test_evaluation_plots_render(page, ui):
    open_asset(page, ui, "evaluation")
    page.get_by_text("release_gates_passed").wait_for()
    screenshot(page, "evaluation")
    rows = metadata_rows(page, "plot/")
    n = rows.count()
    assert n >= 4, f"evaluation shows {n} plots, expected the fidelity, utility and privacy plots"
    for i in range(n):
        name = rows.nth(i).locator("td").first.inner_text()
        image = show_markdown_image(page, rows.nth(i))
        assert image["src"].startswith("data:image/png") and image["w"] > 200 and image["shown"] > 200, (name, image)
        if i == 0:
            screenshot(page, "evaluation_plot")
        close_dialog(page)


def test_materialize_evaluation_from_the_ui(page, ui):
    if UI_WORKSPACE:
        pytest.skip("an existing workspace (SYNEHRGY_UI_WORKSPACE) is not written to")
    before = {r["runId"] for r in graphql(ui.dagster, RUNS)["runsOrError"]["results"]}
    open_asset(page, ui, "evaluation")
    page.get_by_role("button", name=re.compile(r"(^|\s)Materialize$")).click()
    page.get_by_text(re.compile(r"Launched run")).first.wait_for()

    deadline = time.monotonic() + RUN_TIMEOUT_S
    run = None
    while time.monotonic() < deadline:
        ui.dagster.check_alive()
        new = [r for r in graphql(ui.dagster, RUNS)["runsOrError"]["results"] if r["runId"] not in before]
        if new and new[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            run = new[0]
            break
        time.sleep(2)
    assert run is not None, f"the run launched from the UI did not finish within {RUN_TIMEOUT_S} s"
    assert run["status"] == "SUCCESS", f"run {run['runId']} launched from the UI ended {run['status']}:\n{ui.dagster.tail()}"
    page.goto(f"{ui.dagster.url}/runs/{run['runId']}")  # what the UI shows for it
    page.get_by_text("Success", exact=True).first.wait_for()
    latest = graphql(ui.dagster, LATEST_MATERIALIZATION, {"path": ["evaluation"]})
    assert latest["assetOrError"]["assetMaterializations"][0]["runId"] == run["runId"]


def test_mlflow_registry_shows_both_models_with_aliases_and_descriptions(page, ui):
    from mlflow.tracking import MlflowClient

    # The registry too: without it MlflowClient reads the process-wide registry URI, which the last
    # workspace opened in this session set (another workspace's models and aliases).
    client = MlflowClient(tracking_uri=ui.tracking_uri, registry_uri=ui.tracking_uri)
    names = ("synehrgy-gpt", "synehrgy-synthetic-cohort")
    page.goto(f"{ui.mlflow.url}/#/models")
    for name in names:
        page.get_by_role("link", name=name, exact=True).first.wait_for()
    screenshot(page, "mlflow_registry")
    for name in names:
        model = client.get_registered_model(name)
        assert model.aliases, f"{name} has no alias"
        assert (model.description or "").strip(), f"{name} has no description in the registry"
        # A full page load per model: after an in-app move from one model's page to another's, the
        # MLflow UI (3.17) lists "No models versions are registered yet".
        page.goto("about:blank")
        page.goto(f"{ui.mlflow.url}/#/models/{name}")
        page.get_by_text("Description").first.wait_for()
        for alias in model.aliases:
            page.get_by_text(re.compile(rf"^@\s{re.escape(alias)}$")).filter(visible=True).first.wait_for()  # "@&nbsp;alias"
        # The description is Markdown: its first line, rendered, is on the page.
        first = next(line for line in model.description.splitlines() if line.strip(" #*`"))
        text = re.sub(r"[#*`]", "", first).strip()[:40]
        page.wait_for_function("t => document.body.innerText.includes(t)", arg=text)


def test_the_cli_run_shows_in_the_overview(page, ui):
    """A run of the CLI while the UI is up is a run of the code location: its job gets a row on the
    overview's timeline. The session's in-process runs (no origin) get none: the row is the CLI run's.
    Last in the module: the failed run marks the graph's assets."""
    if UI_WORKSPACE:
        pytest.skip("an existing workspace (SYNEHRGY_UI_WORKSPACE) is not written to")
    cli_run_id = cli_run_without_a_source(ui.home)
    runs = {r["runId"]: r for r in graphql(ui.dagster, RUNS)["runsOrError"]["results"]}
    run = runs[cli_run_id]
    assert run["status"] == "FAILURE" and run["jobName"] == "synehrgy_end_to_end", run
    assert run["repositoryOrigin"] == {"repositoryLocationName": "synehrgy", "repositoryName": "__repository__"}
    assert all(r["repositoryOrigin"] is None for r in runs.values() if r["runId"] != cli_run_id
               and r["jobName"] == "synehrgy_end_to_end"), "the premise: the in-process runs have no origin"
    page.goto(f"{ui.dagster.url}/overview/activity/timeline")
    # The job's row (its name links to the job in the location), drawn only for jobs with runs.
    page.locator('a[href="/locations/synehrgy/jobs/synehrgy_end_to_end"]').first.wait_for()
    screenshot(page, "overview_timeline")
