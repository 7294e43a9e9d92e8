"""The SynEHRgy token grammar: token types, the phase machine, validation and the sampling mask.

The grammar is first order in token *types*: the phase after a token is the type of that token,
so "which types may come next" is one lookup in a small table. Three extra rules need a little
memory and are checked separately: phenotypes strictly ascending within a visit, measurement
values strictly ascending in variable rank within a row, and no code token twice in a visit.
The decoder's validator and the sampler's mask use the same tables, so every sequence the
constraint lets through is one the decoder accepts (and the other way round).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np


class TokenType(IntEnum):
    """Token types. The ids of one type are one contiguous range of the vocabulary."""

    PAD = 0
    BOS = 1
    EOS = 2
    END_COVAR = 3
    END_LABEL = 4
    END_CODE = 5
    END_TS = 6
    END_ADM = 7
    GAP_VISIT = 8
    AGE = 9
    GENDER = 10
    ETHNICITY_GROUP = 11
    INSURANCE = 12
    ADMISSION_TYPE = 13
    FIRST_CAREUNIT = 14
    ICU_DATABASE = 15  # the ICU information system of the stay (carevue / metavision)
    MORTALITY = 16
    PHENOTYPE = 17
    DX = 18
    PX = 19
    VALUE = 20
    DT = 21
    # Context markers (docs/tokens.md section 6): only in training windows and rolled generation
    # contexts, never in a patient's sequence, never sampled.
    SKIP_VISITS = 22  # after <s>: earlier visits of the patient are left out of this window
    SKIP_ROWS = 23    # after </code>: this visit's earlier measurement rows are left out
    ELAPSED = 24      # after <skip-rows>: the hours those left-out rows covered (binned)


N_TYPES = len(TokenType)
START = N_TYPES  # the phase before the first token; every other phase is "type of the last token"
N_PHASES = N_TYPES + 1

T = TokenType
# Which token types may follow each phase.
NEXT_TYPES: dict[int, tuple[TokenType, ...]] = {
    START: (T.BOS,),
    T.BOS: (T.AGE, T.SKIP_VISITS),
    T.SKIP_VISITS: (T.GAP_VISIT, T.EOS),
    T.GAP_VISIT: (T.AGE,),
    T.AGE: (T.GENDER,),
    T.GENDER: (T.ETHNICITY_GROUP,),
    T.ETHNICITY_GROUP: (T.INSURANCE,),
    T.INSURANCE: (T.ADMISSION_TYPE,),
    T.ADMISSION_TYPE: (T.FIRST_CAREUNIT,),
    T.FIRST_CAREUNIT: (T.ICU_DATABASE,),
    T.ICU_DATABASE: (T.END_COVAR,),
    T.END_COVAR: (T.MORTALITY,),
    T.MORTALITY: (T.PHENOTYPE, T.END_LABEL),
    T.PHENOTYPE: (T.PHENOTYPE, T.END_LABEL),
    T.END_LABEL: (T.DX, T.PX, T.END_CODE),
    T.DX: (T.DX, T.PX, T.END_CODE),
    T.PX: (T.PX, T.END_CODE),
    T.END_CODE: (T.VALUE, T.END_TS, T.SKIP_ROWS),
    T.SKIP_ROWS: (T.ELAPSED,),
    T.ELAPSED: (T.VALUE, T.END_TS),
    T.VALUE: (T.VALUE, T.DT),
    T.DT: (T.VALUE, T.END_TS),
    T.END_TS: (T.END_ADM,),
    T.END_ADM: (T.GAP_VISIT, T.EOS),
    T.EOS: (T.PAD,),
    T.PAD: (T.PAD,),
}


def type_transition_table() -> np.ndarray:
    """bool [N_PHASES, N_TYPES]: may a token of type t follow phase p."""
    table = np.zeros((N_PHASES, N_TYPES), dtype=bool)
    for phase, nexts in NEXT_TYPES.items():
        table[phase, list(nexts)] = True
    return table


CONTEXT_MARKER_TYPES = (TokenType.SKIP_VISITS, TokenType.SKIP_ROWS, TokenType.ELAPSED)


def distance_to_end() -> np.ndarray:
    """int [N_PHASES]: fewest *sampled* tokens (``</s>`` included) that close a sequence from each
    phase. The context markers are never sampled, so no closing path goes through them."""
    table = type_transition_table()
    table[:, list(CONTEXT_MARKER_TYPES)] = False
    dist = np.full(N_PHASES, np.iinfo(np.int64).max, dtype=np.int64)
    dist[T.EOS] = 0
    dist[T.PAD] = 0
    queue = deque([int(T.EOS)])
    # Backward BFS: phase p reaches phase t (= type t) with one token.
    while queue:
        target = queue.popleft()
        for phase in range(N_PHASES):
            if table[phase, target] and dist[phase] > dist[target] + 1:
                dist[phase] = dist[target] + 1
                if phase != START:  # START is no token type, so nothing transitions into it
                    queue.append(phase)
    return dist


def _type_slice(token_types: np.ndarray, kind: TokenType) -> slice:
    """The contiguous id range of one token type (the vocabulary guarantees contiguity)."""
    ids = np.flatnonzero(token_types == kind)
    if ids.size == 0:
        return slice(0, 0)
    if ids[-1] - ids[0] + 1 != ids.size:
        raise ValueError(f"token type {kind.name} is not a contiguous id range")
    return slice(int(ids[0]), int(ids[-1]) + 1)


# ----------------------------------------------------------------------------------------------
# Validation of finished sequences (used by the decoder)

REASONS = (
    "empty sequence",
    "no <s>",
    "no </s>",
    "token after </s>",
    "pad before </s>",
    "missing covariate",
    "missing </covar>",
    "missing mortality",
    "phenotype repeated or out of order",
    "unexpected token in labels",
    "diagnosis after procedure",
    "duplicate code in visit",
    "unexpected token in codes",
    "value after last gap",
    "variable repeated or out of order in row",
    "unexpected token in measurements",
    "missing </adm>",
    "expected new visit or </s>",
    "too many visits",
    "context marker in a patient sequence",
)
_R = {name: i for i, name in enumerate(REASONS)}


def _reason_for_transition(prev_phase: np.ndarray, cur_type: np.ndarray) -> np.ndarray:
    """Reason code for a failed type transition prev_phase -> cur_type."""
    reason = np.full(prev_phase.shape, _R["unexpected token in measurements"], dtype=np.int16)
    covariate_phases = [T.BOS, T.GAP_VISIT, T.AGE, T.GENDER, T.ETHNICITY_GROUP, T.INSURANCE,
                        T.ADMISSION_TYPE, T.FIRST_CAREUNIT]
    rules = [
        (prev_phase == START, "no <s>"),
        ((prev_phase == T.EOS) | (prev_phase == T.PAD), "token after </s>"),
        (cur_type == T.PAD, "pad before </s>"),
        (np.isin(prev_phase, covariate_phases), "missing covariate"),
        (prev_phase == T.ICU_DATABASE, "missing </covar>"),
        (prev_phase == T.END_COVAR, "missing mortality"),
        (np.isin(prev_phase, [T.MORTALITY, T.PHENOTYPE]), "unexpected token in labels"),
        ((prev_phase == T.PX) & (cur_type == T.DX), "diagnosis after procedure"),
        (np.isin(prev_phase, [T.END_LABEL, T.DX, T.PX]), "unexpected token in codes"),
        ((prev_phase == T.VALUE) & (cur_type == T.END_TS), "value after last gap"),
        (prev_phase == T.END_TS, "missing </adm>"),
        (prev_phase == T.END_ADM, "expected new visit or </s>"),
    ]
    # First matching rule wins, so apply them in reverse.
    for condition, name in reversed(rules):
        reason[condition] = _R[name]
    return reason


@dataclass
class Violations:
    """First grammar violation per sequence: reason index into REASONS (-1 = valid) and position."""

    reason: np.ndarray
    position: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return self.reason < 0

    def counts(self) -> dict[str, int]:
        codes, n = np.unique(self.reason[self.reason >= 0], return_counts=True)
        return {REASONS[int(c)]: int(k) for c, k in zip(codes, n)}


def find_violations(
    tokens: np.ndarray,
    offsets: np.ndarray,
    token_types: np.ndarray,
    value_rank: np.ndarray,
    max_visits: int | None = None,
    windows: bool = False,
) -> Violations:
    """Check flat sequences ``tokens[offsets[i]:offsets[i+1]]`` against the grammar, vectorized.

    Trailing ``<pad>`` after ``</s>`` is allowed. ``value_rank[t]`` is the variable rank of a value
    token (-1 otherwise). With `windows`, the sequences are training windows or rolled contexts
    (docs/tokens.md section 6): the context markers are allowed and a window may end anywhere;
    without it, a patient sequence must end in ``</s>`` and holds no context marker.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    n_seq = len(offsets) - 1
    lengths = np.diff(offsets)
    vocab_size = len(token_types)
    reason = np.full(n_seq, -1, dtype=np.int16)
    position = np.full(n_seq, -1, dtype=np.int64)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        bad = (tokens < 0) | (tokens >= vocab_size)
        raise ValueError(
            f"token ids must lie in [0, {vocab_size}); found {int(bad.sum())} outside that range"
        )
    if tokens.size == 0:
        reason[:] = _R["empty sequence"]
        position[:] = 0
        return Violations(reason, position)

    types = token_types[tokens].astype(np.int16)
    starts = offsets[:-1][lengths > 0]
    fail_reason = _token_reasons(tokens, types, starts, lengths, value_rank, vocab_size, max_visits, windows)

    fail_pos = np.flatnonzero(fail_reason >= 0)
    if fail_pos.size:
        fail_seq = np.searchsorted(offsets, fail_pos, side="right") - 1
        seqs, first = np.unique(fail_seq, return_index=True)
        reason[seqs] = fail_reason[fail_pos[first]]
        position[seqs] = fail_pos[first] - offsets[seqs]

    # A sequence must end in </s> (optionally followed by padding).
    nonempty = lengths > 0
    last_type = np.full(n_seq, -1, dtype=np.int16)
    last_type[nonempty] = types[offsets[1:][nonempty] - 1]
    unfinished = nonempty & (last_type != T.EOS) & (last_type != T.PAD) & (reason < 0) & (not windows)
    reason[unfinished] = _R["no </s>"]
    position[unfinished] = lengths[unfinished]
    empty = ~nonempty
    reason[empty] = _R["empty sequence"]
    position[empty] = 0
    return Violations(reason, position)


