"""atomic_open: the target is replaced only by a complete file; a failed write leaves it and no temp file."""
import builtins
import errno
import os

import pytest

from opencood.utils.atomic_io import atomic_open, remove_stale_temp_files
from opencood.utils.errors import RunError, exit_on_error, one_line


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


class _FullDisk:
    """A file object whose writes fail like a full disk after ``room`` bytes."""

    def __init__(self, f, room, err):
        self.f, self.room, self.err = f, room, err

    def write(self, data):
        if len(data) > self.room:
            self.f.write(data[:self.room])
            raise OSError(self.err, os.strerror(self.err))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_full_disk_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, monkeypatch, err):
    import torch
    from opencood.utils import atomic_io
    from opencood.utils.checkpoint import atomic_torch_save
    from opencood.hypes_yaml.yaml_utils import save_yaml
    target = tmp_path / "net_epoch2.pth"
    (tmp_path / "net_epoch1.pth").write_bytes(b"old")
    monkeypatch.setattr(atomic_io, "open", lambda p, m: _FullDisk(builtins.open(p, m), 100, err), raising=False)
    for write in (lambda: atomic_torch_save({"w": torch.zeros(1000)}, str(target)),
                  lambda: save_yaml({"a": "x" * 500}, str(tmp_path / "config.yaml"))):
        with pytest.raises(RunError) as e:
            write()
        msg = one_line(e.value)
        assert str(tmp_path) in msg and os.strerror(err).lower() in msg and "\n" not in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["net_epoch1.pth"]


def test_cli_prints_one_line_for_a_raw_enospc(capsys):
    def body():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/train.log")
    with pytest.raises(SystemExit) as e:
        exit_on_error(body)
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: /runs/x/train.log: cannot write (no space left on device)\n"


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    names = [f"net_epoch3.pth.tmp-{dead}-0123abcd", f"config.yaml.tmp-{os.getpid()}-89abcdef",
             "notes.tmp-12-x", "net_epoch3.pth"]
    for n in names:
        (tmp_path / n).write_text("x")
    removed = remove_stale_temp_files(str(tmp_path))
    assert [os.path.basename(p) for p in removed] == [names[0]]
    assert sorted(os.listdir(tmp_path)) == sorted(names[1:])
