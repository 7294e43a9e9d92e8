"""Conditional generation: the --where grammar, which patients satisfy a condition, and rejection
sampling in `Generator` (exactly n patients, 100 % satisfying, the model's conditional distribution)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from synehrgy_assets.core.cohort import StagedCohort
from synehrgy_assets.core.conditions import (
    WhereError,
    check_against_vocabulary,
    conditional_shares,
    parse_where,
    satisfying_patients,
)
from synehrgy_assets.core.generation import ConditionInfeasible, Generator, SamplingParams, length_cap
from synehrgy_assets.core.model import GPT, GPTConfig
from synehrgy_assets.core.tokens import TokenVocabulary, VocabularyConfig
from tests.helpers.toy_cohort import synthetic_cohort
from tests.tiny_models import single_thread  # noqa: F401 (autouse fixture)


def _cohort() -> StagedCohort:
    """Three patients: 1 (F, 70, EMERGENCY, died, 0389), 2 (M, 40 then 66, ELECTIVE, survived, 4019),
    3 (F, 30, EMERGENCY, survived, procedure 9604)."""
    visits = pd.DataFrame({
        "subject_id": [1, 2, 2, 3], "icustay_id": [10, 20, 21, 30], "age_years": [70.0, 40.0, 66.0, 30.0],
        "gender": ["F", "M", "M", "F"], "ethnicity_group": ["WHITE"] * 4, "insurance": ["Medicare"] * 4,
        "admission_type": ["EMERGENCY", "ELECTIVE", "ELECTIVE", "EMERGENCY"],
        "first_careunit": ["MICU", "CCU", "MICU", "SICU"], "mortality_inhospital": [1, 0, 0, 0]})
    codes = pd.DataFrame({"subject_id": [1, 1, 2, 3], "icustay_id": [10, 10, 20, 30],
                          "code_type": ["diagnosis", "diagnosis", "diagnosis", "procedure"],
                          "icd9_code": ["0389", "99591", "4019", "9604"], "seq_num": [1, 2, 1, 1]})
    empty = pd.DataFrame({"subject_id": pd.Series(dtype=int), "icustay_id": pd.Series(dtype=int)})
    return StagedCohort(visits, codes, empty, empty)


@pytest.mark.parametrize("where, expected", [
    ("gender=F", [1, 3]),
    ("age>=65", [1, 2]),            # patient 2's second stay
    ("age>=65, died=1", [1]),
    ("mortality=0", [2, 3]),
    ("admission_type=emergency", [1, 3]),  # values are compared case-insensitively
    ("first_careunit=MICU|CCU", [1, 2]),
    ("code=038*", [1]),
    ("diagnosis=4019", [2]),
    ("procedure=96*", [3]),
    ("diagnosis=96*", []),           # 9604 is a procedure
    ("code!=038*", [2, 3]),
    ("gender!=F and age<50", [2]),  # each clause holds at some stay of the patient
])
def test_which_patients_satisfy_a_condition(where, expected):
    assert satisfying_patients(parse_where(where), _cohort()).tolist() == expected


def test_gender_is_a_patients_attribute_every_stay_must_satisfy():
    cohort = _cohort()
    cohort.visits.loc[cohort.visits["icustay_id"] == 21, "gender"] = "F"  # patient 2: M, then F
    assert satisfying_patients(parse_where("gender=F"), cohort).tolist() == [1, 3]
    assert satisfying_patients(parse_where("gender=M"), cohort).tolist() == []
    assert satisfying_patients(parse_where("gender!=F"), cohort).tolist() == []


def test_conditional_shares_are_among_the_patients_that_satisfy_the_condition():
    shares = conditional_shares(_cohort(), parse_where("admission_type=EMERGENCY"), ["died=1", "age>=65", "gender=F"])
    assert shares == {"patients": 2, "died=1": 0.5, "age>=65": 0.5, "gender=F": 1.0}


@pytest.mark.parametrize("bad, message", [
    ("agee>=65", r"unknown field 'agee'; valid fields: age, gender, .*first_careunit, died, code"),
    ("gender>=F", r"gender takes = or !=, not >="),
    ("age>=old", r"age is a number, got 'old'"),
    ("died=yes", r"died is 0 or 1"),
    ("code=0*38", r"a code prefix has one '\*', at its end"),
    ("admission_type=", r"admission_type needs a value"),
    ("65<=age", r"expected <field><op><value>"),
    ("age", r"expected <field><op><value>"),
])
def test_bad_conditions_name_the_clause_and_the_field(bad, message):
    with pytest.raises(WhereError, match=message):
        parse_where(["gender=F", bad])


@pytest.fixture(scope="module")
def vocab() -> TokenVocabulary:
    return TokenVocabulary.fit(synthetic_cohort(60, seed=1), VocabularyConfig())


@pytest.fixture(scope="module")
def generator(vocab) -> Generator:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab.size, n_ctx=256, n_layer=2, n_head=2, n_embd=32, dropout=0.0,
                          condition_table=vocab.condition_table())).eval()
    return Generator(model, vocab, stored_cap=200)


def test_values_the_generator_cannot_write_are_refused(vocab):
    with pytest.raises(WhereError, match=r"knows no first_careunit XICU; known: .*MICU"):
        check_against_vocabulary(parse_where("first_careunit=XICU"), vocab)
    with pytest.raises(WhereError, match=r"no diagnosis code of the generator's vocabulary matches ZZZ\*"):
        check_against_vocabulary(parse_where("diagnosis=ZZZ*"), vocab)
    check_against_vocabulary(parse_where("code!=ZZZ*, gender=f"), vocab)  # never having it is fine


def test_rejection_gives_exactly_n_satisfying_patients_drawn_from_the_model(generator):
    params = SamplingParams(seed=5, batch_size=16)
    cohort = generator.generate(6, params, where="gender=F")
    visits = cohort.marts["visits"]
    assert visits["subject_id"].nunique() == 6 and (visits["gender"] == "F").all()
    assert visits["subject_id"].tolist() == sorted(visits["subject_id"]) and visits["subject_id"].min() == 0
    assert cohort.stats["accepted_patients"] == 6 and 0 < cohort.stats["acceptance_rate"] <= 1
    assert len(cohort.mimic_tables["PATIENTS"]) == 6 and set(cohort.mimic_tables["PATIENTS"]["gender"]) == {"F"}
    # The first round is the unconditioned sample of the same seed: the accepted patients are its
    # women, in order, with the same stays and measurements (so, the model's conditional draw).
    free = generator.generate(16, params).marts
    women = satisfying_patients(parse_where("gender=F"), StagedCohort(*free.values()))[:6]
    expected = free["visits"][free["visits"]["subject_id"].isin(women)]
    cols = ["visit_index", "age_years", "gender", "admission_type", "first_careunit", "mortality_inhospital"]
    pd.testing.assert_frame_equal(visits[cols].reset_index(drop=True), expected[cols].reset_index(drop=True))
    assert len(cohort.marts["measurements"]) == free["measurements"]["subject_id"].isin(women).sum()
    again = generator.generate(6, params, where="gender=F")
    pd.testing.assert_frame_equal(again.marts["measurements"], cohort.marts["measurements"])


def test_rare_conditions_take_more_rounds_and_infeasible_ones_are_refused(generator):
    params = SamplingParams(seed=1, batch_size=8)
    cohort = generator.generate(10, params, where=["age>=60", "gender=M"])
    visits = cohort.marts["visits"]
    assert visits["subject_id"].nunique() == 10 and (visits["gender"] == "M").all()
    assert (visits.groupby("subject_id")["age_years"].max() >= 60).all()
    assert cohort.stats["rounds"] >= 2 and cohort.stats["sampled_patients"] > 10
    with pytest.raises(ConditionInfeasible, match=r"--where age<0: 0 of 30 sampled patients satisfy it "
                                                  r"\(acceptance 0.00%\).*over the budget of 30"):
        generator.generate(2, params, where="age<0", max_attempts=30)


def test_sampling_params_turn_zero_into_off_once():
    params = SamplingParams(top_k=0, top_p=0.0, max_tokens_per_patient=0)
    assert (params.top_k, params.top_p, params.max_tokens_per_patient) == (None, None, None)
    for bad in (dict(top_k=-1), dict(top_p=1.5), dict(temperature=-0.1), dict(batch_size=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingParams(**bad)
    assert length_cap(None, 300, 64) == (300, "stored with the generator")
    assert length_cap(120, 300, 64) == (120, "requested")
    assert length_cap(None, None, 64) == (256, "4 * n_ctx")
    assert np.isfinite(SamplingParams(seed=np.int64(3)).seed)