def _token_reasons(tokens: np.ndarray, types: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                   value_rank: np.ndarray, vocab_size: int, max_visits: int | None, windows: bool) -> np.ndarray:
    """Per token: the reason (index into REASONS) it breaks the grammar at its place, or -1.
    `starts`: the flat position of every non-empty sequence's first token."""
    n_seq = len(lengths)
    prev_phase = np.empty_like(types)
    prev_phase[1:] = types[:-1]
    prev_phase[starts] = START
    prev_tok = np.empty_like(tokens)
    prev_tok[1:] = tokens[:-1]
    prev_tok[starts] = -1

    table = type_transition_table()
    transition_ok = table[prev_phase, types]
    fail_reason = np.where(transition_ok, -1, _reason_for_transition(prev_phase, types))
    if not windows:
        marker = np.isin(types, CONTEXT_MARKER_TYPES)
        fail_reason[marker] = _R["context marker in a patient sequence"]

    pheno_bad = (types == T.PHENOTYPE) & (prev_phase == T.PHENOTYPE) & (tokens <= prev_tok)
    fail_reason[pheno_bad & transition_ok] = _R["phenotype repeated or out of order"]
    is_value = types == T.VALUE
    value_bad = is_value & (prev_phase == T.VALUE)
    value_bad &= value_rank[tokens] <= value_rank[np.maximum(prev_tok, 0)]
    fail_reason[value_bad & transition_ok] = _R["variable repeated or out of order in row"]

    # Duplicate codes inside a visit (visits delimited by their AGE token).
    visit_id = np.cumsum(types == T.AGE)
    code_pos = np.flatnonzero((types == T.DX) | (types == T.PX))
    if code_pos.size:
        key = visit_id[code_pos] * vocab_size + tokens[code_pos]
        order = np.argsort(key, kind="stable")
        dup = key[order][1:] == key[order][:-1]
        dup_pos = code_pos[order[1:][dup]]
        free = fail_reason[dup_pos] < 0  # a transition error at the same spot is reported first
        fail_reason[dup_pos[free]] = _R["duplicate code in visit"]
    if max_visits is not None:
        seq_of_token = np.repeat(np.arange(n_seq), lengths)
        first_visit = np.zeros(n_seq, dtype=np.int64)
        first_visit[lengths > 0] = visit_id[starts] - (types[starts] == T.AGE)
        too_many = (types == T.AGE) & (visit_id - first_visit[seq_of_token] > max_visits)
        fail_reason[too_many & (fail_reason < 0)] = _R["too many visits"]
    return fail_reason


