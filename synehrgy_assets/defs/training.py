"""Stage 3: train the GPT on the token windows; track the run in MLflow; register `candidate`."""


import json
import shutil
import time

import dagster as dg
import numpy as np
from pydantic import Field

from synehrgy_assets.defs._metadata import figure_png, png_markdown
from synehrgy_assets.defs.tokens import token_sequences, tokens_dir, vocabulary_path
from synehrgy_assets.resources import MlflowResource, WorkspaceResource

CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"


class GptTrainingConfig(dg.Config):
    n_layer: int = Field(default=2, description="Transformer blocks.")
    n_head: int = Field(default=4, description="Attention heads.")
    n_embd: int = Field(default=128, description="Embedding width.")
    dropout: float = 0.1
    # CPU defaults keep the quickstart to minutes; raise both on a GPU (see docs/benchmarks.md).
    max_steps: int = Field(default=150, description="Optimizer steps (the CPU default is brief on purpose).")
    batch_size: int = Field(default=8, description="Windows per optimizer step.")
    learning_rate: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    eval_every: int = 25
    seed: int = 0
    device: str = Field(default="auto", description="auto = CUDA (bf16, fused attention) when present, else CPU.")


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

    from synehrgy_assets.core.model import GPT, GPTConfig, save_checkpoint
    from synehrgy_assets.core.tokens import ContextWindows, TokenSequences, TokenVocabulary
    from synehrgy_assets.core.trainer import TrainConfig, resolve_device, train
    from synehrgy_assets.mlflow_models import GENERATOR_MODEL_CODE

    vocab = TokenVocabulary.from_json(vocabulary_path(workspace))
    summary = json.loads((tokens_dir(workspace) / "summary.json").read_text())
    if summary["vocabulary_version"] != vocab.version:
        raise ValueError(
            f"token_sequences were encoded with vocabulary {summary['vocabulary_version']} but the current "
            f"token_vocabulary is {vocab.version}: re-materialize token_sequences first"
        )
    windows = {}
    for split in ("train", "val"):
        seqs = TokenSequences.load(tokens_dir(workspace) / split)
        windows[split] = ContextWindows.load(tokens_dir(workspace) / split / "windows").arrays(seqs)
    if not windows["train"]:
        raise ValueError("gpt_checkpoint: the train split has no token windows")

    device = resolve_device(config.device)
    model_config = GPTConfig(
        vocab_size=vocab.size,
        n_ctx=int(summary["n_ctx"]),
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_embd=config.n_embd,
        dropout=config.dropout,
    )
    train_config = TrainConfig(
        max_steps=config.max_steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        eval_every=config.eval_every,
        seed=config.seed,
        device=str(device),
    )
    model = GPT(model_config)
    context.log.info(
        f"Training GPT ({model.num_parameters():,} parameters) on {device} for {config.max_steps} steps, "
        f"{len(windows['train'])} train windows, n_ctx {model_config.n_ctx}"
    )
    started = time.perf_counter()
    with mlflow_tracking.start_run(context, run_name="gpt_checkpoint", tags={"synehrgy.stage": "train"}) as run:
        mlflow.log_params(
            {
                **{f"model.{k}": v for k, v in model_config.to_dict().items()},
                **{f"train.{k}": v for k, v in config.model_dump().items()},
                "data.vocabulary_version": vocab.version,
                "data.train_windows": len(windows["train"]),
                "data.val_windows": len(windows["val"]),
                "data.train_fraction_of_tokens_used": summary["splits"]["train"]["fraction_of_tokens_used"],
                "model.parameters": model.num_parameters(),
                "device": str(device),
            }
        )
        log_every = max(1, config.max_steps // 10)

        def on_log(entry: dict) -> None:
            step = int(entry["step"])
            metrics = {k: float(v) for k, v in entry.items() if k != "step" and v is not None}
            mlflow.log_metrics(metrics, step=step)
            if step % log_every == 0 or entry.get("val_loss") is not None:
                context.log.info(
                    f"step {step}/{config.max_steps} "
                    + " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
                )

        result = train(model, windows["train"], windows["val"], train_config, pad_id=vocab.pad_id, on_log=on_log)
        ckpt_dir = workspace.artifacts_dir / "checkpoints" / run.info.run_id
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        save_checkpoint(model, ckpt_dir, extra={"vocabulary_version": vocab.version, "mlflow_run_id": run.info.run_id})
        curve = loss_curve_png(result.history)
        mlflow.log_image(_png_to_array(curve), "plots/loss_curve.png")
        final_metrics = {
            "final_train_loss": float(result.final_train_loss),
            "tokens_per_second": float(result.tokens_per_second),
            "train_seconds": float(result.seconds),
        }
        if result.best_val_loss is not None:  # None when the val split has no windows
            final_metrics["best_val_loss"] = float(result.best_val_loss)
        mlflow.log_metrics(final_metrics)
        info = mlflow.pyfunc.log_model(
            name="generator",
            python_model=str(GENERATOR_MODEL_CODE),
            artifacts={"checkpoint": str(ckpt_dir), "vocabulary": str(vocabulary_path(workspace))},
            signature=generator_signature(),
            registered_model_name=mlflow_tracking.model_name,
        )
        version = str(info.registered_model_version)
        client = mlflow_tracking.client()
        client.set_model_version_tag(mlflow_tracking.model_name, version, "vocabulary_version", vocab.version)
        client.set_model_version_tag(mlflow_tracking.model_name, version, "dagster_run_id", context.run.run_id)
        client.set_model_version_tag(mlflow_tracking.model_name, version, "validation_status", "pending")
        client.set_registered_model_alias(mlflow_tracking.model_name, CANDIDATE_ALIAS, version)
    context.log.info(f"Registered {mlflow_tracking.model_name} v{version} with alias '{CANDIDATE_ALIAS}'")
    return dg.MaterializeResult(
        metadata={
            "registered_model": mlflow_tracking.model_name,
            "model_version": version,
            "alias": CANDIDATE_ALIAS,
            "model_uri": f"models:/{mlflow_tracking.model_name}@{CANDIDATE_ALIAS}",
            "mlflow_run_id": run.info.run_id,
            "mlflow": mlflow_tracking.run_url_hint(run.info.run_id),
            "checkpoint_dir": dg.MetadataValue.path(str(ckpt_dir)),
            "parameters": model.num_parameters(),
            **final_metrics,
            "tokens_per_second": round(float(result.tokens_per_second), 1),
            "train_seconds": round(time.perf_counter() - started, 1),
            "device": str(result.device),
            "precision": str(result.precision),
            "loss_curve": png_markdown(curve, "loss curve"),
        }
    )


def generator_signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("long", "n_patients"), ColSpec("long", "seed", required=False)]))


def _png_to_array(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
