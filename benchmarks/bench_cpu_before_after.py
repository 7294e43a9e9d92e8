"""The CPU figures of this tree against an older commit's, side by side in one run.

    PYTHONPATH=. python benchmarks/bench_cpu_before_after.py --base fbd3779 --rounds 3

The base commit is exported (`git archive`) into a temporary folder; then `benchmarks/bench_model.py`
(training on packed mixed-length windows, and KV-cached sampling) runs in both trees by turns,
base then this tree, `--rounds` times, each in a fresh process at `--threads` torch threads, so
that a load change on a shared machine hits both alike. Prints every run, the medians and their
ratios (this tree / base), and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH_ARGS = ["--n-layer", "2", "--n-head", "4", "--n-embd", "128", "--n-ctx", "512", "--batch-size", "8",
              "--mixed-lengths", "--train-steps", "8", "--warmup-steps", "2", "--sample-n", "32",
              "--sample-batch", "32", "--max-new-tokens", "128"]


def imported_from(tree: Path) -> str:
    """Where the core is imported from in that tree's runs (the tree itself, not an installed copy)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = "import synehrgy_assets.core.model as m; print(m.__file__)"
    path = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()
    if not Path(path).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"{tree}: the core is imported from {path}, not from the tree")
    return path


def run(tree: Path, threads: int, parts: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    skip = [f"--skip-{p}" for p in ("train", "sample") if p not in parts]
    cmd = [sys.executable, str(tree / "benchmarks" / "bench_model.py"), *BENCH_ARGS, *skip, "--threads", str(threads)]
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    row = {f"{p}_tokens_per_s": report[p]["tokens_per_second"] for p in parts}
    return {**row, "load_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="fbd3779")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parts", default="train,sample", help="train, sample or both")
    args = p.parse_args()
    parts = [x for x in args.parts.split(",") if x]
    base_sha = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    head_sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip())
    print(f"command: python {' '.join(sys.argv)}")
    print(f"base {base_sha} vs this tree (HEAD {head_sha}{', with uncommitted changes' if dirty else ''}); "
          f"bench_model.py {' '.join(BENCH_ARGS)} --threads {args.threads}, parts {parts}")
    rows: dict[str, list[dict]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        archive = subprocess.run(["git", "archive", args.base], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        for tree in (base, REPO):
            print(f"core imported from {imported_from(tree)}")
        for r in range(args.rounds):
            for name, tree in (("base", base), ("this", REPO)):
                rows[name].append(run(tree, args.threads, parts))
                print(f"round {r + 1} {name}: {rows[name][-1]}", flush=True)
    summary = {}
    for key in (f"{p}_tokens_per_s" for p in parts):
        b = float(np.median([x[key] for x in rows["base"]]))
        t = float(np.median([x[key] for x in rows["this"]]))
        summary[key] = {"base": round(b, 1), "this": round(t, 1), "ratio": round(t / b, 3)}
        print(f"{key}: base {b:,.0f}, this tree {t:,.0f}, ratio {t / b:.3f}")
    print(json.dumps({"bench": "cpu_before_after", "base": base_sha, "head": head_sha, "dirty": dirty,
                      "threads": args.threads, "rounds": rows, "median": summary}))


if __name__ == "__main__":
    main()
