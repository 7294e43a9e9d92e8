"""Fitting the generator on the token folder: one `GeneratorFitSpec` in, a trained (and outcome-
calibrated) GPT out. Dagster-free and MLflow-free: the `gpt_checkpoint` asset passes its config in,
tracks the run and writes the metadata.

Two calls, so that the tracking run can open between them: `plan_generator_fit` loads the windows,
builds the model and the training config (a wall-time budget probes this machine first) and names
the resumable state's folder; `fit_generator` trains in one process or under torchrun and
calibrates the outcome logit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from synehrgy_assets.core.devices import resolve_device
from synehrgy_assets.core.model import GPT, GPTConfig
from synehrgy_assets.core.trainer import TrainConfig, TrainResult, init_model, train


@dataclass(frozen=True)
class GeneratorFitSpec:
    """The generator's size, budget and schedule (the `gpt_checkpoint` config's fields, minus how
    often it reports progress; their meanings are in that config's descriptions). 0 = off/none
    for `max_tokens`, `max_steps`, `val_max_windows`; an empty `budget` trains `epochs`."""

    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1
    outcome_conditioning: bool = True
    clocks: bool = True
    epochs: float = 16.0
    max_tokens: int = 0
    max_steps: int = 0
    patience: int = 3
    min_delta: float = 0.0
    budget: str = ""
    budget_max_epochs: float = 100.0
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    eval_every: int = 0
    val_max_windows: int = 0
    checkpoint_every: int = 50
    mortality_loss_weight: float = 1.0
    calibrate_outcome: bool = True
    stay_end_probe_patients: int = 128
    seed: int = 0
    device: str = "auto"
    n_processes: int = 1


@dataclass
class TrainingWindows:
    """The train and val windows of the token folder, with their context-only prefix lengths."""

    summary: dict[str, Any]  # token_sequences' summary.json
    train_sequences: Any  # the train split's TokenSequences (what the windows are cut from)
    windows: dict[str, list[np.ndarray]]
    context_lengths: dict[str, np.ndarray]
    windows_summary: dict[str, dict[str, int]]


def load_training_data(tokens_dir: Path, vocab) -> TrainingWindows:
    """The windows of `tokens_dir`, refused when they were encoded with another vocabulary."""
    from synehrgy_assets.core.tokens import ContextWindows, TokenSequences

    summary = json.loads((tokens_dir / "summary.json").read_text())
    if summary["vocabulary_version"] != vocab.version:
        raise ValueError(
            f"token_sequences were encoded with vocabulary {summary['vocabulary_version']} but the current "
            f"token_vocabulary is {vocab.version}: re-materialize token_sequences first"
        )
    windows, context_lengths, windows_summary, sequences = {}, {}, {}, {}
    for split in ("train", "val"):
        seqs = sequences[split] = TokenSequences.load(tokens_dir / split)
        split_windows = ContextWindows.load(tokens_dir / split / "windows")
        windows[split] = split_windows.arrays(seqs)
        # Leading context-only tokens per window (the context format's prefix and overlap).
        context_lengths[split] = np.asarray(split_windows.context_lengths, dtype=np.int64)
        lengths = np.fromiter((len(w) for w in windows[split]), dtype=np.int64, count=len(windows[split]))
        windows_summary[split] = {
            "windows": len(windows[split]),
            "tokens": int(lengths.sum()),
            "context_tokens": int(context_lengths[split].sum()),
            "target_tokens": int((lengths - np.maximum(context_lengths[split], 1)).sum()),
        }
    if not windows["train"]:
        raise ValueError("gpt_checkpoint: the train split has no token windows")
    return TrainingWindows(summary, sequences["train"], windows, context_lengths, windows_summary)


@dataclass
class GeneratorFitPlan:
    """Everything `fit_generator` needs, decided before training starts."""

    spec: GeneratorFitSpec
    vocab: Any  # TokenVocabulary
    data: TrainingWindows
    tokens_dir: Path
    model: GPT
    model_config: GPTConfig
    train_config: TrainConfig
    loss_weights: np.ndarray | None
    device: str
    resume_key: str
    resume_dir: Path  # the resumable training state: a killed run continues from here
    budget: Any = None  # training_budget.BudgetPlan, with a `budget`


def plan_generator_fit(spec: GeneratorFitSpec, vocab, tokens_dir: Path, resume_root: Path,
                       log: Callable[[str], None]) -> GeneratorFitPlan:
    """Load the windows, build the GPT and the training config, and resolve a budget into epochs.
    The resumable state goes to a folder under `resume_root` named by the spec, vocabulary and windows."""
    data = load_training_data(Path(tokens_dir), vocab)
    device = resolve_device(spec.device)
    model_config = GPTConfig(
        vocab_size=vocab.size,
        n_ctx=int(data.summary["n_ctx"]),
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        n_embd=spec.n_embd,
        dropout=spec.dropout,
        condition_table=vocab.condition_table() if spec.outcome_conditioning else None,
        clocks=vocab.clocks() if spec.clocks else None,
    )
    train_config = TrainConfig(
        epochs=spec.epochs,
        max_tokens=spec.max_tokens or None,
        max_steps=spec.max_steps or None,
        batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        weight_decay=spec.weight_decay,
        warmup_steps=spec.warmup_steps,
        eval_every=spec.eval_every,
        val_max_windows=spec.val_max_windows or None,
        patience=spec.patience,
        min_delta=spec.min_delta,
        checkpoint_every=spec.checkpoint_every,
        seed=spec.seed,
        device=str(device),
    )
    loss_weights = None
    if spec.mortality_loss_weight != 1.0:
        loss_weights = np.ones(vocab.size, dtype=np.float32)
        loss_weights[vocab.mortality_base:vocab.mortality_base + 2] = spec.mortality_loss_weight
    model = init_model(model_config, spec.seed)
    # The same spec, vocabulary and windows find the state a killed run left behind.
    resume_key = hashlib.sha256(
        json.dumps({"config": asdict(spec), "vocabulary_version": vocab.version, "windows": data.windows_summary},
                   sort_keys=True).encode()
    ).hexdigest()[:16]
    plan = GeneratorFitPlan(spec, vocab, data, Path(tokens_dir), model, model_config, train_config, loss_weights,
                            str(device), resume_key, Path(resume_root) / resume_key)
    if spec.budget:  # the epochs that fit the time on this machine (core/training_budget.py)
        plan.budget = _budget_plan(plan, log)
        # The planned epochs come from a probe; the deadline holds the budget if the machine slows.
        plan.train_config = dataclasses.replace(
            train_config, epochs=plan.budget.epochs,
            deadline_seconds=max(plan.budget.budget_seconds - plan.budget.probe_seconds, 1.0))
    log(
        f"Training GPT ({model.num_parameters():,} parameters) on {device}: {plan.train_config.epochs:g} epochs"
        + (f" (at most {spec.max_steps} steps)" if spec.max_steps else "")
        + f", {len(data.windows['train'])} train / {len(data.windows['val'])} val windows, "
        f"n_ctx {model_config.n_ctx}, resumable state in {plan.resume_dir}"
    )
    return plan


def _budget_plan(plan: GeneratorFitPlan, log: Callable[[str], None]):
    """The epochs `spec.budget` holds on this machine: a probe (a few steps of a copy of the model)
    measures the throughput, `plan_epochs` picks the epochs; a resumed run reuses its first plan."""
    from synehrgy_assets.core.training_budget import (
        BudgetError,
        BudgetPlan,
        parse_budget,
        plan_epochs,
        probe_throughput,
    )

    spec, data, resume_dir = plan.spec, plan.data, plan.resume_dir
    seconds = parse_budget(spec.budget)
    if spec.max_tokens:
        raise BudgetError("gpt_checkpoint: set either `budget` or `max_tokens`, not both")
    if spec.n_processes > 1:
        raise BudgetError("gpt_checkpoint: `budget` probes one process; with n_processes > 1 set `epochs`")
    saved = resume_dir / "budget_plan.json"
    if saved.exists():  # the same epochs, so the saved training state still matches
        budget = BudgetPlan(**json.loads(saved.read_text()))
        log(f"Budget {spec.budget}: resuming with the plan of the first run, {budget.epochs:.3g} epochs")
        return budget
    probe = probe_throughput(plan.model, data.windows["train"], data.windows["val"], plan.train_config,
                             plan.vocab.pad_id, train_context=data.context_lengths["train"],
                             val_context=data.context_lengths["val"], token_types=plan.vocab.token_types,
                             loss_weights=plan.loss_weights)
    budget = plan_epochs(seconds, probe["probe_seconds"], probe["seconds_per_step"], probe["steps_per_epoch"],
                         probe["eval_seconds"], max_epochs=spec.budget_max_epochs)
    log(f"Budget {spec.budget}: a {probe['probe_steps']}-step probe ({budget.probe_seconds:.1f} s) measured "
        f"{budget.seconds_per_step:.3f} s per step, {budget.steps_per_epoch} steps per epoch and "
        f"{budget.eval_seconds:.1f} s per validation: {budget.epochs:.3g} epochs ({budget.reason}; "
        f"epochs={spec.epochs:g} without a budget)")
    resume_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(budget.to_dict()))
    return budget


@dataclass
class GeneratorFit:
    result: TrainResult
    calibration: Any = None  # calibration.OutcomeCalibration, with `calibrate_outcome`
    stay_calibration: Any = None  # stay_calibration.StayEndCalibration, with `stay_end_probe_patients`


def fit_generator(plan: GeneratorFitPlan, ddp_dir: Path, *, on_log: Callable[[dict], None] | None = None,
                  log: Callable[[str], None]) -> GeneratorFit:
    """Train `plan.model` in place (best validation weights), then shift its outcome logit.

    `ddp_dir`: where torchrun's spec, initial weights and result go with `n_processes` > 1
    (real-derived: a private folder)."""
    spec, vocab, data = plan.spec, plan.vocab, plan.data
    if spec.n_processes > 1:
        # torchrun DDP: n_processes processes train from these initial weights (core/ddp_entry.py).
        from synehrgy_assets.core.ddp_entry import train_with_torchrun

        log(f"Launching torchrun with {spec.n_processes} processes")
        result = train_with_torchrun(
            plan.model, spec.n_processes, ddp_dir, {"kind": "token_dir", "path": plan.tokens_dir},
            plan.train_config, vocab.pad_id, token_types=vocab.token_types, loss_weights=plan.loss_weights,
            checkpoint_dir=plan.resume_dir, on_log=on_log, log=log,
        )
    else:
        result = train(
            plan.model, data.windows["train"], data.windows["val"], plan.train_config, pad_id=vocab.pad_id,
            on_log=on_log, train_context=data.context_lengths["train"], val_context=data.context_lengths["val"],
            token_types=vocab.token_types, loss_weights=plan.loss_weights, checkpoint_dir=plan.resume_dir,
            log=log,
        )
    calibration = None
    if spec.calibrate_outcome:  # one logit shift, saved in the checkpoint's config (core/calibration.py)
        from synehrgy_assets.core.calibration import calibrate_outcome

        calibration = calibrate_outcome(plan.model, data.windows["train"], data.context_lengths["train"],
                                        vocab.mortality_base, vocab.mortality_base + 1, vocab.pad_id)
        # Only the shift is said: the before/after means are train aggregates.
        log(f"Outcome calibration: MORTALITY//1 logit shifted by {calibration.logit_shift:+.3f}"
            if calibration.applied else f"Outcome calibration skipped: {calibration.reason}")
    return GeneratorFit(result, calibration, calibrate_stays(plan, log))


def calibrate_stays(plan: GeneratorFitPlan, log: Callable[[str], None]):
    """The `</ts>` shift (core/stay_calibration.py) on probes of sampled patients, each capped as
    the synthesis caps them; None when `stay_end_probe_patients` is 0."""
    n_probe = plan.spec.stay_end_probe_patients
    if not n_probe:
        return None
    from synehrgy_assets.core.generation import length_cap
    from synehrgy_assets.core.stay_calibration import calibrate_stay_end

    cap, _ = length_cap(None, plan.data.summary.get("max_tokens_per_patient_default"), plan.model_config.n_ctx)
    log(f"Stay-end calibration: sampling {n_probe} patients twice")
    result = calibrate_stay_end(plan.model, plan.vocab, np.asarray(plan.data.train_sequences.tokens),
                                n_probe=n_probe, max_tokens_per_patient=cap, seed=plan.spec.seed)
    # Only the shift is said: rows per stay are train aggregates.
    log(f"Stay-end calibration: </ts> logit shifted by {result.logit_shift:+.3f}"
        if result.applied else f"Stay-end calibration skipped: {result.reason}")
    return result
