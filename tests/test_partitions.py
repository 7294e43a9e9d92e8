"""Partitioned generation: shards seeded from their key, generated in separate runs, assemble into
exactly what one process sampling each shard's seed gives; the cohort is decoded from the union."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tiny_models import single_thread  # noqa: F401  (one torch thread: fast and bitwise comparable)

SHARD_CONFIG = {"n_patients": 3, "batch_size": 3, "max_tokens_per_patient": 256}


def test_shard_seeds_are_derived_from_the_key():
    from synehrgy_assets.defs.synthesis import shard_seed

    seeds = {shard_seed(0, f"shard-{i:03d}") for i in range(8)}
    assert len(seeds) == 8 and shard_seed(0, "shard-003") == shard_seed(0, "shard-003")
    assert shard_seed(1, "shard-003") != shard_seed(0, "shard-003")
    with pytest.raises(ValueError, match="shard-000"):
        shard_seed(0, "3")


def test_shards_are_not_in_the_unpartitioned_jobs():
    from synehrgy_assets.definitions import build_definitions

    repo = build_definitions().get_repository_def()
    for name in ("synehrgy_end_to_end", "synehrgy_retrain"):
        keys = {k.to_user_string() for k in repo.get_job(name).asset_layer.selected_asset_keys}
        assert "synthetic_sequence_shards" not in keys and "synthetic_sequences" in keys, name
    shards = repo.get_job("synehrgy_generate_shards")
    assert shards.partitions_def is not None and shards.partitions_def.get_partition_keys()[0] == "shard-000"


@pytest.mark.integration
def test_two_partitions_union_equals_one_process_with_the_same_seeds(released_workspace, tmp_path):
    import dagster as dg

    from synehrgy_assets.core.generation import generate_sequences
    from synehrgy_assets.defs import synthesis
    from tests.small_graph import copy_workspace

    home, defs, instance = copy_workspace(released_workspace, tmp_path / "ws")
    job = defs.resolve_job_def("synehrgy_generate_shards")
    run_config = {"ops": {"synthetic_sequence_shards": {"config": SHARD_CONFIG}}}
    for key in ("shard-001", "shard-000"):  # separate runs, in any order
        result = job.execute_in_process(partition_key=key, instance=instance, run_config=run_config)
        assert result.success
    workspace = defs.resources["workspace"]

    # The same seeds in one process, shard after shard.
    generator, _ = synthesis.load_generator(defs.resources["mlflow_tracking"], "candidate", "cpu")
    model, vocab = generator.model, generator.vocabulary
    expected = []
    for key in ("shard-000", "shard-001"):
        out = generate_sequences(model, vocab, SHARD_CONFIG["n_patients"], seed=synthesis.shard_seed(0, key),
                                 batch_size=SHARD_CONFIG["batch_size"], device="cpu",
                                 max_tokens_per_patient=SHARD_CONFIG["max_tokens_per_patient"])
        expected += [np.asarray(s) for s in out.sequences]

    # Assembled, and decoded downstream like any synthetic_sequences.
    assembled = dg.materialize(
        [synthesis.synthetic_sequences, synthesis.synthetic_cohort], instance=instance, resources=defs.resources,
        run_config={"ops": {"synthetic_sequences": {"config": {"from_shards": 2}}}})
    assert assembled.success
    seq_dir = workspace.layout.synthetic_sequences
    tokens, offsets = np.load(seq_dir / "tokens.npy"), np.load(seq_dir / "offsets.npy")
    union = [tokens[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    assert len(union) == len(expected) == 2 * SHARD_CONFIG["n_patients"]
    for i, (got, want) in enumerate(zip(union, expected)):
        assert np.array_equal(got, want), f"patient {i} differs"
    cohort_meta = {e.event_specific_data.materialization.asset_key.to_user_string():
                   e.event_specific_data.materialization.metadata for e in assembled.get_asset_materialization_events()}
    decoded = cohort_meta["synthetic_cohort"]
    assert decoded["valid_sequences"].value + decoded["invalid_sequences"].value == 2 * SHARD_CONFIG["n_patients"]

    # A shard that was never generated is named, and nothing is replaced.
    before = (seq_dir / "tokens.npy").read_bytes()
    missing = dg.materialize([synthesis.synthetic_sequences], instance=instance, resources=defs.resources,
                             run_config={"ops": {"synthetic_sequences": {"config": {"from_shards": 3}}}},
                             raise_on_error=False)
    assert not missing.success
    error = next(e for e in missing.all_events if e.is_step_failure).step_failure_data.error
    assert "shard-002" in (error.cause.message if error.cause else error.message)
    assert (seq_dir / "tokens.npy").read_bytes() == before
