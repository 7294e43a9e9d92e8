"""The SynEHRgy tokenization in one place: grammar, vocabulary, encoding, decoding, context format
and training windows (docs/tokens.md).

One flat token stream per patient (grammar in docs/tokens.md and `grammar.py`):

    <s> visit+ </s>
    visit := [GAP_VISIT] AGE GENDER ETHNICITY_GROUP INSURANCE ADMISSION_TYPE FIRST_CAREUNIT
             ICU_DATABASE </covar>
             MORTALITY PHENOTYPE* </label> DX* PX* </code> (VALUE+ DT)* </ts> </adm>

Modules: `grammar` (token types, validation, the sampling mask), `vocabulary` (token ids, what
each decodes to), `vocab_config` (fixed scales, fit settings), `bins` (numeric bins),
`vocab_fit` (the fit on the train split), `columns` (checked column access shared by fit and encode), `kernels` (numba loops), `encoding`,
`decoding`, `windows` (training windows in the context format).
"""

from synehrgy_assets.core.tokens.decoding import DecodeReport, decode
from synehrgy_assets.core.tokens.encoding import TokenSequences, encode, encode_blocks, encode_marts
from synehrgy_assets.core.tokens.grammar import GrammarConstraint, GrammarState, TokenType
from synehrgy_assets.core.tokens.vocabulary import (
    AGE_CAP,
    AGE_EDGES,
    DT_EDGES,
    GAP_VISIT_EDGES,
    UNK,
    NumericBins,
    TokenVocabulary,
    VariableSpec,
    VocabularyConfig,
    load_variables,
)
from synehrgy_assets.core.tokens.windows import ContextWindows, context_windows, reference_fraction

__all__ = [
    "AGE_CAP", "AGE_EDGES", "DT_EDGES", "GAP_VISIT_EDGES", "UNK", "VocabularyConfig", "NumericBins",
    "VariableSpec", "TokenVocabulary", "TokenSequences", "DecodeReport", "ContextWindows",
    "GrammarConstraint", "GrammarState", "TokenType", "load_variables", "encode", "encode_blocks",
    "encode_marts", "decode", "context_windows", "reference_fraction",
]
