"""Train the GPT in N processes with torchrun: the launcher and the per-process entry point.

The caller writes a *training spec* (JSON: model and train config, where the windows are, where the
result goes) and calls `run_torchrun(spec_path, n_processes, ...)`. On one node it starts the N
processes itself, with the environment torchrun would give them, around a rendezvous store that
listens on 127.0.0.1 only (`torchrun --standalone`'s store listens on every interface, so anyone
on the network could join or poison the rendezvous), and gloo / NCCL bound to the loopback
interface. With `extra_args` (a configured multi-node rendezvous) it runs

    python -m torch.distributed.run <extra_args> --nproc_per_node=N -m synehrgy_assets.core.ddp_entry --spec SPEC

Every process builds the same initial weights (`init_model(model_config, init_seed)`), loads the
windows and calls `trainer.train` unchanged: `train` sees WORLD_SIZE > 1 and trains with DDP
(`core/distributed.py`). Rank 0 prints each history record as one `SYNEHRGY_TRAIN_RECORD {json}`
line, which the launcher turns back into `on_log` calls as they arrive (the rest of the output goes
to `log`, line by line), and writes the best weights and the `TrainResult` into the spec's
`output_dir`. Multi-node: run the same module under torchrun on every node with `--nnodes`,
`--node_rank` and a shared `--rdzv_endpoint` (docs/deploy.md).

Windows come either from a token folder of `token_sequences` (`{"kind": "token_dir", "path": ...}`:
`<path>/<split>` sequences with `<path>/<split>/windows`) or from flat arrays
(`{"kind": "arrays", "path": ...}`: `<split>_tokens.npy`, `<split>_offsets.npy`,
`<split>_context.npy`, see `write_window_arrays`). Both hold real-patient data: keep them, the spec
and the output inside the workspace's private folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

RECORD_PREFIX = "SYNEHRGY_TRAIN_RECORD "
ERROR_PREFIX = "SYNEHRGY_TRAIN_ERROR "
WEIGHTS_FILE = "weights.pt"
RESULT_FILE = "result.json"
SPLITS = ("train", "val")


# ---------------------------------------------------------------- windows on disk


def write_window_arrays(directory: str | Path, split: str, windows: list[np.ndarray],
                        context: np.ndarray | None = None) -> None:
    """Windows of one split as flat arrays (tokens, offsets, context lengths) for `kind: arrays`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lengths = np.fromiter((len(w) for w in windows), dtype=np.int64, count=len(windows))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.concatenate([np.asarray(w, dtype=np.int64) for w in windows]) if windows else np.zeros(0, np.int64)
    np.save(directory / f"{split}_tokens.npy", tokens)
    np.save(directory / f"{split}_offsets.npy", offsets)
    np.save(directory / f"{split}_context.npy",
            np.zeros(len(windows), np.int64) if context is None else np.asarray(context, dtype=np.int64))


