"""The privacy attacks and gates must be able to fail: each is run on deliberately leaky generators.

A leaky "generator" returns the train patients' token sequences verbatim: (a) decoded with the
seed the real cohort was decoded with (every float identical), (b) decoded with another seed
(every continuous value re-drawn inside its bin, so the float-based exact match sees nothing) and
re-encoded. An honest stand-in (c) releases real held-out patients who are not in train. Every
privacy gate must fail on (a) and (b) and pass on (c). The real cohorts are the toy hospital of
tests/test_metrics.py, through the real tokenizer (`TokenVocabulary.fit`, `encode`, `decode`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.metrics import TokenStreams, evaluate, token_copies
from synehrgy_assets.core.metrics.attacks import _mix64, _ngram_hashes, _visit_hashes
from synehrgy_assets.core.release_gates import (
    PRIVACY_GATES,
    GateThresholds,
    privacy_attribute_gate,
    privacy_dcr_gate,
    privacy_membership_gate,
    privacy_ngram_copy_gate,
    privacy_visit_copy_gate,
)
from synehrgy_assets.core.tokens import TokenVocabulary, decode, encode
from synehrgy_assets.core.tokens.grammar import TokenType
from tests.helpers.metric_cohorts import VARIABLES, make_cohort

MEMBER_SHARE = 0.8  # 400 train patients of 500 real ones
ATTACKS = ("mia_auroc", "codes_mia_auroc", "domias_mia_auroc")
COPY_KEYS = ("visit_sequence_copy_fraction", "visit_multiset_copy_fraction", "visit_header_copy_fraction",
             "ngram_shared_fraction", "ngram_near_copy_patient_share")


def _errors(report) -> dict:
    """The report's errors less the utility panel's small-cell notes (tasks these small cohorts
    cannot measure are "not reported", by design)."""
    return {k: v for k, v in report.errors.items()
            if not (k.startswith("utility_panel/") and str(v).startswith("not reported"))}


def _one_birth_date(cohort: StagedCohort) -> StagedCohort:
    """The toy cohort with a later visit's age = the first age + the time since the first ICU
    admission, as in real data (decoding derives later ages from one birth date, so only such
    patients decode and re-encode to the same AGE tokens)."""
    v = cohort.visits.sort_values(["subject_id", "visit_index"]).copy()
    first = v["visit_index"].to_numpy() == 0
    step = np.where(first, 0.0, v["los_hours"].shift(1).fillna(0).to_numpy() + v["hours_since_previous_visit"].fillna(0).to_numpy())
    elapsed = pd.Series(step, index=v.index).groupby(v["subject_id"]).cumsum().to_numpy()
    first_age = v["age_years"].where(first).ffill().to_numpy()
    age = np.minimum(first_age + elapsed / (365.2425 * 24), 90.0)
    v["age_years"], v["age_is_capped"] = age, age >= 90
    return StagedCohort(v.sort_index(), cohort.visit_codes, cohort.visit_phenotypes, cohort.measurements)


@pytest.fixture(scope="module")
def world():
    """Real train / real test / real held-out cohorts as the tokenizer sees them (decoded with seed 0)."""
    raw = {"train": make_cohort(400, seed=11), "test": make_cohort(100, seed=12, id_offset=100_000),
           "heldout": make_cohort(400, seed=13, id_offset=200_000)}
    raw = {k: _one_birth_date(v) for k, v in raw.items()}
    vocab = TokenVocabulary.fit(raw["train"])
    seqs = {k: encode(v, vocab) for k, v in raw.items()}
    real = {k: decode(s, vocab, seed=0)[0] for k, s in seqs.items()}
    return vocab, seqs, real


def _privacy(world, synthetic: StagedCohort, synthetic_tokens) -> dict:
    vocab, seqs, real = world
    report = evaluate(real["train"], real["test"], synthetic, VARIABLES, seed=0, top_k_codes=50,
                      classifier="logistic_regression", n_threads=1, strict=True, member_share=MEMBER_SHARE,
                      tokens=TokenStreams(seqs["train"], seqs["test"], synthetic_tokens, vocab.token_types))
    assert not _errors(report), report.errors
    return report.metrics


@pytest.fixture(scope="module")
def leaky_same_seed(world):
    vocab, seqs, _ = world
    return _privacy(world, decode(seqs["train"], vocab, seed=0)[0], seqs["train"])


@pytest.fixture(scope="module")
def leaky_redrawn(world):
    vocab, seqs, real = world
    copy = decode(seqs["train"], vocab, seed=7)[0]
    values = lambda c: c.measurements["value"].to_numpy()  # noqa: E731
    continuous = real["train"].measurements["value_text"].isna().to_numpy()
    assert not np.allclose(values(copy)[continuous], values(real["train"])[continuous])  # values re-drawn
    return _privacy(world, copy, encode(copy, vocab))  # the release's own tokens


@pytest.fixture(scope="module")
def honest(world):
    vocab, seqs, real = world
    return _privacy(world, real["heldout"], seqs["heldout"])


def _verdicts(metrics: dict) -> dict:
    return {gate.__name__: gate(metrics, GateThresholds()) for gate in PRIVACY_GATES}


# ---------------------------------------------------------------- the three generators


def test_verbatim_copies_fire_every_attack_and_fail_every_gate(leaky_same_seed):
    m = leaky_same_seed
    assert m["privacy/exact_match_fraction"] == 1.0  # same seed: the floats are identical too
    for key in COPY_KEYS:
        assert m[f"privacy/{key}"] == 1.0 and m[f"privacy/{key}_test"] < 0.02, key
    for key in ATTACKS:
        assert m[f"privacy/{key}"] > 0.75, key
    assert m["privacy/mia_auroc_max"] > 0.95
    assert m["privacy/mia_precision_at_prior_max"] > m["privacy/mia_member_prior"] + 0.1
    assert m["privacy/attribute_advantage"] > 0.2
    assert m["privacy/dcr_share_below_test_p5"] > 0.9
    for name, verdict in _verdicts(m).items():
        assert not verdict.passed, name
        assert "needs" in verdict.reason, (name, verdict.reason)


def test_copies_with_redrawn_values_still_fire_the_token_attacks(leaky_redrawn):
    m = leaky_redrawn
    assert m["privacy/exact_match_fraction"] == 0.0  # the float-based check sees no copy
    for key in COPY_KEYS:
        assert m[f"privacy/{key}"] == 1.0, key
    for key in ATTACKS:
        assert m[f"privacy/{key}"] > 0.7, key
    assert m["privacy/attribute_advantage"] > 0.2
    for name, verdict in _verdicts(m).items():
        assert not verdict.passed, (name, verdict.reason)


def test_real_held_out_patients_pass_every_gate(honest):
    m = honest
    for key in COPY_KEYS:
        assert m[f"privacy/{key}"] <= 0.02 and m[f"privacy/{key}_test"] <= 0.02, key
    for key in ATTACKS:
        assert abs(m[f"privacy/{key}"] - 0.5) < 0.08, key
    assert abs(m["privacy/mia_member_prior"] - MEMBER_SHARE) < 0.01
    assert abs(m["privacy/mia_precision_at_prior_max"] - MEMBER_SHARE) < 0.08
    assert abs(m["privacy/attribute_advantage"]) < 0.1
    assert m["privacy/dcr_share_below_test_p5"] < 0.1
    for name, verdict in _verdicts(m).items():
        assert verdict.passed, (name, verdict.reason)
        assert all(row["ok"] for row in verdict.rows)


# ---------------------------------------------------------------- gates on their own


def test_each_privacy_gate_fails_when_its_metric_is_missing():
    for gate in PRIVACY_GATES:
        verdict = gate({}, GateThresholds())
        assert not verdict.passed and verdict.reason.startswith("not measured"), gate.__name__


def test_copy_gates_follow_the_real_test_baseline(honest):
    t = GateThresholds()
    base = {k: v for k, v in honest.items()}
    # Chance copies among real patients raise the allowance: 1.5 x the real-test share.
    chance = {**base, "privacy/visit_header_copy_fraction_test": 0.10, "privacy/visit_header_copy_fraction": 0.14}
    assert privacy_visit_copy_gate(chance, t).passed
    assert not privacy_visit_copy_gate({**chance, "privacy/visit_header_copy_fraction": 0.16}, t).passed
    # A zero baseline still allows the floor.
    assert privacy_ngram_copy_gate({**base, "privacy/ngram_shared_fraction": 0.019}, t).passed
    assert not privacy_ngram_copy_gate({**base, "privacy/ngram_shared_fraction": 0.05}, t).passed
    # One strong attack is enough to fail the membership gate.
    assert not privacy_membership_gate({**base, "privacy/domias_mia_auroc": 0.61}, t).passed
    # The attribute allowance is the larger of the floor and 2 standard errors.
    attr = {"privacy/attribute_advantage": 0.08}
    assert privacy_attribute_gate({**attr, "privacy/attribute_advantage_se": 0.05}, t).passed
    assert not privacy_attribute_gate({**attr, "privacy/attribute_advantage_se": 0.01}, t).passed
    assert not privacy_dcr_gate({"privacy/dcr_share_below_test_p5": 0.2}, t).passed


@pytest.fixture(scope="module")
def without_tokens(world):
    _, _, real = world
    return evaluate(real["train"], real["test"], real["heldout"], VARIABLES, seed=0, top_k_codes=50,
                    classifier="logistic_regression", min_cell_count=10, strict=True)


def test_without_token_sequences_the_copy_gates_are_not_measured(without_tokens):
    report = without_tokens
    assert "privacy/ngram_shared_fraction" not in report.metrics and not _errors(report)
    verdict = privacy_ngram_copy_gate(report.metrics, GateThresholds())
    assert not verdict.passed and verdict.reason.startswith("not measured")
    assert privacy_dcr_gate(report.metrics, GateThresholds()).passed  # the other gates still judge


def test_tables_hold_no_small_real_cells(without_tokens):
    # The privacy attacks write scalar aggregates only; the one privacy table is suppressed.
    report = without_tokens
    hist = report.tables["privacy_distance_histograms"]
    test = hist[hist["group"].str.startswith("test")]
    counts = test["fraction"] * report.params["n_visits_real_test"]
    assert not ((counts > 0.5) & (counts < 9.5)).any()
    assert test["suppressed"].any() or (counts == 0).any() or (counts >= 10).all()


def test_partial_leak_fails_the_copy_and_dcr_gates(world):
    """A generator that copies one patient in five: the copy and DCR gates catch it."""
    vocab, seqs, real = world
    ids = np.unique(seqs["train"].subject_ids)[::5]
    copied = encode(real["train"].subset(ids), vocab)
    fresh = seqs["heldout"]
    tokens = (np.concatenate([copied.tokens, fresh.tokens]),
              np.concatenate([copied.offsets, fresh.offsets[1:] + copied.offsets[-1]]))
    out = token_copies(TokenStreams(seqs["train"], seqs["test"], tokens, vocab.token_types))
    m = {f"privacy/{k}": v for k, v in out.items()}
    assert 0.1 < m["privacy/visit_sequence_copy_fraction"] < 0.35
    assert 0.1 < m["privacy/ngram_near_copy_patient_share"] < 0.35
    assert not privacy_visit_copy_gate(m, GateThresholds()).passed
    assert not privacy_ngram_copy_gate(m, GateThresholds()).passed


# ---------------------------------------------------------------- the hashing itself


def test_ngram_hashes_match_a_plain_python_count():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 6, 400)
    offsets = np.array([0, 37, 37, 120, 125, 400])
    for length in (2, 3, 8, 13, 32):
        h, patient = _ngram_hashes(tokens, offsets, length)
        expected = [(p, tuple(tokens[i:i + length])) for p in range(len(offsets) - 1)
                    for i in range(offsets[p], offsets[p + 1] - length + 1)]
        assert len(h) == len(expected) and list(patient) == [p for p, _ in expected]
        by_gram: dict[tuple, set] = {}
        for value, (_, gram) in zip(h, expected):
            by_gram.setdefault(gram, set()).add(int(value))
        assert all(len(v) == 1 for v in by_gram.values())  # one hash per n-gram ...
        assert len({next(iter(v)) for v in by_gram.values()}) == len(by_gram)  # ... and distinct n-grams differ


def test_visit_hashes_see_order_multisets_and_headers(world):
    vocab, seqs, _ = world
    one = seqs["train"].patient(0)
    types = vocab.token_types
    offsets = np.array([0, len(one)])
    base = _visit_hashes(one, offsets, types)
    # Swap two measurement values inside the first visit: the sequence changes, multiset and header do not.
    first_end = np.flatnonzero(one == vocab.end_adm_id)[0]
    values = np.flatnonzero(types[one[:first_end]] == TokenType.VALUE)
    a = values[0]
    b = next(i for i in values if one[i] != one[a])
    swapped = one.copy()
    swapped[[a, b]] = swapped[[b, a]]
    other = _visit_hashes(swapped, offsets, types)
    assert other["sequence"][0] != base["sequence"][0]
    assert other["multiset"][0] == base["multiset"][0] and other["header"][0] == base["header"][0]
    # Changing a code changes the header.
    code = np.flatnonzero(types[one[:first_end]] == TokenType.DX)[0]
    recoded = one.copy()
    recoded[code] = vocab.id_of("DX//UNK") if one[code] != vocab.id_of("DX//UNK") else one[code] + 1
    assert _visit_hashes(recoded, offsets, types)["header"][0] != base["header"][0]
    # A later visit's GAP_VISIT token is not part of its content.
    assert len(base["sequence"]) == int(np.sum(one == vocab.end_adm_id))
    assert _mix64(np.arange(4)).dtype == np.uint64


def test_token_sequences_of_other_vocabularies_are_refused(world):
    from synehrgy_assets.core.metrics import MetricInputError
    from synehrgy_assets.core.tokens.encoding import TokenSequences

    vocab, seqs, _ = world
    s = seqs["test"]
    other = TokenSequences(s.tokens, s.offsets, s.subject_ids, s.visit_starts, vocab_version="something-else")
    with pytest.raises(MetricInputError, match="different vocabularies"):
        token_copies(TokenStreams(seqs["train"], s, other, vocab.token_types))
    bad = (np.array([1, 2, 10**6]), np.array([0, 3]))
    with pytest.raises(MetricInputError, match="outside the vocabulary"):
        token_copies(TokenStreams(seqs["train"], s, bad, vocab.token_types))


def test_real_test_copy_shares_resting_on_few_patients_are_reported_as_zero(world):
    """No small real cell leaves the workspace: 5 test patients copying train read as 0, 12 do not."""
    vocab, seqs, real = world
    train = seqs["train"]

    def with_copies(k: int):
        copied = encode(real["train"].subset(np.unique(train.subject_ids)[:k]), vocab)
        test = seqs["test"]
        return (np.concatenate([copied.tokens, test.tokens]),
                np.concatenate([copied.offsets, test.offsets[1:] + copied.offsets[-1]]))

    few = token_copies(TokenStreams(train, with_copies(5), seqs["heldout"], vocab.token_types))
    many = token_copies(TokenStreams(train, with_copies(12), seqs["heldout"], vocab.token_types))
    for key in ("visit_sequence_copy_fraction_test", "ngram_near_copy_patient_share_test"):
        assert few[key] == 0.0 and many[key] > 0.05, key
    assert few["visit_sequence_copy_fraction"] == 0.0  # the synthetic side is never suppressed, and is 0 here


def test_the_evaluation_asset_loads_every_token_sequence_and_the_real_sampling_fraction(world, tmp_path):
    """`privacy_inputs` (defs/evaluation.py): the streams the asset hands to `evaluate`."""
    import json

    import duckdb

    from synehrgy_assets.defs.evaluation import privacy_inputs
    from synehrgy_assets.resources import WorkspaceResource

    vocab, seqs, _ = world
    workspace = WorkspaceResource(home=str(tmp_path))
    workspace.ensure()
    con = duckdb.connect(str(workspace.layout.duckdb))
    con.execute("create schema synehrgy")
    con.execute("create table synehrgy.patient_split as select * from (values (1, 'train'), (2, 'train'), "
                "(3, 'train'), (4, 'val'), (5, 'test')) t(subject_id, split)")
    con.close()
    workspace.layout.vocabulary.parent.mkdir(parents=True)
    vocab.to_json(workspace.layout.vocabulary)
    seqs["train"].save(workspace.layout.tokens / "train")
    seqs["test"].save(workspace.layout.tokens / "test")
    out = workspace.layout.synthetic_sequences
    out.mkdir(parents=True)
    np.save(out / "tokens.npy", np.asarray(seqs["heldout"].tokens))
    np.save(out / "offsets.npy", np.asarray(seqs["heldout"].offsets))
    provenance = {"vocabulary_version": vocab.version}

    streams, error, share = privacy_inputs(workspace, provenance)
    assert error == "" and share == 0.6  # 3 train patients of 5
    m = token_copies(streams)
    assert m["visit_sequence_copy_fraction"] == 0.0 and m["ngram_shared_fraction_test"] == 0.0
    streams, error, _ = privacy_inputs(workspace, {"vocabulary_version": "another"})
    assert streams is None and "different vocabularies" in error
    (workspace.layout.tokens / "test" / "sequences.json").unlink()
    streams, error, _ = privacy_inputs(workspace, provenance)
    assert streams is None and "unavailable" in error
    assert json.dumps(error)  # a plain message for report.errors
