"""Patient-level consistency for sampling: the masks that make every sampled patient possible.

`GrammarConstraint` (grammar.py) makes every sequence parse; the grammar is first order in token
*types* and cannot say that a patient keeps their gender. `PatientConsistency` adds the rules that
need memory of the patient, the stay or the row, as masks on top of the grammar's:

| rule | how |
|---|---|
| gender and ethnicity are the patient's, not the visit's | a later visit's GENDER / ETHNICITY_GROUP must be the first visit's token |
| ages run forward | a later visit's AGE bin is at least the previous one's (decoding then derives the age from the first age and the elapsed time) |
| nothing follows an in-hospital death | after a visit with MORTALITY//1, `</adm>` may only be followed by `</s>` |
| a stay charts the items of its ICU database | a value token is allowed only if train stays of the visit's ICU_DATABASE chart that variable (`TokenVocabulary.variable_databases`) |
| values charted together agree | `relations.py`: a bin that cannot satisfy a less_than relation with a value already in the row is masked; a GCS part or total that cannot complete the row's sum is masked |
| no ICU stay shorter than real ones | `</ts>` waits until the stay's rows reach the lowest stored last-row hour of real stays (k-anonymous: the stays of >= 10 patients are that short or shorter), unless the length cap forces the patient to close |

Only sampled sequences are shaped: real sequences are encoded exactly and validated by the grammar
alone (`find_violations`), so a real patient who breaks a rule is still training data.
Arrays are numpy, or torch tensors on the constraint's device (`xp` is numpy or torch).
"""

from __future__ import annotations

import numpy as np

from synehrgy_assets.core.tokens.grammar import TokenType, _type_slice as _slice
from synehrgy_assets.core.tokens.relations import less_than_pairs

T = TokenType