def load_windows(data: dict[str, Any], split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """(windows, context lengths) of one split as the spec's `data` describes them."""
    kind, path = data.get("kind"), Path(data.get("path", ""))
    if kind == "token_dir":
        from synehrgy_assets.core.tokens import ContextWindows, TokenSequences

        seqs = TokenSequences.load(path / split)
        split_windows = ContextWindows.load(path / split / "windows")
        return split_windows.arrays(seqs), np.asarray(split_windows.context_lengths, dtype=np.int64)
    if kind == "arrays":
        names = {n: path / f"{split}_{n}.npy" for n in ("tokens", "offsets", "context")}
        for name, file in names.items():
            if not file.is_file():
                raise FileNotFoundError(f"training spec data: {file} is missing (expected the {split} {name} array)")
        tokens = np.load(names["tokens"], mmap_mode="r")
        offsets = np.load(names["offsets"])
        windows = [np.asarray(tokens[offsets[i]:offsets[i + 1]]) for i in range(len(offsets) - 1)]
        return windows, np.load(names["context"])
    raise ValueError(f"training spec data.kind must be 'token_dir' or 'arrays', got {kind!r}")


# ---------------------------------------------------------------- the spec


def write_spec(path: str | Path, *, model_config: dict, init_seed: int, train_config: dict, data: dict,
               pad_id: int, output_dir: str | Path, token_types: np.ndarray | None = None,
               loss_weights: np.ndarray | None = None, checkpoint_dir: str | Path | None = None,
               initial_weights: str | Path | None = None) -> Path:
    """Write a training spec (and its token_types / loss_weights arrays beside it). With
    `initial_weights` (a state_dict file) every process starts from those weights instead of
    `init_model(model_config, init_seed)`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {
        "model_config": model_config, "init_seed": int(init_seed), "train_config": train_config,
        "data": {k: str(v) for k, v in data.items()}, "pad_id": int(pad_id), "output_dir": str(output_dir),
        "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir),
        "token_types": None, "loss_weights": None, "initial_weights": None,
    }
    for name, arr in (("token_types", token_types), ("loss_weights", loss_weights)):
        if arr is not None:
            file = path.with_name(f"{path.stem}.{name}.npy")
            np.save(file, np.asarray(arr))
            spec[name] = str(file)
    if initial_weights is not None:
        spec["initial_weights"] = str(initial_weights)
    path.write_text(json.dumps(spec, indent=1))
    return path


def run_spec(spec_path: str | Path, emit: Callable[[str], None] = print) -> None:
    """One process's part (run by torchrun): train as the spec says; rank 0 writes the result."""
    import torch

    from synehrgy_assets.core.model import GPTConfig
    from synehrgy_assets.core.trainer import TrainConfig, init_model, train

    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ.get("RANK", "0"))
    model = init_model(GPTConfig.from_dict(spec["model_config"]), spec["init_seed"])
    if spec.get("initial_weights"):
        model.load_state_dict(torch.load(spec["initial_weights"], map_location="cpu", weights_only=True))
    windows = {split: load_windows(spec["data"], split) for split in SPLITS}
    arrays = {name: None if spec.get(name) is None else np.load(spec[name]) for name in ("token_types", "loss_weights")}

    def on_log(record: dict) -> None:
        emit(RECORD_PREFIX + json.dumps(record))

    world = int(os.environ.get("WORLD_SIZE", "1"))
    emit(f"ddp: rank {rank} of {world} processes, {len(windows['train'][0])} train / "
         f"{len(windows['val'][0])} val windows, {spec['train_config']['batch_size']} rows per process "
         f"(global batch {spec['train_config']['batch_size'] * world})")

    result = train(
        model, windows["train"][0], windows["val"][0], TrainConfig(**spec["train_config"]),
        pad_id=spec["pad_id"], on_log=on_log,
        train_context=windows["train"][1], val_context=windows["val"][1],
        token_types=arrays["token_types"], loss_weights=arrays["loss_weights"],
        checkpoint_dir=spec.get("checkpoint_dir"), log=emit,
    )
    if rank == 0:
        out = Path(spec["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / WEIGHTS_FILE)
        (out / RESULT_FILE).write_text(json.dumps(asdict(result)))
        best = "none" if result.best_val_loss is None else f"{result.best_val_loss:.4f}"
        emit(f"ddp: {result.steps} steps on {world} x {result.device}, best val loss {best}, "
             f"{result.tokens_per_second:.0f} target tokens/s")


# ---------------------------------------------------------------- the launcher


def torchrun_command(spec_path: str | Path, n_processes: int, extra_args: list[str] | None = None) -> list[str]:
    """`python -m torch.distributed.run` with a configured rendezvous (`extra_args`; default
    `--standalone`, whose store listens on every interface: `run_torchrun` uses it only when asked)."""
    rendezvous = extra_args if extra_args else ["--standalone"]
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous, f"--nproc_per_node={int(n_processes)}",
            "-m", "synehrgy_assets.core.ddp_entry", "--spec", str(spec_path)]


def entry_command(spec_path: str | Path) -> list[str]:
    return [sys.executable, "-m", "synehrgy_assets.core.ddp_entry", "--spec", str(spec_path)]


def loopback_interface() -> str:
    names = {name for _, name in socket.if_nameindex()}
    return "lo" if "lo" in names else ("lo0" if "lo0" in names else "lo")


def loopback_store():
    """(TCPStore server, port): the rendezvous store on 127.0.0.1 only. The socket is bound here and
    handed over to the store (which closes it), because the store's own bind takes every interface."""
    import torch.distributed as dist

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = sock.getsockname()[1]
    except OSError:
        sock.close()
        raise
    store = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False, master_listen_fd=sock.detach())
    return store, port


def loopback_env(env: dict, rank: int, n_processes: int, port: int) -> dict:
    """What torchrun sets for a worker, pointed at the launcher's store (all ranks are clients)."""
    iface = loopback_interface()
    return {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "GROUP_RANK": "0", "ROLE_RANK": str(rank),
            "WORLD_SIZE": str(n_processes), "LOCAL_WORLD_SIZE": str(n_processes), "ROLE_WORLD_SIZE": str(n_processes),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "TORCHELASTIC_USE_AGENT_STORE": "True",
            "TORCHELASTIC_RESTART_COUNT": "0",
            "GLOO_SOCKET_IFNAME": env.get("GLOO_SOCKET_IFNAME", iface),
            "NCCL_SOCKET_IFNAME": env.get("NCCL_SOCKET_IFNAME", iface)}


def _launch_on_loopback(spec_path, n_processes: int, env: dict, on_line: Callable[[str], None]) -> int:
    """Run N ranks of the entry point on this node; a rank that fails stops the others (as torchrun
    does). Their output goes through one pipe to `on_line`. Returns the first non-zero exit code, or 0."""
    store, port = loopback_store()
    read_fd, write_fd = os.pipe()
    procs = []
    try:
        for rank in range(n_processes):
            procs.append(subprocess.Popen(entry_command(spec_path), stdout=write_fd, stderr=subprocess.STDOUT,
                                          env=loopback_env(env, rank, n_processes, port)))
    finally:
        os.close(write_fd)
    failed: list[int] = []

    def watch() -> None:
        while any(p.poll() is None for p in procs):
            bad = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if bad and not failed:
                failed.append(bad[0])
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                deadline = time.monotonic() + 10
                while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                    time.sleep(0.1)
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with os.fdopen(read_fd, "r", buffering=1) as lines:
            for line in lines:
                on_line(line.rstrip("\n"))
    finally:
        for p in procs:
            p.wait()
        watcher.join()
        del store
    codes = [p.returncode for p in procs]
    return failed[0] if failed else next((c for c in codes if c != 0), 0)


