#!/usr/bin/env bash
# One command on a CUDA machine: (1) check that the CUDA paths run at all (bf16 autocast, fused
# AdamW, fused attention, GPU-resident grammar masks, the sampler on the GPU), (2) build the
# full-scale token data (the 1,000-patient synthetic hospital through token_sequences, n_ctx 1024),
# (3) run benchmarks/bench_vs_huggingface.py at the reference's sizes, side by side in one run.
#
#   bash benchmarks/gpu_check.sh            # results: benchmarks/out/vs_huggingface.jsonl (+ $OUT if set)
#
# Sizes can be overridden: STEPS, BATCH, GEN_PATIENTS, GEN_BATCH. Written without a GPU to hand
# (none was lent to the task that wrote it): part (1) fails loudly if a CUDA path does not run.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,bench]"
export PATH="$PWD/.venv/bin:$PATH" PYTHONPATH="$PWD"
WS="${GPU_CHECK_HOME:-/tmp/synehrgy_gpu_check}"
STEPS="${STEPS:-30}" BATCH="${BATCH:-64}" GEN_PATIENTS="${GEN_PATIENTS:-1024}" GEN_BATCH="${GEN_BATCH:-256}"

echo "== 1. CUDA paths"
python - <<'EOF'
import numpy as np, torch
from torch.nn.attention import SDPBackend, sdpa_kernel
assert torch.cuda.is_available(), "no CUDA device visible to torch"
dev = torch.device("cuda")
print("device:", torch.cuda.get_device_name(dev), "torch", torch.__version__, "cuda", torch.version.cuda)
from synehrgy_assets.core.model import GPTConfig
from synehrgy_assets.core.trainer import TrainConfig, init_model, make_optimizer, train
from synehrgy_assets.core.sampler import sample
from tests.test_tokenizer import synthetic_cohort
from synehrgy_assets.core.tokens import GrammarConstraint, TokenVocabulary, VocabularyConfig, encode

# fused attention kernels on bf16, causal (sampling without cache) and with a block mask (packed training)
q = torch.randn(4, 4, 256, 96, device=dev, dtype=torch.bfloat16)
for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
    try:
        with sdpa_kernel(backend):
            torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
        print("sdpa causal bf16:", backend.name, "ok")
    except RuntimeError as exc:
        print("sdpa causal bf16:", backend.name, "NOT available:", str(exc).splitlines()[0])
mask = torch.ones(256, 256, dtype=torch.bool, device=dev).tril()[None, None]
with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
    torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)
print("sdpa with a boolean block mask (packed rows): fused kernel ok")

cohort = synthetic_cohort(120, seed=1)
vocab = TokenVocabulary.fit(cohort, VocabularyConfig())
seqs = encode(cohort, vocab)
windows = [seqs.patient(i)[:257].astype(np.int64) for i in range(len(seqs))]
cfg = GPTConfig(vocab_size=vocab.size, n_ctx=256, n_layer=2, n_head=4, n_embd=128, dropout=0.1,
                condition_table=vocab.condition_table())
model = init_model(cfg, 0)
opt = make_optimizer(model.to(dev), TrainConfig(), dev)
assert opt.defaults.get("fused") is True, "AdamW is not the fused CUDA one"
res = train(model, windows[:100], windows[100:], TrainConfig(max_steps=20, batch_size=8, eval_every=10,
            patience=None, device="cuda"), pad_id=vocab.pad_id)
assert res.precision == "bf16" and res.device.startswith("cuda"), (res.precision, res.device)
assert np.isfinite(res.best_val_loss), res.best_val_loss
print(f"train on cuda: bf16 autocast + fused AdamW ok, val loss {res.best_val_loss:.3f}, "
      f"{res.tokens_per_second:,.0f} tokens/s, peak {res.peak_memory_bytes / 2**20:.0f} MiB")
constraint = GrammarConstraint(vocab, device=dev)
out = sample(model.eval(), 32, bos_id=vocab.bos_id, eos_id=vocab.eos_id, pad_id=vocab.pad_id, batch_size=16,
             max_tokens_per_patient=255, constraint=constraint, device=dev)
assert out.device.startswith("cuda"), out.device
print(f"sample on cuda with GPU-resident grammar masks: {out.n_samples} patients, "
      f"{out.patients_per_second:.1f} patients/s, precision {out.precision}, forced closures {out.n_forced_closures}")
EOF

echo "== 2. full-scale token data in $WS (synthetic hospital, 1000 patients, n_ctx 1024)"
SYNEHRGY_HOME="$WS" python - <<'EOF'
import os
import dagster as dg
from orchestration.definitions import build_definitions
home = os.environ["SYNEHRGY_HOME"]
defs = build_definitions(home=home, mimic_dir="", synthetic_patients=1000)
# everything up to token_sequences (the whole dbt project: its tests read every staging model)
keys = (dg.AssetSelection.all() - dg.AssetSelection.assets("token_sequences").downstream(include_self=False)
        - dg.AssetSelection.assets("meds_export")).resolve(defs.resolve_asset_graph())
job = defs.resolve_job_def("synehrgy_end_to_end")
os.makedirs(f"{home}/dagster_home", exist_ok=True)
with dg.DagsterInstance.local_temp(f"{home}/dagster_home") as instance:
    r = job.execute_in_process(instance=instance, asset_selection=sorted(keys, key=str),
                               run_config={"ops": {"token_sequences": {"config": {"n_ctx": 1024}}}})
    assert r.success
print("tokens ready:", f"{home}/private/token_sequences")
EOF

echo "== 3. ours vs Hugging Face, side by side"
python benchmarks/bench_vs_huggingface.py --tokens-dir "$WS/private/token_sequences" --n-ctx 1024 \
  --train-batch "$BATCH" --train-steps "$STEPS" --warmup-steps 5 \
  --gen-patients "$GEN_PATIENTS" --gen-batch "$GEN_BATCH" --max-length 1024
if [ -n "${OUT:-}" ]; then cp benchmarks/out/vs_huggingface.jsonl "$OUT/"; fi