class PatientConsistency:
    """Masks and per-row state for the rules in the module docstring."""

    def __init__(self, vocab, convert):
        """`convert(numpy array) -> backend array` (numpy, or a torch tensor on the device)."""
        types = np.asarray(vocab.token_types, dtype=np.int64)
        self.gender = _slice(types, T.GENDER)
        self.ethnicity = _slice(types, T.ETHNICITY_GROUP)
        self.age = _slice(types, T.AGE)
        self.gaps = _slice(types, T.GAP_VISIT)
        self.values = _slice(types, T.VALUE)
        self.database = _slice(types, T.ICU_DATABASE)
        self.mortality_death = int(vocab.mortality_base) + 1
        self.end_ts = int(vocab.end_ts_id)
        # Hours a DT token stands for (its bin's midpoint, as the model's stay clock counts them).
        self.dt_hours = convert(np.asarray(vocab.dt_hours, dtype=np.float64))
        self.visit_start = convert(types == T.AGE)
        # A stay may close once its rows reach the lowest last-row hour of real stays (the LOS is
        # later: a stay ends after its last row); vocabularies without that quantile use the LOS.
        last_rows = vocab.stay_offsets.get("last_row_hours") or vocab.los_quantiles
        self.min_stay_hours = float(last_rows[0]) if last_rows else 0.0
        names = [vocab._text[t] for t in range(self.database.start, self.database.stop)]
        n_db = len(names)
        db_rows = _database_rows(vocab, names, self.values)
        self.db_row_none = n_db
        # Relation members: variables whose token in the current row is remembered.
        pairs = less_than_pairs(vocab)
        sums = []
        index = {name: j for j, name in enumerate(vocab.variable_names)}
        for r in vocab.relations:
            if r["kind"] == "sum_of" and r["total"] in index and all(p in index for p in r["parts"]):
                sums.append((index[r["total"]], [index[p] for p in r["parts"]]))
        members = sorted({j for a, b, _ in pairs for j in (a, b)} | {j for t, ps in sums for j in (t, *ps)})
        self.n_members = len(members)
        member_of_var = {j: m for m, j in enumerate(members)}
        base = np.asarray(vocab.value_base, dtype=np.int64)
        n_tok = np.diff(np.r_[base, self.values.stop])  # value tokens per variable (ids contiguous)
        rank = np.asarray(vocab._rank_of_var, dtype=np.int64)
        self.var_slice = {j: slice(int(base[j]), int(base[j] + n_tok[j])) for j in members}
        self.member_of_token = np.full(len(types), -1, dtype=np.int64)
        for j, m in member_of_var.items():
            self.member_of_token[self.var_slice[j]] = m
        # less_than: for the pair's later variable in the row, compat[first token (+ none), second token]
        self.pair_masks = [(member_of_var[first], fs, ss, convert(compat))
                           for first, fs, ss, compat in _pair_masks(vocab, pairs, rank, self.var_slice)]
        # sum_of: per candidate member, which members come before it in the row and which after
        score = np.asarray(vocab._number, dtype=np.float64)  # a categorical token's score, NaN otherwise
        self.sum_rules = _sum_rules(sums, rank, score, self.var_slice, member_of_var, convert)
        self.score = convert(score)
        self.db_rows = convert(db_rows)
        self.db_index = convert(np.r_[np.arange(n_db), n_db])  # token offset -> row
        self.member_of_token_t = convert(self.member_of_token)
        self.gender_ids = convert(np.arange(self.gender.start, self.gender.stop, dtype=np.int64))
        self.ethnicity_ids = convert(np.arange(self.ethnicity.start, self.ethnicity.stop, dtype=np.int64))
        self.age_ids = convert(np.arange(self.age.start, self.age.stop, dtype=np.int64))
        self.row_starts = convert(np.isin(types, [T.DT, T.END_CODE, T.ELAPSED, T.SKIP_ROWS]))
        self.unk_database = -1
        for i, name in enumerate(names):
            if name is None:
                self.unk_database = self.database.start + i

    # ---- state
    def start(self, full, batch: int) -> dict:
        return {"gender": full(batch, -1, "int64"), "ethnicity": full(batch, -1, "int64"),
                "age": full(batch, -1, "int64"), "died": full(batch, False, "bool"),
                "database": full(batch, self.db_row_none, "int64"),
                "row_tok": full((batch, max(self.n_members, 1)), -1, "int64"),
                "stay_hours": full(batch, 0.0, "float64")}

    # ---- masks
    def apply(self, mask, s: dict, xp, closing=None):
        """Narrow `mask` (bool [batch, vocab]) in place; returns it. `closing` (bool [batch]): rows
        the length cap is about to close, which may end their stay whenever the grammar allows."""
        g, e = s["gender"], s["ethnicity"]
        mask[:, self.gender] &= (g[:, None] < 0) | (self.gender_ids[None, :] == g[:, None])
        mask[:, self.ethnicity] &= (e[:, None] < 0) | (self.ethnicity_ids[None, :] == e[:, None])
        mask[:, self.age] &= self.age_ids[None, :] >= s["age"][:, None]
        mask[:, self.gaps] &= ~s["died"][:, None]
        mask[:, self.values] &= self.db_rows[s["database"]]
        long_enough = s["stay_hours"] >= self.min_stay_hours
        mask[:, self.end_ts] &= long_enough if closing is None else (long_enough | closing)
        row_tok = s["row_tok"]
        for member, fs, ss, compat in self.pair_masks:
            first = row_tok[:, member]
            local = xp.where(first >= 0, first - fs.start, compat.shape[0] - 1)
            mask[:, ss] &= compat[local]
        for rule in self.sum_rules:
            self._apply_sum(mask, row_tok, rule, xp)
        return mask

    def _apply_sum(self, mask, row_tok, rule, xp):
        before = rule["before_parts"]
        total_tok = row_tok[:, rule["total"]]
        if before:
            toks = row_tok[:, before]
            present = (toks >= 0).all(1)
            part_sum = self.score[xp.where(toks >= 0, toks, 0)].sum(1)
        else:
            present = total_tok >= -1  # all True: no part comes before
            part_sum = total_tok * 0.0
        if rule["is_total"]:
            active = present
            lo = part_sum + rule["slack_lo"]
            hi = part_sum + rule["slack_hi"]
        else:
            active = present & (total_tok >= 0)
            t_score = self.score[xp.where(total_tok >= 0, total_tok, 0)]
            lo = t_score - part_sum - rule["slack_hi"]
            hi = t_score - part_sum - rule["slack_lo"]
        sc = rule["scores"][None, :]
        ok = (sc >= lo[:, None] - 0.5) & (sc <= hi[:, None] + 0.5)
        mask[:, rule["slice"]] &= ~active[:, None] | ok

    # ---- update after a token
    def advance(self, s: dict, tokens, types, xp):
        is_gender = types == T.GENDER
        s["gender"] = xp.where(is_gender & (s["gender"] < 0), tokens, s["gender"])
        is_eth = types == T.ETHNICITY_GROUP
        s["ethnicity"] = xp.where(is_eth & (s["ethnicity"] < 0), tokens, s["ethnicity"])
        s["age"] = xp.where(types == T.AGE, tokens, s["age"])
        s["stay_hours"] = xp.where(self.visit_start[tokens], 0.0, s["stay_hours"] + self.dt_hours[tokens])
        s["died"] = s["died"] | (tokens == self.mortality_death)
        is_db = types == T.ICU_DATABASE
        row = xp.where(tokens == self.unk_database, self.db_row_none, tokens - self.database.start)
        s["database"] = xp.where(is_db, row, s["database"])
        row_tok = xp.where(self.row_starts[tokens][:, None], -1, s["row_tok"])
        s["row_tok"] = row_tok
        member = self.member_of_token_t[tokens]
        col = xp.where(member >= 0, member, 0)
        batch = xp.arange(len(tokens)) if xp is np else xp.arange(len(tokens), device=tokens.device)
        # No host sync: every row writes, rows without a member token write back what they had.
        row_tok[batch, col] = xp.where(member >= 0, tokens, row_tok[batch, col])
        return s


