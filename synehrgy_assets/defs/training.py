"""Stage 3: train the GPT on the token windows; track the run in MLflow; register `candidate`."""


import shutil
import time

import dagster as dg
import numpy as np
from pydantic import Field

from synehrgy_assets.defs._metadata import Progress, figure_png, png_markdown
from synehrgy_assets.defs.tokens import token_sequences
from synehrgy_assets.resources import MlflowResource, WorkspaceResource

CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"


class GptTrainingConfig(dg.Config):
    # Model size (CPU-friendly provisional defaults; raise them on a GPU, see docs/benchmarks.md).
    n_layer: int = Field(default=2, description="Transformer blocks.")
    n_head: int = Field(default=4, description="Attention heads (must divide n_embd).")
    n_embd: int = Field(default=128, description="Embedding width.")
    dropout: float = Field(default=0.1, description="Dropout on embeddings and the residual branches "
                           "(attention weights have none: on CPU it costs ~44 % of a step).")
    outcome_conditioning: bool = Field(
        default=True,
        description="Add a learned embedding of the running outcome condition (visit start / MORTALITY//0 / //1) "
        "at every position (GPTConfig.condition_table = vocabulary.condition_table()).",
    )
    clocks: bool = Field(
        default=True,
        description="Add learned embeddings of the stay's hours so far and the visit's diagnosis and procedure "
        "counts while codes are written, at every position (GPTConfig.clocks = vocabulary.clocks(); "
        "docs/tokens.md section 7).",
    )
    # Budget and schedule.
    epochs: float = Field(default=16.0, description="Training budget in epochs over the train windows.")
    max_tokens: int = Field(
        default=0, description="Budget in supervised target tokens instead of epochs; 0 = use `epochs`."
    )
    max_steps: int = Field(default=0, description="Cap on optimizer steps; 0 = as many as the budget gives.")
    patience: int = Field(
        default=3, description="Early stopping: evaluations without a better val loss before stopping; 0 = off."
    )
    min_delta: float = Field(
        default=0.0, ge=0.0, description="Early stopping: a val loss must beat the best by more than this "
        "(nats) to count as better, so a plateau of tiny gains stops the run too; 0 = any gain counts.")
    budget: str = Field(
        default="", description="Wall-time budget for training, e.g. '30m', '1h30m', '90s': a short probe "
        "measures this machine's seconds per step on these windows and the epochs are the most that fit "
        "(at most budget_max_epochs; early stopping may end sooner, and training stops at the budget's end if the "
        "machine slows down after the probe); replaces `epochs`. Empty = `epochs`. "
        "The choice is in the run log and the asset metadata (`budget`).")
    budget_max_epochs: float = Field(
        default=100.0, gt=0, description="Cap on the epochs a budget may choose (small data on a fast machine).")
    batch_size: int = Field(default=8, description="Packed rows of n_ctx positions per optimizer step.")
    learning_rate: float = Field(default=2e-3, description="Peak learning rate (after warmup; cosine decay after).")
    weight_decay: float = Field(default=0.1, description="AdamW weight decay on matrices and embeddings.")
    warmup_steps: int = Field(default=20, description="Linear learning-rate warmup steps.")
    eval_every: int = Field(default=0, description="Steps between validations; 0 = once per epoch.")
    val_max_windows: int = Field(
        default=0, description="Validate on a seeded sample of at most this many val windows; 0 = the whole split."
    )
    checkpoint_every: int = Field(
        default=50, description="Steps between resumable training states (a killed run resumes from the last one)."
    )
    mortality_loss_weight: float = Field(
        default=1.0, description="Loss weight of the two MORTALITY target tokens (1 = unweighted)."
    )
    calibrate_outcome: bool = Field(
        default=True,
        description="After training, shift the MORTALITY//1 logit so that the model's mean predicted death "
        "probability over the train visits equals their observed death share (core/calibration.py); the sampled "
        "death rate then matches the real one. Skipped when either outcome has fewer than 10 train visits.",
    )
    stay_end_probe_patients: int = Field(
        default=128, ge=0,
        description="After training, sample this many patients (twice) and shift the `</ts>` logit so that the "
        "sampled ICU stays have as many measurement rows, on average, as the real train stays "
        "(core/stay_calibration.py); a model that closes stays too rarely once it has rolled past its context "
        "writes stays that are too long otherwise. 0 = off.",
    )
    seed: int = Field(default=0, description="Seed of the initial weights, the batch order and dropout.")
    device: str = Field(default="auto", description="auto = CUDA (bf16, fused attention) when present, else CPU.")
    n_processes: int = Field(
        default=1, ge=1,
        description="Training processes on this node: > 1 launches torchrun (DDP: gloo on CPU, one GPU per "
        "process with NCCL), batch_size rows per process (global batch x n_processes); its output streams into this log (docs/deploy.md).")
    progress_every_seconds: float = Field(
        default=10.0, description="At most one progress observation (step, epoch, losses, ETA) per this many "
        "seconds, plus one at every validation.")


