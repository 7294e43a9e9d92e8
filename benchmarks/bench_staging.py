"""Benchmark dbt_mimic staging at scale; prints one JSON line and appends it to benchmarks/out/staging.jsonl.

    PATH=.venv/bin:$PATH python benchmarks/bench_staging.py \
        --chartevents-rows 100000000 --patients 20000 --threads 2 --memory-limit 6GB

The raw set is either reused (`--raw DIR`) or written by the synthetic hospital into `--raw`
(default /tmp/synehrgy_bench/raw_<rows>_<patients>); generation is skipped when the folder's
`synehrgy_bench_raw.json` records a set of the same size, and its time is reported apart.
dbt runs as subprocesses (`dbt seed`, `dbt run`, `dbt test`, or one `dbt build`) on a fresh
DuckDB file (`--duckdb`; an existing file is only replaced if this script created it). Peak RSS
is measured two ways: polling /proc (sum of VmRSS over the dbt process tree every 0.2 s) and the
`ru_maxrss` that `os.wait4` returns for each dbt process. Extrapolations to full MIMIC-III are
linear in CHARTEVENTS+LABEVENTS rows and are labelled as such. With real MIMIC, put `--duckdb` and
`--temp-dir` inside the workspace: the warehouse and DuckDB's spill files hold real rows.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synehrgy_assets.core.mimic_layout import resolve_mimic_dir  # noqa: E402
from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script

BENCH_ROOT = Path("/tmp/synehrgy_bench")
RAW_SUMMARY = "synehrgy_bench_raw.json"
RESULTS = REPO / "benchmarks" / "out" / "staging.jsonl"
DBT_PROJECT = REPO / "dbt_mimic"  # --project-dir points elsewhere, e.g. a copy holding a proposed change

# Full MIMIC-III v1.4 sizes used for the linear extrapolation (the full-data staging time).
FULL_CHARTEVENTS_ROWS = 330_000_000
FULL_LABEVENTS_ROWS = 28_000_000
TARGET_WALL_S = 15 * 60
TARGET_RSS_BYTES = 8 * 10**9
POLL_SECONDS = 0.2


# ---------------------------------------------------------------------------------------------
# Machine
# ---------------------------------------------------------------------------------------------


def _mem_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_bytes": _mem_total_bytes(),
        "python": platform.python_version(),
        "duckdb": _version("duckdb"),
        "dbt_core": _version("dbt-core"),
        "dbt_duckdb": _version("dbt-duckdb"),
        "kernel": platform.release(),
    }


# ---------------------------------------------------------------------------------------------
# Process-tree sampler: peak RSS (sum over the tree) and peak size of the spill directory
# ---------------------------------------------------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: fields start after the last ')'
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _tree_rss_bytes(root: int) -> int:
    children = _children_map()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def _dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


@dataclass
class Sampler:
    """Polls a process tree's RSS and a directory's size in a background thread."""

    pid: int
    spill_dir: Path
    peak_rss: int = 0
    peak_spill: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, _tree_rss_bytes(self.pid))
            self.peak_spill = max(self.peak_spill, _dir_bytes(self.spill_dir))
            self._stop.wait(POLL_SECONDS)

    def __enter__(self) -> "Sampler":
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# ---------------------------------------------------------------------------------------------
# Raw set
# ---------------------------------------------------------------------------------------------

def _read_summary(raw: Path) -> dict | None:
    path = raw / RAW_SUMMARY
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _file_sizes(raw: Path) -> dict[str, int]:
    return {table: path.stat().st_size for table, path in resolve_mimic_dir(raw).files.items()}


def _wanted_config(args: argparse.Namespace) -> dict:
    return {"patients": args.patients, "chartevents_rows_target": args.chartevents_rows, "seed": args.seed,
            "upper": args.upper, "compress": not args.no_compress}


def ensure_raw(raw: Path, args: argparse.Namespace) -> dict:
    """Generate the synthetic set into `raw` unless its summary already records this size.

    The generator runs in a child process (`--generate-only`) so that its memory neither inflates
    this process nor, through exec's inherited high-water mark, the dbt children's ru_maxrss.
    """
    summary = _read_summary(raw)
    if summary is not None and summary.get("config") == _wanted_config(args):
        return summary | {"generated_now": False}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--generate-only", "--raw", str(raw),
           "--chartevents-rows", str(args.chartevents_rows), "--patients", str(args.patients),
           "--seed", str(args.seed)] + (["--upper"] if args.upper else []) \
        + (["--no-compress"] if args.no_compress else [])
    started = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"generating the synthetic set into {raw} failed (exit {proc.returncode})")
    summary = _read_summary(raw)
    summary["generate_wall_s"] = round(time.perf_counter() - started, 2)
    summary["generate_peak_rss_bytes"] = usage.ru_maxrss * 1024
    (raw / RAW_SUMMARY).write_text(json.dumps(summary, indent=1))
    return summary | {"generated_now": True}


def generate_only(raw: Path, args: argparse.Namespace) -> dict:
    """Write the synthetic set and its summary file (runs in the `--generate-only` child)."""
    from synehrgy_assets.core.synthetic_hospital import HospitalConfig, generate_hospital

    wanted = _wanted_config(args)
    (raw / RAW_SUMMARY).unlink(missing_ok=True)
    config = HospitalConfig(n_patients=args.patients, seed=args.seed,
                            header_case="upper" if args.upper else "lower",
                            compress=not args.no_compress, chartevents_rows_target=args.chartevents_rows)
    started = time.perf_counter()
    result = generate_hospital(raw, config, progress=lambda msg: print(f"[generate] {msg}", file=sys.stderr,
                                                                         flush=True))
    summary = {
        "config": wanted,
        "rows": {table.lower(): n for table, n in result.rows.items()},
        "n_icustays": result.n_icustays,
        "n_admissions": result.n_admissions,
        "generator_seconds": round(time.perf_counter() - started, 2),
    }
    (raw / RAW_SUMMARY).write_text(json.dumps(summary, indent=1))
    return summary


def count_rows(raw: Path, tables: list[str]) -> dict[str, int]:
    """Row counts by a full CSV scan (slow on big gzip files; only when no summary exists)."""
    import duckdb

    files = resolve_mimic_dir(raw).files
    con = duckdb.connect()
    out = {}
    for table in tables:
        path = str(files[table]).replace("'", "''")
        out[table] = con.execute(
            f"select count(*) from read_csv('{path}', header=true, all_varchar=true, "
            f"delim=',', quote='\"', escape='\"')").fetchone()[0]
    con.close()
    return out


def decompress_copy(raw: Path, dest: Path) -> dict:
    """`dest` gets every table of `raw` as a plain TABLE.csv (the layout prefers .csv over .csv.gz)."""
    source_summary = _read_summary(raw)
    existing = _read_summary(dest)
    if existing is not None and existing.get("decompressed_from") == str(raw) \
            and existing.get("config") == (source_summary or {}).get("config"):
        return existing | {"decompressed_now": False}
    dest.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    per_table = {}
    for table, path in resolve_mimic_dir(raw).files.items():
        target = dest / (path.name[:-3] if path.name.lower().endswith(".gz") else path.name)
        t0 = time.perf_counter()
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 16 * 2**20)
        else:
            shutil.copyfile(path, target)
        per_table[table] = round(time.perf_counter() - t0, 2)
    summary = dict(source_summary or {})
    summary.update({"decompressed_from": str(raw), "decompress_wall_s": round(time.perf_counter() - started, 2),
                    "decompress_wall_s_per_table": per_table})
    (dest / RAW_SUMMARY).write_text(json.dumps(summary, indent=1))
    return summary | {"decompressed_now": True}


# ---------------------------------------------------------------------------------------------
# dbt
# ---------------------------------------------------------------------------------------------

def _cpu_seconds_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_dbt(command: str, args: argparse.Namespace, vars_json: str, env: dict, work: Path,
            log) -> dict:
    """One dbt subprocess, sampled; returns wall, CPU, peak RSS and the per-node timings."""
    target = work / "dbt_target"
    cmd = ["dbt", command, "--project-dir", str(args.project_dir), "--profiles-dir", str(args.project_dir),
           "--target-path", str(target), "--log-path", str(work / "dbt_logs"), "--vars", vars_json]
    if args.select and command != "seed":
        cmd += ["--select", *args.select.split()]
        if command in ("test", "build"):
            # only tests whose every parent is selected (a relationship test to an unbuilt model
            # would otherwise fail)
            cmd += ["--indirect-selection", "cautious"]
    cpu0 = _cpu_seconds_children()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(work))
    with Sampler(proc.pid, Path(env["SYNEHRGY_DUCKDB_TEMP_DIR"])) as sampler:
        # wait4: this child's own rusage (ru_maxrss of the dbt process itself)
        _, status, usage = os.wait4(proc.pid, 0)
    rc = proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    result = {
        "command": f"dbt {command}",
        "rc": rc,
        "wall_s": round(wall, 2),
        "cpu_s": round(_cpu_seconds_children() - cpu0, 2),
        "peak_rss_tree_bytes": sampler.peak_rss,
        "ru_maxrss_bytes": usage.ru_maxrss * 1024,
        "peak_spill_bytes": sampler.peak_spill,
        "load_avg_end": os.getloadavg(),
    }
    results_file = target / "run_results.json"
    if results_file.is_file() and results_file.stat().st_mtime >= time.time() - wall - 1:
        nodes = json.loads(results_file.read_text()).get("results", [])
        timing = {}
        for node in nodes:
            kind = node["unique_id"].split(".", 1)[0]
            timing.setdefault(kind, {"n": 0, "sum_s": 0.0})
            timing[kind]["n"] += 1
            timing[kind]["sum_s"] = round(timing[kind]["sum_s"] + (node.get("execution_time") or 0.0), 2)
            status = node.get("status") or "none"
            timing[kind][status] = timing[kind].get(status, 0) + 1
        slow = sorted(nodes, key=lambda n: -(n.get("execution_time") or 0.0))[:6]
        result["nodes"] = timing
        result["slowest"] = [[n["unique_id"].split(".")[-1], round(n.get("execution_time") or 0.0, 2), n.get("status")]
                             for n in slow]
    return result


def warehouse_rows(path: Path) -> dict[str, int | None]:
    """Row counts of the big staging tables (after dbt: they show the share of raw rows kept)."""
    import duckdb

    out: dict[str, int | None] = {}
    if not path.exists():
        return out
    con = duckdb.connect(str(path), read_only=True)
    try:
        for table in ("int_events_filtered", "int_measurements_classified", "measurements", "visits"):
            try:
                out[table] = con.execute(f"select count(*) from main.{table}").fetchone()[0]
            except duckdb.Error:
                out[table] = None
    finally:
        con.close()
    return out


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def _extrapolate(chart_rows: int | None, lab_rows: int | None, wall_s: float, peak_rss: int) -> dict | None:
    if not chart_rows:
        return None
    measured = chart_rows + (lab_rows or 0)
    factor = (FULL_CHARTEVENTS_ROWS + FULL_LABEVENTS_ROWS) / measured
    wall = wall_s * factor
    rss = peak_rss * factor
    return {
        "assumption": "EXTRAPOLATED: staging wall and peak RSS both linear in CHARTEVENTS+LABEVENTS rows, "
                      "from the measured run (same machine, same threads/memory limit, same per-row mix)",
        "to_rows": {"chartevents": FULL_CHARTEVENTS_ROWS, "labevents": FULL_LABEVENTS_ROWS},
        "factor": round(factor, 3),
        "wall_s": round(wall, 1),
        "peak_rss_bytes": int(rss),
        "meets_wall_target_15min": wall <= TARGET_WALL_S,
        "meets_rss_target_8GB": rss <= TARGET_RSS_BYTES,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raw", type=Path, default=None, help="raw MIMIC folder (reused, or generated into)")
    p.add_argument("--chartevents-rows", type=int, default=None, help="generate a synthetic set of this size")
    p.add_argument("--patients", type=int, default=None, help="patients of the generated set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--upper", action="store_true", help="generate the full-release layout (UPPERCASE, quoted)")
    p.add_argument("--no-compress", action="store_true", help="generate TABLE.csv instead of TABLE.csv.gz")
    p.add_argument("--plain-csv", action="store_true",
                   help="stage from a decompressed copy (<raw>_csv/TABLE.csv); the gunzip time is reported")
    p.add_argument("--count-rows", action="store_true",
                   help="count CHARTEVENTS/LABEVENTS rows by a scan when the raw folder has no summary")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory-limit", default="6GB")
    p.add_argument("--temp-dir", type=Path, default=BENCH_ROOT,
                   help="DuckDB spills into TEMP_DIR/bench_staging_spill (emptied before and after)")
    p.add_argument("--duckdb", type=Path, default=BENCH_ROOT / "warehouse.duckdb",
                   help="warehouse file, replaced every run (dbt target and log go next to it)")
    p.add_argument("--project-dir", type=Path, default=DBT_PROJECT,
                   help="dbt project (default: the repo's dbt_mimic; profiles.yml is read from it too)")
    p.add_argument("--select", default=None, help="dbt node selection (default: everything)")
    p.add_argument("--mode", choices=("split", "build"), default="split",
                   help="split: dbt seed, run, test timed apart; build: one dbt build")
    p.add_argument("--skip-tests", action="store_true", help="split mode: no dbt test")
    p.add_argument("--label", default="", help="free text stored with the result")
    p.add_argument("--generate-only", action="store_true", help="only write the synthetic set (internal step)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.raw is None and args.chartevents_rows is None:
        p.error("give --raw DIR (existing set) or --chartevents-rows N --patients P (generate one)")
    if args.chartevents_rows is not None and args.patients is None:
        p.error("--chartevents-rows needs --patients")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.generate_only:
        if args.raw is None or args.chartevents_rows is None:
            raise SystemExit("--generate-only needs --raw, --chartevents-rows and --patients")
        return generate_only(args.raw, args)
    if shutil.which("dbt") is None:
        raise SystemExit("dbt is not on PATH (put the project venv's bin first on PATH)")
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_start = os.getloadavg()
    report: dict = {"started_at": started_at, "label": args.label, "machine": machine_info(),
                    "load_avg_start": load_start}

    if args.chartevents_rows is not None:
        raw = args.raw or BENCH_ROOT / f"raw_{args.chartevents_rows}_{args.patients}"
        summary = ensure_raw(raw, args)
    else:
        raw = args.raw
        summary = _read_summary(raw)
        if summary is None and args.count_rows:
            summary = {"rows": count_rows(raw, ["chartevents", "labevents"]), "rows_from": "count"}
    summary = summary or {}
    report["raw"] = {"dir": str(raw), "generated_now": summary.get("generated_now"),
                     "generate_wall_s": summary.get("generate_wall_s"),
                     "generate_peak_rss_bytes": summary.get("generate_peak_rss_bytes"),
                     "rows": summary.get("rows"), "n_icustays": summary.get("n_icustays")}
    stage_dir = raw
    if args.plain_csv:
        stage_dir = raw.parent / f"{raw.name}_csv"
        copy = decompress_copy(raw, stage_dir)
        report["raw"]["decompressed_to"] = str(stage_dir)
        report["raw"]["decompress_wall_s"] = copy.get("decompress_wall_s")
        report["raw"]["decompress_wall_s_per_table"] = copy.get("decompress_wall_s_per_table")
    files = resolve_mimic_dir(stage_dir)
    report["raw"]["staged_from"] = str(stage_dir)
    report["raw"]["bytes"] = _file_sizes(stage_dir)
    report["raw"]["formats"] = sorted({p.name.split(".", 1)[1] for p in files.files.values()})

    # fresh warehouse, spill dir and dbt target every run; only what this script made is deleted
    marker = args.duckdb.with_name(args.duckdb.name + ".bench-owned")
    if args.duckdb.exists() and not marker.exists():
        raise SystemExit(f"--duckdb {args.duckdb} exists and was not created by bench_staging.py; "
                         "choose another path or delete it yourself")
    args.duckdb.parent.mkdir(parents=True, exist_ok=True)
    for stale in (args.duckdb, args.duckdb.with_name(args.duckdb.name + ".wal")):
        stale.unlink(missing_ok=True)
    marker.touch()
    spill = args.temp_dir / "bench_staging_spill"
    shutil.rmtree(spill, ignore_errors=True)
    spill.mkdir(parents=True)
    work = args.duckdb.parent / "bench_staging_dbt"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    env = dict(os.environ,
               SYNEHRGY_DUCKDB_PATH=str(args.duckdb.resolve()),
               SYNEHRGY_DUCKDB_THREADS=str(args.threads),
               SYNEHRGY_DUCKDB_MEMORY_LIMIT=args.memory_limit,
               SYNEHRGY_DUCKDB_TEMP_DIR=str(spill.resolve()),
               DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    report["settings"] = {"threads": args.threads, "memory_limit": args.memory_limit, "mode": args.mode,
                          "project_dir": str(args.project_dir),
                          "select": args.select, "duckdb": str(args.duckdb), "temp_dir": str(args.temp_dir)}
    vars_json = json.dumps(files.dbt_vars())
    commands = ["build"] if args.mode == "build" else ["seed", "run"] + ([] if args.skip_tests else ["test"])
    phases = []
    log_path = work / "dbt_output.log"
    with open(log_path, "w") as log:
        for command in commands:
            print(f"[bench] dbt {command} ...", file=sys.stderr, flush=True)
            phase = run_dbt(command, args, vars_json, env, work, log)
            phases.append(phase)
            print(f"[bench] dbt {command}: rc {phase['rc']} in {phase['wall_s']} s", file=sys.stderr, flush=True)
            if phase["rc"] != 0:
                break
    report["phases"] = phases
    report["ok"] = all(p["rc"] == 0 for p in phases) and len(phases) == len(commands)
    if not report["ok"]:
        tail = log_path.read_text()[-3000:]
        print(f"[bench] dbt failed; log {log_path}:\n{tail}", file=sys.stderr)

    by = {p["command"].split()[1]: p for p in phases}
    total = sum(p["wall_s"] for p in phases)
    peak_tree = max((p["peak_rss_tree_bytes"] for p in phases), default=0)
    rows = summary.get("rows") or {}
    chart_rows, lab_rows = rows.get("chartevents"), rows.get("labevents")
    report["result"] = {
        "dbt_total_wall_s": round(total, 2),
        "dbt_seed_wall_s": by.get("seed", {}).get("wall_s"),
        "dbt_run_wall_s": by.get("run", {}).get("wall_s"),
        "dbt_test_wall_s": by.get("test", {}).get("wall_s"),
        "dbt_build_wall_s": by.get("build", {}).get("wall_s"),
        "dbt_cpu_s": round(sum(p["cpu_s"] for p in phases), 2),
        # CHARTEVENTS rows per second of total dbt wall (seed + run + test, or build)
        "chartevents_rows_per_s": round(chart_rows / total) if chart_rows and total else None,
        "peak_rss_tree_bytes": peak_tree,
        "peak_rss_method": "max over phases of the summed VmRSS of the dbt process tree, polled every 0.2 s",
        "ru_maxrss_dbt_bytes": max((p["ru_maxrss_bytes"] for p in phases), default=0),
        "ru_maxrss_method": "max over phases of wait4() ru_maxrss of the dbt process (Linux counts the "
                            "parent's high-water mark at exec: floor = bench_self_maxrss_bytes)",
        "bench_self_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_spill_bytes": max((p["peak_spill_bytes"] for p in phases), default=0),
        "duckdb_file_bytes": args.duckdb.stat().st_size if args.duckdb.exists() else None,
    }
    # read after dbt (and after ru_maxrss of the children was taken), so it cannot inflate them
    report["result"]["warehouse_rows"] = warehouse_rows(args.duckdb)
    filtered = report["result"]["warehouse_rows"].get("int_events_filtered")
    if filtered and chart_rows:
        report["result"]["events_kept_by_itemid_filter"] = round(filtered / (chart_rows + (lab_rows or 0)), 4)
    # staging cost excluding the one-off gunzip, and including it when --plain-csv was used
    report["extrapolation"] = _extrapolate(chart_rows, lab_rows, total, peak_tree)
    if args.plain_csv and report["raw"].get("decompress_wall_s"):
        report["extrapolation_with_gunzip"] = _extrapolate(
            chart_rows, lab_rows, total + report["raw"]["decompress_wall_s"], peak_tree)
    report["load_avg_end"] = os.getloadavg()
    shutil.rmtree(spill, ignore_errors=True)

    line = json.dumps(report)
    print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write(line + "\n")
    if not report["ok"]:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
