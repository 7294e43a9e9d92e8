"""Generation = continuous-batching, KV-cached, grammar-constrained sampling (sliding the context
window for long patients) + decoding into a staged-cohort shape.

`Generator` is the one way to generate: the synthesis asset (`defs/synthesis.py`), the `generate`
CLI and the generator's MLflow pyfunc (both through `consumer.py`) load it the same way
(`find_generator_files`), sample with one `SamplingParams` and one length cap (`length_cap`).
Conditional generation (`where=`) is exact rejection sampling on decoded patients
(`core/conditions.py`, docs/consumers.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

CHECKPOINT_FILES = ("config.json", "model.safetensors")
VOCABULARY_FILE = "token_vocabulary.json"
# Conditional generation samples at most this many patients per patient asked for, unless told
# otherwise: an acceptance rate under 2 % is refused rather than run for hours.
DEFAULT_ATTEMPTS_PER_PATIENT = 50


@dataclass(frozen=True)
class SamplingParams:
    """Every sampling knob, once. Options that users give as "0 = off" (`top_k`, `top_p`) or
    "0 = the default" (`max_tokens_per_patient`) become None here and nowhere else."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    max_tokens_per_patient: int | None = None  # None = the cap stored with the generator (`length_cap`)
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    max_visits: int = 16
    # The patient rules of core/tokens/consistency.py (one person across visits, a database's items,
    # rows that agree). Off only to measure what they cost (benchmarks/bench_consistency.py).
    consistency: bool = True

    def __post_init__(self):
        for name in ("top_k", "top_p", "max_tokens_per_patient"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 (0 = off/default), got {value}")
            object.__setattr__(self, name, value or None)
        if self.top_p is not None and self.top_p > 1:
            raise ValueError(f"top_p must be in (0, 1] (0 = off), got {self.top_p}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "seed", int(self.seed))

    def with_seed(self, seed: int) -> "SamplingParams":
        return replace(self, seed=int(seed))

    def to_dict(self) -> dict:
        return asdict(self)


def length_cap(requested: int | None, stored: int | None, n_ctx: int) -> tuple[int, str]:
    """Each patient's token cap and where it came from: the request, else the cap stored with the
    generator (the tokenizer's `max_tokens_per_patient_default`, at least the 99.9th percentile of
    train lengths), else 4 * n_ctx. The grammar closes a patient that reaches it."""
    if requested:
        return int(requested), "requested"
    if stored:
        return int(stored), "stored with the generator"
    return 4 * int(n_ctx), "4 * n_ctx"


def find_generator_files(folder: str | Path) -> tuple[Path, Path]:
    """(checkpoint folder, vocabulary file) in a downloaded generator: the folder holding
    `config.json` and `model.safetensors`, and `token_vocabulary.json`."""
    local = Path(folder)
    ckpts = sorted(p.parent for p in local.rglob(CHECKPOINT_FILES[0]) if (p.parent / CHECKPOINT_FILES[1]).is_file())
    vocabs = sorted(local.rglob(VOCABULARY_FILE))
    if len(ckpts) != 1 or len(vocabs) != 1:
        raise FileNotFoundError(
            f"{local}: not a synehrgy generator (expected one checkpoint folder with {' and '.join(CHECKPOINT_FILES)} "
            f"and one {VOCABULARY_FILE}; found {len(ckpts)} and {len(vocabs)})")
    return ckpts[0], vocabs[0]


def default_roll(vocabulary, n_ctx: int):
    """`ContextFormat(vocabulary, n_ctx).roll`: the training-window format."""
    from synehrgy_assets.core.tokens.context import ContextFormat

    return ContextFormat(vocabulary, n_ctx).roll


def generate_sequences(
    model,
    vocabulary,
    n_patients: int,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    batch_size: int = 64,
    device=None,
    max_tokens_per_patient: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    roll="auto",
    max_visits: int = 16,
    consistency: bool = True,
    precision: str = "auto",
):
    """Sample `n_patients` token sequences that parse by construction (grammar-masked).

    `max_tokens_per_patient` caps each patient's generated tokens (None = 4 * n_ctx; `Generator`
    passes `length_cap`'s). Patients longer than the context slide the window with `roll` ("auto" =
    the training context format, `ContextFormat.roll`; None = no sliding, then the cap must fit
    n_ctx). The grammar masks live on the model's device (no host round trip per step).
    """
    import torch

    from synehrgy_assets.core.devices import resolve_device
    from synehrgy_assets.core.sampler import sample
    from synehrgy_assets.core.tokens import GrammarConstraint

    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    n_ctx = model.config.n_ctx
    cap = int(max_tokens_per_patient) if max_tokens_per_patient is not None else 4 * n_ctx
    if roll == "auto":
        roll = default_roll(vocabulary, n_ctx)
    device = model.tok_emb.weight.device if device is None else resolve_device(device)
    return sample(
        model,
        n_patients,
        bos_id=vocabulary.bos_id,
        eos_id=vocabulary.eos_id,
        pad_id=vocabulary.pad_id,
        max_tokens_per_patient=cap,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        constraint=GrammarConstraint(vocabulary, max_visits=max_visits, device=torch.device(device),
                                     consistency=consistency),
        roll=roll,
        batch_size=batch_size,
        seed=seed,
        device=device,
        on_progress=on_progress,
        precision=precision,
    )


@dataclass
class GeneratedCohort:
    """One generation: the marts-shaped tables, the MIMIC-III-shaped tables and the run's figures."""

    marts: dict[str, pd.DataFrame]
    mimic_tables: dict[str, pd.DataFrame]
    stats: dict = field(default_factory=dict)

    def table(self, name: str) -> pd.DataFrame:
        if name in self.marts:
            return self.marts[name]
        if name in self.mimic_tables:
            return self.mimic_tables[name]
        raise ValueError(f"no table {name!r}; available: {sorted(self.marts) + sorted(self.mimic_tables)}")


class ConditionInfeasible(ValueError):
    """Rejection sampling would need more patients than its budget: the message names the condition,
    the acceptance rate measured and the budget."""


class Generator:
    """A loaded generator: the GPT on its device, the vocabulary and the length cap it was trained with."""

    def __init__(self, model, vocabulary, *, stored_cap: int | None = None, source: str = "",
                 mlflow_run_id: str | None = None):
        self.model = model
        self.device = model.tok_emb.weight.device
        self.vocabulary = vocabulary
        self.stored_cap = stored_cap
        self.source = source
        self.mlflow_run_id = mlflow_run_id

    @classmethod
    def from_files(cls, checkpoint_dir: str | Path, vocabulary_file: str | Path, device: str = "auto",
                   source: str = "") -> "Generator":
        """A safetensors checkpoint (loaded without unpickling) and its token vocabulary."""
        from synehrgy_assets.core.devices import resolve_device
        from synehrgy_assets.core.model import load_checkpoint, read_checkpoint_config
        from synehrgy_assets.core.tokens import TokenVocabulary

        model = load_checkpoint(checkpoint_dir, device=resolve_device(device))
        extra = read_checkpoint_config(checkpoint_dir).get("extra", {})
        return cls(model, TokenVocabulary.from_json(vocabulary_file), stored_cap=extra.get("max_tokens_per_patient"),
                   source=source, mlflow_run_id=extra.get("mlflow_run_id"))

    @classmethod
    def from_artifacts(cls, local_dir: str | Path, device: str = "auto", source: str = "") -> "Generator":
        """From a downloaded model folder (`find_generator_files`)."""
        checkpoint, vocabulary = find_generator_files(local_dir)
        return cls.from_files(checkpoint, vocabulary, device=device, source=source)

    def to(self, device: str) -> "Generator":
        """Move the model to `device` (auto|cpu|cuda)."""
        from synehrgy_assets.core.devices import resolve_device

        self.device = resolve_device(device)
        self.model.to(self.device)
        return self

    def length_cap(self, params: SamplingParams) -> tuple[int, str]:
        return length_cap(params.max_tokens_per_patient, self.stored_cap, self.model.config.n_ctx)

    def sample(self, n_patients: int, params: SamplingParams,
               on_progress: Callable[[int, int], None] | None = None):
        """Token sequences of `n_patients` (a `sampler.SampleResult`), on the model's device."""
        cap, _ = self.length_cap(params)
        return generate_sequences(
            self.model, self.vocabulary, int(n_patients), seed=params.seed, temperature=float(params.temperature),
            top_k=params.top_k, top_p=params.top_p, batch_size=int(params.batch_size), device=self.device,
            max_tokens_per_patient=cap, on_progress=on_progress, max_visits=params.max_visits,
            consistency=params.consistency,
            precision=params.precision)

    def generate(self, n_patients: int, params: SamplingParams | None = None, *, where=None,
                 max_attempts: int | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> GeneratedCohort:
        """Sample `n_patients`, decode them and build every table (the synthesis assets' steps).

        With `where` (`core/conditions.parse_where`: a string, clauses or a `Where`), exactly
        `n_patients` patients that satisfy it, by rejection: see `_sample_where`. `max_attempts`
        bounds the patients sampled (default DEFAULT_ATTEMPTS_PER_PATIENT per patient asked for)."""
        from synehrgy_assets.core.conditions import Where, parse_where
        from synehrgy_assets.core.mimic_writer import cohort_to_mimic_tables
        from synehrgy_assets.core.exports import MART_TABLES
        from synehrgy_assets.core.tokens import decode

        params = params or SamplingParams()
        if n_patients < 1:
            raise ValueError(f"n_patients must be >= 1, got {n_patients}")
        where = where if isinstance(where, Where) else parse_where(where)
        started = time.perf_counter()
        if where:
            cohort, figures = self._sample_where(int(n_patients), params, where, max_attempts, on_progress)
            sampled = time.perf_counter()
        else:
            result = self.sample(n_patients, params, on_progress=on_progress)
            sampled = time.perf_counter()
            cohort, report = decode(result.sequences, self.vocabulary, seed=params.seed)
            figures = {"valid_sequences": int(report.n_valid), "invalid_sequences": int(report.n_invalid),
                       "forced_closures": int(result.n_forced_closures),
                       "tokens_per_second": round(float(result.tokens_per_second), 1)}
        mimic_tables = cohort_to_mimic_tables(cohort, seed=params.seed)
        cap, cap_source = self.length_cap(params)
        stats = {
            "n_patients": int(n_patients), "seed": params.seed, "device": str(self.device),
            "max_tokens_per_patient": cap, "max_tokens_per_patient_source": cap_source, **figures,
            "sample_seconds": round(sampled - started, 2),
            "decode_seconds": round(time.perf_counter() - sampled, 2),
        }
        return GeneratedCohort(dict(zip(MART_TABLES, cohort.frames())), mimic_tables, stats)

    def _sample_where(self, n: int, params: SamplingParams, where, max_attempts: int | None,
                      on_progress: Callable[[int, int], None] | None):
        """Exactly `n` patients satisfying `where`: sample, decode, keep those that satisfy it, repeat.

        Why this is the model's conditional distribution: the sampler draws patients independently
        from the model's distribution p (each patient's tokens depend on the seed's stream only, not
        on the other patients), so the accepted ones are independent draws from p(patient | where),
        whatever the order; keeping the first n accepted is a stopping rule on an i.i.d. stream and
        biases nothing. Masking tokens during sampling would not give this (except for a patient's
        very first token): it renormalizes each step, so it also changes the tokens before the
        constrained one. Patients that do not decode count as rejected.

        Rounds: the first samples max(n, batch size) patients; later ones what the acceptance rate
        measured so far needs, with seeds derived from (seed, round). Refused (ConditionInfeasible)
        as soon as even an optimistic bound on the acceptance rate cannot reach n within the budget.
        """
        from synehrgy_assets.core.conditions import check_against_vocabulary, satisfying_patients
        from synehrgy_assets.core.tokens import decode

        check_against_vocabulary(where, self.vocabulary)
        budget = int(max_attempts) if max_attempts else DEFAULT_ATTEMPTS_PER_PATIENT * n
        if budget < n:
            raise ValueError(f"max_attempts ({budget}) must be at least the patients asked for ({n})")
        parts, accepted, sampled, rounds, forced, invalid = [], 0, 0, 0, 0, 0
        while accepted < n:
            if rounds == 0:
                m = max(n, int(params.batch_size))
            else:
                rate = accepted / sampled
                m = math.ceil(1.2 * (n - accepted) / rate) if accepted else 4 * sampled
            m = min(m, budget - sampled)
            round_seed = params.seed if rounds == 0 else _round_seed(params.seed, rounds)
            result = self.sample(m, params.with_seed(round_seed))
            cohort, report = decode(result.sequences, self.vocabulary, seed=round_seed)
            keep = satisfying_patients(where, cohort)[: n - accepted]
            parts.append(cohort.subset(keep))
            accepted += len(keep)
            sampled += m
            rounds += 1
            forced += int(result.n_forced_closures)
            invalid += int(report.n_invalid)
            if on_progress is not None:
                on_progress(accepted, n)
            if accepted >= n:
                break
            optimistic = (accepted + 2 * math.sqrt(accepted + 1) + 3) / sampled
            if sampled >= budget or optimistic * budget < n:
                raise ConditionInfeasible(
                    f"--where {where}: {accepted} of {sampled:,} sampled patients satisfy it (acceptance "
                    f"{accepted / sampled:.2%}); {n:,} such patients would take about "
                    f"{_needed(n, accepted, sampled)} samples, over the budget of {budget:,} (max_attempts): ask for "
                    "fewer patients, loosen the condition or raise the budget")
        cohort = _renumbered(parts)
        return cohort, {"where": str(where), "sampled_patients": sampled, "accepted_patients": accepted,
                        "acceptance_rate": round(accepted / sampled, 4), "rounds": rounds,
                        "valid_sequences": sampled - invalid, "invalid_sequences": invalid,
                        "forced_closures": forced}


def _round_seed(seed: int, round_index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(round_index)]).generate_state(1, dtype=np.uint32)[0])


def _needed(n: int, accepted: int, sampled: int) -> str:
    return f"{math.ceil(n * sampled / accepted):,}" if accepted else f"more than {sampled * n:,}"


def _renumbered(parts):
    """One cohort from the rounds' accepted patients: subject ids 0..n-1 and stay ids 0..v-1 in order
    (each round's decode numbered its own from 0)."""
    from synehrgy_assets.core.cohort import StagedCohort

    frames = {name: [] for name in ("visits", "visit_codes", "visit_phenotypes", "measurements")}
    n_subjects = n_stays = 0
    for part in parts:
        visits = part.visits
        if visits.empty:  # a round that kept nobody
            continue
        subjects = pd.unique(visits["subject_id"])
        subject_map = pd.Series(np.arange(len(subjects)) + n_subjects, index=subjects)
        stay_map = pd.Series(np.arange(len(visits)) + n_stays, index=visits["icustay_id"].to_numpy())
        for name, frame in zip(frames, part.frames()):
            frame = frame.copy()
            frame["subject_id"] = subject_map.reindex(frame["subject_id"].to_numpy()).to_numpy()
            frame["icustay_id"] = stay_map.reindex(frame["icustay_id"].to_numpy()).to_numpy()
            if "hadm_id" in frame:
                frame["hadm_id"] = frame["icustay_id"]
            frames[name].append(frame)
        n_subjects += len(subjects)
        n_stays += len(visits)
    return StagedCohort(*(pd.concat(f, ignore_index=True) for f in frames.values()))


def flatten(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A list of sequences as one flat int32 array + offsets (n + 1)."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate(sequences).astype(np.int32) if sequences else np.zeros(0, np.int32)
    return flat, offsets


def unflatten(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