def loss_curve_png(history: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    steps = [h["step"] for h in history if "train_loss" in h]
    ax.plot(steps, [h["train_loss"] for h in history if "train_loss" in h], label="train")
    val = [(h["step"], h["val_loss"]) for h in history if h.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val), marker="o", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_title("GPT training loss")
    ax.legend()
    return figure_png(fig)


@dg.asset(
    group_name="model",
    deps=[token_sequences],
    kinds={"pytorch", "mlflow"},
    description=(
        "A GPT (nanoGPT-style, tied embeddings, KV cache) trained on the train windows; run tracked in "
        "MLflow; registered with alias `candidate` (aliases, never stages)."
    ),
)
def gpt_checkpoint(
    context: dg.AssetExecutionContext,
    config: GptTrainingConfig,
    workspace: WorkspaceResource,
    mlflow_tracking: MlflowResource,
) -> dg.MaterializeResult:
    import mlflow

    from synehrgy_assets.core.generator_fit import GeneratorFitSpec, fit_generator, plan_generator_fit
    from synehrgy_assets.core.model import save_checkpoint
    from synehrgy_assets.core.tokens import TokenVocabulary
    from synehrgy_assets.mlflow_models import training_dataset

    vocab = TokenVocabulary.from_json(workspace.layout.vocabulary)
    plan = plan_generator_fit(GeneratorFitSpec(**config.model_dump(exclude={"progress_every_seconds"})), vocab,
                              workspace.layout.tokens, workspace.layout.resume_checkpoints, log=context.log.info)
    model, summary = plan.model, plan.data.summary
    data = training_data(vocab, summary, plan.data.train_sequences)
    started = time.perf_counter()
    with mlflow_tracking.start_run(context, run_name="gpt_checkpoint", tags={"synehrgy.stage": "train"}) as run:
        mlflow.log_params(training_params(config, plan, vocab))
        mlflow.log_input(training_dataset(data), context="training")

        on_log = training_logger(context, config, plan.train_config.epochs)
        fit = fit_generator(plan, workspace.layout.ddp / plan.resume_key, on_log=on_log,
                            log=context.log.info)
        result, calibration = fit.result, fit.calibration
        if calibration is not None and calibration.applied:
            mlflow.log_metric("final_outcome_logit_shift", calibration.logit_shift)
        if fit.stay_calibration is not None and fit.stay_calibration.applied:
            mlflow.log_metric("final_stay_end_logit_shift", fit.stay_calibration.logit_shift)
        ckpt_dir = workspace.layout.checkpoints / run.info.run_id
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        # The generation cap travels with the weights, so a consumer of the registered model
        # generates patients as long as the graph does.
        save_checkpoint(model, ckpt_dir, extra={
            "vocabulary_version": vocab.version, "mlflow_run_id": run.info.run_id,
            "max_tokens_per_patient": summary.get("max_tokens_per_patient_default")})
        curve = loss_curve_png(result.history)
        mlflow.log_image(_png_to_array(curve), "plots/loss_curve.png")
        # One summary, logged once under `final_*` names (never into a per-step series) and shown
        # under the same names and values in the Dagster metadata.
        final_metrics = final_train_metrics(result)
        mlflow.log_metrics(final_metrics)
        version = register_generator(context, mlflow_tracking, ckpt_dir, workspace.layout.vocabulary, data)
    shutil.rmtree(plan.resume_dir, ignore_errors=True)  # the run succeeded: nothing left to resume
    context.log.info(f"Registered {mlflow_tracking.model_name} v{version} with alias '{CANDIDATE_ALIAS}'")
    return dg.MaterializeResult(
        metadata={
            "registered_model": mlflow_tracking.model_name,
            "model_version": version,
            "alias": CANDIDATE_ALIAS,
            "model_uri": f"models:/{mlflow_tracking.model_name}@{CANDIDATE_ALIAS}",
            "mlflow_run_id": run.info.run_id,
            "mlflow_run": mlflow_tracking.run_url(run.info.run_id, run.info.experiment_id),
            "mlflow_model_version": mlflow_tracking.model_version_url(mlflow_tracking.model_name, version),
            **training_metadata(config, plan, fit, ckpt_dir, final_metrics, curve,
                                asset_seconds=round(time.perf_counter() - started, 1)),
        }
    )


def training_params(config: GptTrainingConfig, plan, vocab) -> dict:
    """The run's MLflow params: the model's shape, the training config, the windows it trains on, the
    device and, when a wall-time budget chose the epochs, that choice."""
    model_config, windows, summary, budget = plan.model_config, plan.data.windows, plan.data.summary, plan.budget
    return {
        **{f"model.{k}": v for k, v in model_config.to_dict().items()
           if k not in ("condition_table", "clocks", "logit_bias")},
        "model.clocks": ",".join(c["name"] for c in model_config.clocks or []) or "none",
        **{f"train.{k}": v for k, v in config.model_dump().items()},
        "data.vocabulary_version": vocab.version,
        "data.train_windows": len(windows["train"]),
        "data.val_windows": len(windows["val"]),
        "data.train_context_tokens": plan.data.windows_summary["train"]["context_tokens"],
        **{
            f"data.train_{k}": v for k, v in summary["splits"]["train"].items()
            if k in ("header_in_context_share", "history_in_context_share", "window_tokens_per_target")
        },
        "model.parameters": plan.model.num_parameters(),
        "device": str(plan.device),
        **({"train.budget_epochs": budget.epochs, "train.budget_seconds_per_step": budget.seconds_per_step}
           if budget else {}),
    }


def register_generator(context: dg.AssetExecutionContext, mlflow_tracking: MlflowResource, ckpt_dir,
                       vocabulary_path, data) -> str:
    """Log the checkpoint and vocabulary as a pyfunc model of the active run, register it, tag the new
    version (its training data, the Dagster run, validation `pending`) and point `candidate` at it.
    Returns the version."""
    import mlflow

    from synehrgy_assets.mlflow_models import (
        GENERATOR_INPUT_EXAMPLE, GENERATOR_MODEL_CODE, generator_signature, input_example,
    )  # fmt: skip

    info = mlflow.pyfunc.log_model(
        name="generator",
        python_model=str(GENERATOR_MODEL_CODE),
        artifacts={"checkpoint": str(ckpt_dir), "vocabulary": str(vocabulary_path)},
        signature=generator_signature(),
        input_example=input_example(GENERATOR_INPUT_EXAMPLE),
        registered_model_name=mlflow_tracking.model_name,
    )
    version = str(info.registered_model_version)
    client = mlflow_tracking.client()
    tag_generator(client, mlflow_tracking.model_name, version, data)
    client.set_model_version_tag(mlflow_tracking.model_name, version, "dagster_run_id", context.run.run_id)
    client.set_model_version_tag(mlflow_tracking.model_name, version, "validation_status", "pending")
    client.set_registered_model_alias(mlflow_tracking.model_name, CANDIDATE_ALIAS, version)
    return version


def training_data(vocab, summary: dict, train_seqs):
    """What this generator is trained on (core/training_data.py): the staging build that token_sequences
    recorded, the digest of the train token arrays, the train patient count and the vocabulary's contents."""
    from synehrgy_assets.core.training_data import UNKNOWN, TrainingData, sequences_digest, vocabulary_contents

    staging = summary.get("staging") or {}  # sequences encoded before it was recorded: unknown
    digest = sequences_digest({"tokens": train_seqs.tokens, "offsets": train_seqs.offsets}, vocab.version)
    return TrainingData(kind=staging.get("source_kind", UNKNOWN), folder=staging.get("source_folder", UNKNOWN),
                        source_fingerprint=staging.get("source_fingerprint", UNKNOWN), digest=digest,
                        vocabulary_version=vocab.version, n_train_patients=len(train_seqs),
                        staging_build_id=staging.get("build_id", ""), vocabulary=vocabulary_contents(vocab))


def tag_generator(client, name: str, version: str, data) -> None:
    """The version's training data and the synehrgy release that made it as model-version tags; the
    registered model carries what it is and the newest version's data source."""
    from synehrgy_assets.mlflow_models import registered_model_tags, synehrgy_version

    for key, value in {**data.tags(), "synehrgy_version": synehrgy_version()}.items():
        client.set_model_version_tag(name, version, key, value)
    for key, value in registered_model_tags("generator", data).items():
        client.set_registered_model_tag(name, key, value)


def training_logger(context: dg.AssetExecutionContext, config: GptTrainingConfig, epochs: float):
    """The trainer's `on_log`: each history record to the MLflow run's step series, to the progress
    observations and, at a validation, to the run log."""
    import mlflow

    progress = Progress(context, every_seconds=config.progress_every_seconds)

    def on_log(entry: dict) -> None:
        mlflow.log_metrics(step_metrics(entry), step=int(entry["step"]))
        # --- progress (AssetObservation; the CLI draws it as a bar) ---
        progress.report(
            training_fraction(entry, config, epochs), force=entry.get("val_loss") is not None,
            step=int(entry["step"]), epoch=round(float(entry["epoch"]), 3),
            train_loss=round(float(entry["train_loss"]), 4),
            val_loss=None if entry.get("val_loss") is None else round(float(entry["val_loss"]), 4),
            best_val_loss=None if entry.get("best_val_loss") is None else round(float(entry["best_val_loss"]), 4),
        )
        if entry.get("val_loss") is not None:
            context.log.info(
                f"step {entry['step']} epoch {entry['epoch']:.2f}: train_loss {entry['train_loss']:.4f} "
                f"val_loss {entry['val_loss']:.4f} (best {entry['best_val_loss']:.4f}), "
                f"{entry['tokens_per_second']:.0f} tokens/s"
            )

    return on_log


def calibration_note(calibration) -> str:
    """applied / not applied: why / not applied (off), for the outcome and the stay-end calibration."""
    if calibration is None:
        return "not applied (off)"
    return "applied" if calibration.applied else f"not applied: {calibration.reason}"


def training_metadata(config: GptTrainingConfig, plan, fit, ckpt_dir, final_metrics: dict, curve: bytes,
                      asset_seconds: float) -> dict:
    """The training outcome in the asset's metadata (after the registration's keys)."""
    model, model_config, budget = plan.model, plan.model_config, plan.budget
    result, calibration = fit.result, fit.calibration
    return {
        "checkpoint_dir": dg.MetadataValue.path(str(ckpt_dir)),
        "parameters": model.num_parameters(),
        "outcome_conditioning": config.outcome_conditioning,
        "clocks": ", ".join(c["name"] for c in model_config.clocks or []) or "none",
        "val_loss_by_type": dg.MetadataValue.md(val_loss_table(result)),
        # the same names and values as the run's final_* metrics in MLflow
        **{k: v for k, v in final_metrics.items() if "/" not in k},
        # the same name and value as the MLflow metric
        **({"final_outcome_logit_shift": calibration.logit_shift} if calibration and calibration.applied else {}),
        "outcome_calibration": calibration_note(calibration),
        **({"final_stay_end_logit_shift": fit.stay_calibration.logit_shift}
           if fit.stay_calibration and fit.stay_calibration.applied else {}),
        "stay_end_calibration": calibration_note(fit.stay_calibration),
        "resumed_from_step": result.resumed_from_step,
        "val_windows": result.val_windows,
        "val_tokens": result.val_tokens,
        # wall time of the whole asset (loading, training, logging, registering): not final_train_seconds
        "asset_seconds": asset_seconds,
        "device": str(result.device),
        "precision": str(result.precision),
        "loss_curve": png_markdown(curve, "loss curve"),
        **({"budget": dg.MetadataValue.json(budget.to_dict()), "budget_choice": budget.reason,
            "budget_epochs": budget.epochs} if budget else {}),
    }


# The trainer's history names, as per-step MLflow series: `tokens_per_second` there is the throughput
# of the steps since the previous log record, not the run's (final_train_tokens_per_second).
STEP_METRIC_NAMES = {"tokens_per_second": "window_tokens_per_second"}


def step_metrics(entry: dict) -> dict[str, float]:
    """The per-step values of a trainer history record, flat (`val_loss/<type>` per type group)."""
    metrics = {
        STEP_METRIC_NAMES.get(k, k): float(v) for k, v in entry.items()
        if k != "step" and v is not None and not isinstance(v, dict)
    }
    metrics.update({f"val_loss/{k}": float(v) for k, v in entry.get("val_loss_by_type", {}).items()})
    return metrics


def training_fraction(entry: dict, config: GptTrainingConfig, epochs: float | None = None) -> float:
    """Share of the training budget a history record has reached: epochs (`epochs`, else the
    config's; or max_tokens), or max_steps when that cap comes first. Early stopping can end a run
    before 1."""
    epochs = epochs or config.epochs
    parts = [entry["tokens_seen"] / config.max_tokens if config.max_tokens else entry["epoch"] / epochs]
    if config.max_steps:
        parts.append(entry["step"] / config.max_steps)
    return max(parts)


def final_train_metrics(result) -> dict[str, float]:
    """The run's summary: each a single value, all named `final_*`. Training seconds and tokens per
    second are the trainer's (TrainResult.seconds / .tokens_per_second: supervised targets per second
    of optimizer steps, evaluation and checkpoint time excluded)."""
    metrics = {
        "final_train_loss": float(result.final_train_loss),
        "final_train_tokens_per_second": float(result.tokens_per_second),
        "final_train_seconds": float(result.seconds),
        "final_steps": float(result.steps),
        "final_epochs_run": float(result.epochs_run),
        "final_stopped_early": float(result.stopped_early),
        "final_stopped_at_deadline": float(result.stopped_at_deadline),
        "final_padding_fraction": float(result.padding_fraction),
    }
    if result.best_val_loss is not None:  # None when the val split has no windows
        metrics["final_best_val_loss"] = float(result.best_val_loss)
        metrics["final_best_step"] = float(result.best_step)
    if result.unigram_baseline is not None:
        metrics["final_unigram_baseline"] = float(result.unigram_baseline)
    # constants of the data and the best evaluation, beside the val_loss/<type> step series
    metrics.update({f"final_unigram_baseline/{k}": float(v) for k, v in result.unigram_baseline_by_type.items()})
    metrics.update({f"final_val_loss/{k}": float(v) for k, v in result.val_loss_by_type.items()})
    return metrics


def val_loss_table(result) -> str:
    """Markdown: val loss per type group of the target beside the unigram baseline."""
    if not result.val_loss_by_type:
        return "no validation windows"
    lines = [
        "| target type | val targets | val loss | unigram baseline | loss / baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    for group, loss in result.val_loss_by_type.items():
        base = result.unigram_baseline_by_type.get(group)
        ratio = f"{loss / base:.3f}" if base else "–"
        lines.append(
            f"| {group} | {result.val_tokens_by_type.get(group, 0):,} | {loss:.4f} | "
            f"{'–' if base is None else f'{base:.4f}'} | {ratio} |"
        )
    total_base = "–" if result.unigram_baseline is None else f"{result.unigram_baseline:.4f}"
    lines.append(f"| **all** | {result.val_tokens:,} | {result.best_val_loss:.4f} | {total_base} | |")
    lines.append("")
    lines.append(
        "Unigram baseline: -log p(token | its type) with add-one smoothed train frequencies, i.e. a model "
        f"that knows the grammar and nothing else; val loss at the best step ({result.best_step})."
    )
    return "\n".join(lines)


def _png_to_array(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