def run_torchrun(
    spec_path: str | Path,
    n_processes: int,
    model=None,
    on_log: Callable[[dict], None] | None = None,
    log: Callable[[str], None] | None = None,
    threads_per_process: int | None = None,
    extra_args: list[str] | None = None,
):
    """Run the spec in `n_processes` processes; stream records to `on_log` and lines to `log`.

    Without `extra_args` the ranks meet on 127.0.0.1 (see module doc); with them, torchrun runs with
    that rendezvous. Returns the `TrainResult` of rank 0; with `model`, loads the trained (best)
    weights into it. Raises RuntimeError with the tail of the output when a process fails."""
    import torch

    from synehrgy_assets.core.trainer import TrainResult

    if n_processes < 1:
        raise ValueError(f"run_torchrun: n_processes must be >= 1, got {n_processes}")
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["output_dir"])
    for stale in (out / WEIGHTS_FILE, out / RESULT_FILE):
        stale.unlink(missing_ok=True)
    env = dict(os.environ)
    threads = threads_per_process or max(1, (os.cpu_count() or 1) // n_processes)
    env["OMP_NUM_THREADS"] = str(threads)
    tail: deque[str] = deque(maxlen=40)
    errors: list[str] = []  # each failing rank's exception, first in the error message

    def on_line(line: str) -> None:
        at = line.find(RECORD_PREFIX)
        if at >= 0:
            if on_log is not None:
                on_log(json.loads(line[at + len(RECORD_PREFIX):]))
            return
        if ERROR_PREFIX in line:
            errors.append(line[line.find(ERROR_PREFIX) + len(ERROR_PREFIX):])
        tail.append(line)
        if log is not None and line.strip():
            log(line)

    if extra_args:
        cmd = torchrun_command(spec_path, n_processes, extra_args)
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              bufsize=1) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                on_line(line.rstrip("\n"))
            code = proc.wait()
    else:
        cmd = entry_command(spec_path) + [f"(x{n_processes}, rendezvous on 127.0.0.1)"]
        code = _launch_on_loopback(spec_path, n_processes, env, on_line)
    if code != 0:
        raise RuntimeError(f"torchrun ({n_processes} processes) failed with exit code {code}: "
                           + "; ".join(errors or ["no process reported an error"])
                           + "\ncommand: " + " ".join(cmd) + "\noutput tail:\n" + "\n".join(tail))
    if not (out / RESULT_FILE).is_file():
        raise RuntimeError(f"torchrun finished but wrote no {out / RESULT_FILE}:\n" + "\n".join(tail))
    raw = json.loads((out / RESULT_FILE).read_text())
    known = {f.name for f in fields(TrainResult)}
    result = TrainResult(**{k: v for k, v in raw.items() if k in known})
    if model is not None:
        model.load_state_dict(torch.load(out / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return result


def train_with_torchrun(model, n_processes: int, work_dir: str | Path, data: dict, train_config,
                        pad_id: int, *, token_types: np.ndarray | None = None,
                        loss_weights: np.ndarray | None = None, checkpoint_dir: str | Path | None = None,
                        on_log: Callable[[dict], None] | None = None, log: Callable[[str], None] | None = None):
    """`trainer.train`, but in `n_processes` torchrun processes starting from `model`'s weights.

    The spec, the initial weights and the result go to `work_dir` (real-derived: keep it in the
    workspace's private folder, removed after a success); on return `model` holds the trained weights."""
    import torch

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    initial = work_dir / "initial_weights.pt"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, initial)
    spec = write_spec(work_dir / "spec.json", model_config=model.config.to_dict(), init_seed=0,
                      train_config=train_config.to_dict(), data=data, pad_id=pad_id,
                      output_dir=work_dir / "out", token_types=token_types, loss_weights=loss_weights,
                      checkpoint_dir=checkpoint_dir, initial_weights=initial)
    result = run_torchrun(spec, n_processes, model=model, on_log=on_log, log=log)
    shutil.rmtree(work_dir, ignore_errors=True)  # done: the weights are in `model` now
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One torchrun process of GPT training (synehrgy).")
    parser.add_argument("--spec", required=True, help="training spec JSON written by ddp_entry.write_spec")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))

    def emit(message: str) -> None:
        if rank == 0:
            print(message, flush=True)

    try:
        run_spec(args.spec, emit)
    except Exception as exc:  # every rank reports its own failure, then torchrun stops the others
        print(f"{ERROR_PREFIX}rank {rank}: {type(exc).__name__}: {exc}", flush=True)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