# ----------------------------------------------------------------------------------------------
# The sampling constraint


@dataclass
class GrammarState:
    """Per-sequence state of `GrammarConstraint` (updated in place by `advance`).

    numpy arrays, or torch tensors on the constraint's device when it was built with one.
    """

    phase: Any       # int [batch]: START or the type of the last token
    last: Any        # int64 [batch]: last token id (-1 before the first)
    last_rank: Any   # int64 [batch]: variable rank of the last token if a value, else -1
    n_visits: Any    # int64 [batch]: visits opened so far
    used_codes: Any  # bool [batch, n_code_tokens]: codes already emitted in this visit
    patient: dict | None = None  # PatientConsistency state (consistency.py), None when off


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor, possibly on an accelerator
        array = array.detach().cpu().numpy()
    return np.asarray(array)


class GrammarConstraint:
    """Masks that force every sampled sequence to parse (the `SamplingConstraint` protocol).

    `allowed(state, remaining)` additionally restricts to tokens from which ``</s>`` is still
    reachable within `remaining` tokens (the shortest path when few remain), so a sequence never
    ends truncated at the length limit; a sequence needs at least `min_length` tokens.
    With `device` (e.g. "cuda") states and masks are torch tensors on that device, so the mask
    never leaves the accelerator; without it they are numpy arrays.
    """

    def __init__(self, vocab, max_visits: int = 16, device=None, allow_unknown: bool = False,
                 consistency: bool = True):
        if max_visits < 1:
            raise ValueError(f"max_visits must be >= 1, got {max_visits}")
        self.max_visits = int(max_visits)
        token_types = np.asarray(vocab.token_types, dtype=np.int64)
        self.vocab_size = len(token_types)
        table = type_transition_table()
        dist = distance_to_end()
        self.min_length = int(dist[START])
        self._max_distance = int(dist[dist < np.iinfo(np.int64).max].max())
        self._closing_zone = 2 * self._max_distance
        value_rank = np.asarray(vocab.value_rank, dtype=np.int64)
        self._pheno = _type_slice(token_types, T.PHENOTYPE)
        self._values = _type_slice(token_types, T.VALUE)
        self._gaps = _type_slice(token_types, T.GAP_VISIT)
        dx, px = _type_slice(token_types, T.DX), _type_slice(token_types, T.PX)
        if dx.stop != px.start and dx.stop > dx.start and px.stop > px.start:
            raise ValueError("diagnosis and procedure tokens must be adjacent id ranges")
        self._codes = slice(dx.start if dx.stop > dx.start else px.start, max(dx.stop, px.stop))
        self._end_label = int(np.flatnonzero(token_types == T.END_LABEL)[0])
        # `X//UNK` tokens encode real values unseen in train (rare codes, new categories). Sampling
        # them makes NULL covariates and "UNK" codes, so they are masked unless asked for — but only
        # where the same token type has another token to choose instead.
        unknown = np.array([str(tok).endswith("//UNK") for tok in vocab.tokens], dtype=bool)
        if not allow_unknown:
            for kind in np.unique(token_types[unknown]):
                if (~unknown & (token_types == kind)).any():
                    continue
                unknown[token_types == kind] = False
        else:
            unknown[:] = False
        # Context markers are written by the context format, never sampled.
        unknown |= np.isin(token_types, CONTEXT_MARKER_TYPES)
        arrays = {
            "token_types": token_types,
            "unknown": unknown,
            "phase_table": table[:, token_types],       # [N_PHASES, vocab]
            "cost": 1 + dist[token_types],              # tokens to finish if this one comes next
            "value_rank": value_rank,
            "pheno_ids": np.arange(self._pheno.start, self._pheno.stop, dtype=np.int64),
            "value_ranks": value_rank[self._values],
        }
        self.device = device
        if device is None:
            self._t = arrays
        else:
            import torch  # only when asked for: the core stays importable without torch

            self._torch = torch
            self._t = {k: torch.as_tensor(v, device=device) for k, v in arrays.items()}
        self.token_types = token_types
        # Patient-level rules (consistency.py): one person across visits, a database's items, rows
        # that agree. On for sampling; off to replay real sequences, which may break them.
        self._consistency = None
        if consistency:
            from synehrgy_assets.core.tokens.consistency import PatientConsistency

            convert = (lambda a: a) if device is None else (lambda a: torch.as_tensor(a, device=device))
            self._consistency = PatientConsistency(vocab, convert)
        self._xp = np if device is None else self._torch

    # ---- array helpers (numpy or torch)
    def _full(self, shape, value, dtype: str):
        if self.device is None:
            return np.full(shape, value, dtype=dtype)
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return self._torch.full(shape, value, dtype=getattr(self._torch, dtype), device=self.device)

    def _index(self, x):
        if self.device is None:
            return _to_numpy(x).astype(np.int64).reshape(-1)
        return self._torch.as_tensor(x, device=self.device).long().reshape(-1)

    def _rows(self, mask):
        if self.device is None:
            return np.flatnonzero(mask)
        return self._torch.nonzero(mask, as_tuple=True)[0]

    # ---- the protocol
    def start(self, batch_size: int) -> GrammarState:
        n_codes = self._codes.stop - self._codes.start
        return GrammarState(
            phase=self._full(batch_size, START, "int64"),
            last=self._full(batch_size, -1, "int64"),
            last_rank=self._full(batch_size, -1, "int64"),
            n_visits=self._full(batch_size, 0, "int64"),
            used_codes=self._full((batch_size, n_codes), False, "bool"),
            patient=None if self._consistency is None else self._consistency.start(self._full, batch_size),
        )

    def allowed(self, state: GrammarState, remaining=None):
        """bool [batch, vocab]: the tokens that may come next."""
        t = self._t
        mask = t["phase_table"][state.phase]
        mask &= ~t["unknown"][None, :]
        mask[:, self._pheno] &= t["pheno_ids"][None, :] > state.last[:, None]
        mask[:, self._values] &= t["value_ranks"][None, :] > state.last_rank[:, None]
        mask[:, self._codes] &= ~state.used_codes
        # Element-wise, not by row lists: on an accelerator a row list is a host round trip.
        mask[:, self._gaps] &= (state.n_visits < self.max_visits)[:, None]
        if remaining is not None:
            remaining = self._index(remaining)
        if self._consistency is not None:
            # Near the length cap a patient must be able to close, whatever the patient rules say.
            closing = None if remaining is None else remaining <= self._closing_zone
            self._consistency.apply(mask, state.patient, self._xp, closing)
        if remaining is not None:
            mask &= t["cost"][None, :] <= remaining[:, None]
        return mask

    def _token_ok(self, state: GrammarState, tokens):
        t = self._t
        ok = t["phase_table"][state.phase, tokens]
        ok &= ~t["unknown"][tokens]
        types = t["token_types"][tokens]
        ok &= ~((types == T.PHENOTYPE) & (tokens <= state.last))
        ok &= ~((types == T.VALUE) & (t["value_rank"][tokens] <= state.last_rank))
        is_code, code = self._code_index(tokens)
        ok &= ~(is_code & state.used_codes[self._arange(len(tokens)), code])
        ok &= ~((types == T.GAP_VISIT) & (state.n_visits >= self.max_visits))
        if self._consistency is not None:
            # advance() knows no length budget: a stay ended early by the cap passes its check.
            mask = self._consistency.apply(t["phase_table"][state.phase] | True, state.patient, self._xp,
                                           closing=state.phase >= 0)
            ok &= mask[self._arange(len(tokens)), tokens]
        return ok

    def _arange(self, n: int):
        return np.arange(n) if self.device is None else self._torch.arange(n, device=self.device)

    def _code_index(self, tokens):
        """(is a code token, its column in `used_codes`, 0 for other tokens)."""
        is_code = (tokens >= self._codes.start) & (tokens < self._codes.stop)
        return is_code, self._xp.where(is_code, tokens - self._codes.start, 0)

    def _checks_on_host(self) -> bool:
        """Token checks that raise ValueError read the device; on an accelerator they would cost a
        host round trip per token, so there the check is an asynchronous device assert."""
        return self.device is None or self._torch.device(self.device).type == "cpu"

    def advance(self, state: GrammarState, tokens, check: bool = True) -> GrammarState:
        """Consume one token per sequence; raises ValueError on a token the grammar forbids."""
        tokens = self._index(tokens)
        batch = state.phase.shape[0]
        if tokens.shape[0] != batch:
            raise ValueError(f"advance: got {tokens.shape[0]} tokens for a batch of {batch}")
        on_host = self._checks_on_host()
        if on_host and len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"advance: token ids must lie in [0, {self.vocab_size})")
        if check and not on_host:
            self._torch._assert_async(self._token_ok(state, tokens).all(),
                                      "advance: a token not allowed by the grammar")
        elif check:
            ok = self._token_ok(state, tokens)
            if not bool(ok.all()):
                bad = int(self._rows(~ok)[0])
                raise ValueError(
                    f"advance: {int((~ok).sum())} token(s) not allowed by the grammar, e.g. token "
                    f"{int(tokens[bad])} after phase {int(state.phase[bad])} in row {bad}"
                )
        t = self._t
        types = t["token_types"][tokens]
        # In place and element-wise (no row lists): the sampler's state lives on its device.
        state.used_codes &= ~(tokens == self._end_label)[:, None]
        is_code, code = self._code_index(tokens)
        batch_rows = self._arange(len(tokens))
        state.used_codes[batch_rows, code] |= is_code
        state.n_visits += (types == T.AGE)
        if self._consistency is not None:
            self._consistency.advance(state.patient, tokens, types, self._xp)
        state.last = tokens
        state.last_rank = t["value_rank"][tokens]
        state.phase = types
        return state

    def finished(self, state: GrammarState):
        """bool [batch]: the sequence has emitted </s>."""
        return (state.phase == T.EOS) | (state.phase == T.PAD)

    # ---- continuous batching (the sampler refills a finished row with the next patient)
    @property
    def max_closing_cost(self) -> int:
        """A budget above which `allowed(state, remaining)` equals `allowed(state)`: the most tokens
        (``</s>`` included) any phase needs to close its sequence, doubled when the patient rules
        are on (near the cap they let a stay end early, `_closing_zone`)."""
        return self._closing_zone if self._consistency is not None else self._max_distance

    def restart(self, state: GrammarState, rows, like: GrammarState | None = None) -> GrammarState:
        """Start `rows` of `state` afresh (phase START), or as a copy of row 0 of `like` (e.g. the
        state after ``<s>`` + a prompt); in place, the other rows are untouched."""
        rows = self._index(rows)
        if len(rows) == 0:
            return state
        like = self.start(1) if like is None else like
        for name in ("phase", "last", "last_rank"):
            # Copied first: `advance` may have stored the caller's token array as `last`.
            array = getattr(state, name)
            array = array.copy() if self.device is None else array.clone()
            array[rows] = getattr(like, name)[0]
            setattr(state, name, array)
        state.n_visits[rows] = like.n_visits[0]  # owned by the state (updated in place by advance)
        state.used_codes[rows] = like.used_codes[0]
        if state.patient is not None:
            for name, array in state.patient.items():
                array = array.copy() if self.device is None else array.clone()
                array[rows] = like.patient[name][0]
                state.patient[name] = array
        return state

    def take(self, state: GrammarState, rows) -> GrammarState:
        """A new state holding only `rows` of `state`, in that order (the sampler drops idle rows)."""
        rows = self._index(rows)
        patient = None if state.patient is None else {k: v[rows] for k, v in state.patient.items()}
        return GrammarState(*(getattr(state, name)[rows] for name in
                              ("phase", "last", "last_rank", "n_visits", "used_codes")), patient=patient)
