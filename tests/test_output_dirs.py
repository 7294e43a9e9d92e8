"""One-file atomic writes (`output_dirs.atomic_file`): the old file or the new one, never half of one."""

from __future__ import annotations

import pytest

from synehrgy_assets.core.output_dirs import atomic_file, stale_temp_files, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text_atomic(tmp_path / "state.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as tmp:
            tmp.write_text("half of the ne")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]


def test_a_write_replaces_the_file_whole_with_the_permissions_asked_for(tmp_path):
    path = tmp_path / "sub" / "state.json"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new", mode=0o600)
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o600
    assert stale_temp_files(path) == []


def test_a_killed_writers_temporary_is_found(tmp_path):
    path = tmp_path / "train_state.pt"
    left = tmp_path / ".train_state.pt.tmp-123-abcdef12"
    left.write_bytes(b"partial")
    (tmp_path / ".other.pt.tmp-1-2").write_bytes(b"")
    assert stale_temp_files(path) == [left]
