"""A training budget in wall time: `budget="30m"` picks the epochs that fit the time on this machine.

The epochs that suit 1,000 patients on 2 cores under-train a 40,000-stay dataset on a laptop
(the validation loss still falls when the epoch cap ends the run) and waste a GPU. With a budget,
a short probe trains a copy of the model for a few steps on the real windows (the same batch size,
context and device) and validates on a sample of the val windows; from the measured seconds per
step and per validation pass, `plan_epochs` picks the most epochs whose steps and once-per-epoch
validations fit the budget left after the probe (with a safety margin), capped at `max_epochs`.
Early stopping still ends the run sooner once the validation loss stops improving.

Pure apart from `probe_throughput`, which runs the trainer; no Dagster.
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smh])")

DEFAULT_MAX_EPOCHS = 100.0
DEFAULT_PROBE_STEPS = 8
DEFAULT_PROBE_VAL_WINDOWS = 64
# Steps vary (packing, other load on the machine); plan for this share of the time left.
SAFETY = 0.9


class BudgetError(ValueError):
    """A budget that cannot be parsed or cannot hold any training."""


def parse_budget(text: str) -> float:
    """Seconds of a budget written like '30m', '1h30m', '90s', '2h', '1.5h'; '' = no budget (0)."""
    text = (text or "").strip().lower()
    if not text:
        return 0.0
    compact = text.replace(" ", "")
    parts = _PART.findall(compact)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != compact:
        raise BudgetError(f"budget '{text}': expected a duration such as '30m', '1h30m', '90s' or '2h'")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise BudgetError(f"budget '{text}' is not positive")
    return seconds


@dataclass
class BudgetPlan:
    """What the budget chose, and from which measurements (all in the run's metadata)."""

    budget_seconds: float
    probe_seconds: float  # wall time of the probe, taken from the budget
    seconds_per_step: float
    eval_seconds: float  # one validation pass over the whole val split
    steps_per_epoch: int
    epochs: float
    max_epochs: float
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def planned_seconds(self) -> float:
        """Training seconds the chosen epochs should take (steps and once-per-epoch validations)."""
        return self.epochs * (self.steps_per_epoch * self.seconds_per_step + self.eval_seconds)


def plan_epochs(budget_seconds: float, probe_seconds: float, seconds_per_step: float, steps_per_epoch: int,
                eval_seconds: float, max_epochs: float = DEFAULT_MAX_EPOCHS, safety: float = SAFETY) -> BudgetPlan:
    """The most epochs (fractional: a run may end inside an epoch) whose steps and one validation per
    epoch fit `safety` x (budget - probe); at most `max_epochs`, at least one step."""
    if seconds_per_step <= 0 or steps_per_epoch < 1:
        raise BudgetError(f"budget: the probe measured {seconds_per_step!r} s per step over "
                          f"{steps_per_epoch} steps per epoch; cannot plan")
    if not max_epochs > 0:
        raise BudgetError(f"budget: max_epochs must be > 0, got {max_epochs!r}")
    left = safety * (budget_seconds - probe_seconds)
    epoch_seconds = steps_per_epoch * seconds_per_step + max(eval_seconds, 0.0)
    fit = left / epoch_seconds if left > 0 else 0.0
    one_step = 1.0 / steps_per_epoch
    if fit >= max_epochs:
        epochs, why = max_epochs, (f"the budget holds {fit:.1f} epochs; capped at max_epochs {max_epochs:g} "
                                   "(early stopping may end it sooner)")
    elif fit >= one_step:
        # Whole steps only, so the plan is what the trainer runs.
        epochs = math.floor(fit * steps_per_epoch) / steps_per_epoch
        why = f"{epochs:.3g} epochs of {epoch_seconds:.1f} s fit {left:.0f} s ({safety:.0%} of the budget after the probe)"
    else:
        epochs, why = one_step, (f"the budget leaves {max(left, 0):.0f} s after the probe, less than one step of "
                                 f"{seconds_per_step:.2f} s: one step only")
    return BudgetPlan(budget_seconds, probe_seconds, seconds_per_step, eval_seconds, steps_per_epoch, epochs,
                      max_epochs, why)


def probe_throughput(model, train_windows: list[np.ndarray], val_windows: list[np.ndarray], config, pad_id: int, *,
                     train_context: np.ndarray | None = None, val_context: np.ndarray | None = None,
                     token_types: np.ndarray | None = None, loss_weights: np.ndarray | None = None,
                     probe_steps: int = DEFAULT_PROBE_STEPS,
                     probe_val_windows: int = DEFAULT_PROBE_VAL_WINDOWS) -> dict:
    """Train a copy of `model` for `probe_steps` steps with `config` (the run's TrainConfig) and
    validate once on a seeded sample of val windows. Returns seconds per step (steps after the first
    two, which pay one-time costs), seconds of one validation over the whole val split, steps per
    epoch and the probe's wall time. `model` itself is not touched."""
    from synehrgy_assets.core.trainer import train

    started = time.perf_counter()
    probe = copy.deepcopy(model)
    n_val = len(val_windows)
    sample = min(n_val, probe_val_windows)
    probe_config = replace(config, epochs=1e6, max_tokens=None, max_steps=max(probe_steps, 3), eval_every=0,
                           val_max_windows=sample or None, patience=None, log_every=1)
    result = train(probe, train_windows, val_windows, probe_config, pad_id, train_context=train_context,
                   val_context=val_context, token_types=token_types, loss_weights=loss_weights)
    records = [h for h in result.history if "elapsed_seconds" in h]
    if len(records) >= 3:
        # elapsed_seconds is taken before a record's validation: steps 3..n are pure training.
        first, last = records[1], records[-1]
        seconds_per_step = (last["elapsed_seconds"] - first["elapsed_seconds"]) / (last["step"] - first["step"])
    else:
        seconds_per_step = result.tokens_seen / max(result.tokens_per_second, 1e-9) / max(result.steps, 1)
    eval_seconds = result.eval_seconds * (n_val / sample) if sample else 0.0
    return {"seconds_per_step": float(seconds_per_step), "eval_seconds": float(eval_seconds),
            "steps_per_epoch": int(result.steps_per_epoch), "probe_seconds": time.perf_counter() - started,
            "probe_steps": int(result.steps)}
