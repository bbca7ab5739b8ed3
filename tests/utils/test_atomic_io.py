"""atomic_open: the target is replaced only by a complete file; a failed write leaves it and no temp file."""
import os

import pytest

from opencood.utils.atomic_io import atomic_open


def test_replaces_target_on_success(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with atomic_open(target, "w", fsync=True) as f:
        f.write("new")
        assert target.read_text() == "old"  # readers still see the old file while writing
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_failed_write_keeps_old_file_and_cleans_up(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "wb") as f:
            f.write(b"partial")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_only_write_modes():
    with pytest.raises(ValueError):
        with atomic_open("x", "a"):
            pass
