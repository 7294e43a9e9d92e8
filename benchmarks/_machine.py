"""What machine a benchmark ran on (shared by the benchmark scripts)."""

import platform


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# bf16 dense tensor-core peaks (TFLOP/s, no sparsity) from the vendors' datasheets. The same chip
# differs by form factor: an H100 SXM runs at 989, a PCIe card at 756, an NVL card at 835; the H200
# SXM at 989 and the H200 NVL at 835. Matched in order: the form factor before the bare chip name.
GPU_BF16_PEAK_TFLOPS: tuple[tuple[str, str, float], ...] = (
    ("H200 NVL", "H200 NVL", 835.0),
    ("H200", "H200 SXM", 989.0),
    ("H100 NVL", "H100 NVL", 835.0),
    ("H100 PCIe", "H100 PCIe", 756.0),
    ("H100", "H100 SXM", 989.0),  # "NVIDIA H100 80GB HBM3": the SXM module
    ("A100", "A100", 312.0),
    ("L40S", "L40S", 362.0),
    ("L4", "L4", 121.0),
    ("A10", "A10", 125.0),
)


def gpu_bf16_peak(device_name: str) -> tuple[float, str]:
    """(peak FLOP/s, what it is) for a CUDA device name; NaN when the chip is not in the table."""
    for key, label, tflops in GPU_BF16_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops * 1e12, f"{label} bf16 dense peak {tflops:g} TFLOP/s (from '{device_name}')"
    return float("nan"), f"'{device_name}': unknown peak (pass --peak-tflops)"
