"""The generator fit in core (`core/generator_fit.py`) against the `gpt_checkpoint` config that feeds it."""

from __future__ import annotations

import dataclasses

import pytest

from synehrgy_assets.core.generator_fit import GeneratorFitSpec, load_training_data
from synehrgy_assets.defs.training import GptTrainingConfig

# How often the asset reports progress is the asset's business, not the fit's.
ASSET_ONLY = {"progress_every_seconds"}


def test_the_spec_has_the_asset_configs_fields_and_defaults():
    """The asset builds the spec from its config's values: a field or default added to one and not
    the other would fail the asset (unknown field) or fit with another default than documented."""
    config = GptTrainingConfig().model_dump(exclude=ASSET_ONLY)
    spec = {f.name: f.default for f in dataclasses.fields(GeneratorFitSpec)}
    assert spec == config
    assert GeneratorFitSpec(**config) == GeneratorFitSpec()


def test_windows_of_another_vocabulary_are_refused(tmp_path):
    (tmp_path / "summary.json").write_text('{"vocabulary_version": "aaaaaaaaaaaa"}')

    class Vocab:
        version = "bbbbbbbbbbbb"

    with pytest.raises(ValueError, match="encoded with vocabulary aaaaaaaaaaaa .* token_vocabulary is bbbbbbbbbbbb"):
        load_training_data(tmp_path, Vocab())