def _database_rows(vocab, names: list, values: slice) -> np.ndarray:
    """Allowed value tokens per ICU_DATABASE token (rows in token order), plus a last row that
    allows all (UNK, or no database token yet): a database allows the variables its train stays chart."""
    db_rows = np.ones((len(names) + 1, values.stop - values.start), dtype=bool)
    known = vocab.variable_databases
    if known:
        var_of_value = vocab.value_var[values]
        for i, name in enumerate(names):
            if name is None:
                continue
            allowed_vars = [j for j, v in enumerate(vocab.variable_names) if name in known.get(v, [])]
            db_rows[i] = np.isin(var_of_value, allowed_vars)
    return db_rows


def _pair_masks(vocab, pairs, rank: np.ndarray, var_slice: dict) -> list:
    """Per less_than pair: (the variable written first, its token slice, the other's slice, and
    compat[first token (+ none), second token]: bins that can still keep lower < upper + margin)."""
    out = []
    for lower, upper, margin in pairs:
        first, second = (lower, upper) if rank[lower] < rank[upper] else (upper, lower)
        fs, ss = var_slice[first], var_slice[second]
        if first == lower:
            compat = vocab.bin_high[ss][None, :] - vocab.bin_low[fs][:, None] > margin
        else:
            compat = vocab.bin_high[fs][:, None] - vocab.bin_low[ss][None, :] > margin
        compat = np.vstack([compat, np.ones((1, compat.shape[1]), dtype=bool)])
        out.append((first, fs, ss, compat))
    return out


def _sum_rules(sums, rank: np.ndarray, score: np.ndarray, var_slice: dict, member_of_var: dict, convert) -> list:
    """Per sum_of member that must fit the sum when written: which parts come before it, and the
    least and most the parts after it can still add."""
    rules = []
    for total, parts in sums:
        group = sorted([total, *parts], key=lambda j: rank[j])
        lo = {j: float(np.nanmin(score[var_slice[j]])) for j in parts}
        hi = {j: float(np.nanmax(score[var_slice[j]])) for j in parts}
        for pos, x in enumerate(group):
            before, after = group[:pos], group[pos + 1:]
            if x != total and total in after:
                continue  # a part before the total: the total adapts later
            rest_parts = [j for j in after if j != total]
            rules.append({
                "slice": var_slice[x], "is_total": x == total,
                "before_parts": [member_of_var[j] for j in before if j != total],
                "total": member_of_var[total],
                "slack_lo": sum(lo[j] for j in rest_parts), "slack_hi": sum(hi[j] for j in rest_parts),
                "scores": convert(score[var_slice[x]]),
            })
    return rules
