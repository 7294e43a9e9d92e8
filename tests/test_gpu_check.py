"""benchmarks/gpu_check.sh cannot rot between GPU loans: its CPU smoke run goes through every stage
with dagster, mlflow, dbt and duckdb unimportable, as on the bare GPU image."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("preflight", "data", "train_small", "train_mid", "train_10m", "generate")


def bench_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(REPO), **extra)
    return env


def test_the_cpu_smoke_run_passes_every_stage_without_the_heavy_stack(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu-smoke"], cwd=tmp_path,
                          env=bench_env(OUT=str(out), GPU_CHECK_WORK=str(tmp_path / "work"), PYTHON=sys.executable),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    status = [json.loads(line) for line in (out / "status.jsonl").read_text().splitlines()]
    assert [s["stage"] for s in status] == list(STAGES)
    assert all(s["rc"] == 0 and not s["timed_out"] for s in status), status
    assert sum(s["budget"] for s in status) <= 8 * 60  # the whole GPU run's budget (the smoke run gets 4x)
    results = {stage: json.loads((out / f"{stage}.json").read_text()) for stage in STAGES}
    assert all(r["complete"] for r in results.values())
    assert results["preflight"]["heavy_modules_loaded"] == []
    assert results["preflight"]["peak_flops"] > 0
    for stage in ("train_small", "train_mid", "train_10m"):
        ours = results[stage]["ours_eager"]
        assert ours["tokens_per_s"] > 0 and 0 < ours["mfu"] < 1, (stage, ours)
        for hf in ("hf_fp32", "hf_bf16_tf32"):  # measured, or skipped only for want of transformers
            row = results[stage][hf]
            assert row.get("tokens_per_s", 0) > 0 or row.get("skipped") == "transformers is not installed", row
    assert any(k.startswith("ScaledDotProduct") or "scaled_dot_product" in k
               for k, _ in results["train_10m"]["profile_eager"]["attention_kernels_us"])
    gen = results["generate"]
    assert gen["decode_syncs"]["steps"] > 0 and math.isfinite(gen["decode_syncs"]["host_reads_per_step"])
    assert gen["ours_b4"]["patients_per_s"] > 0
    assert (out / "gpu_check.log").is_file()
    assert len(list(out.iterdir())) <= 8  # what the device tool brings back from $OUT


def test_the_heavy_stack_is_unimportable_on_the_benchmark_path():
    code = "import sys; sys.argv = ['x']; import gpu_bench; import duckdb"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO / "benchmarks", env=bench_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "'duckdb' is blocked" in proc.stderr, proc.stderr[-2000:]


def test_the_blocker_refuses_a_process_that_already_imported_the_heavy_stack():
    code = "import sys; sys.argv = ['x']; sys.modules['mlflow'] = object(); import gpu_bench"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO / "benchmarks", env=bench_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "already imported before the blocker: ['mlflow']" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0), ("NVIDIA H200 NVL", 835.0), ("NVIDIA A100-SXM4-80GB", 312.0),
])
def test_the_peak_follows_the_form_factor(name, tflops):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from _machine import gpu_bf16_peak
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    peak, source = gpu_bf16_peak(name)
    assert peak == tflops * 1e12 and name in source
    assert math.isnan(gpu_bf16_peak("Some Future GPU")[0])
