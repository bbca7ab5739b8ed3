"""One line for every error: the project's errors reach the CLI as ``error: <message>``, exit 2, also from
DataLoader workers (which re-raise with the worker's folded traceback as the message)."""
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from opencood.tools.train_utils import dataloader_worker_init
from opencood.utils.errors import CheckpointError, ConfigError, DataError, exit_on_error, one_line


class _Broken(Dataset):
    def __init__(self, exc):
        self.exc = exc

    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 3:
            raise self.exc
        return torch.zeros(1)


def _cli_line(capsys, fn):
    with pytest.raises(SystemExit) as e:
        exit_on_error(fn)
    assert e.value.code == 2
    out = capsys.readouterr()
    assert out.out == ""
    return out.err


def test_worker_error_is_the_same_single_line_for_any_worker_count(capsys):
    exc = DataError("/data/train/2021_x/641/000070.pcd: truncated DATA section (expected 10 points, got 3)")
    lines = set()
    for workers in (0, 2):
        loader = DataLoader(_Broken(exc), batch_size=1, num_workers=workers, worker_init_fn=dataloader_worker_init)
        lines.add(_cli_line(capsys, lambda: [b for b in loader]))
    assert lines == {f"error: {one_line(exc)}\n"}


@pytest.mark.parametrize("cls", [DataError, ConfigError, CheckpointError])
@pytest.mark.parametrize("message", ["a.yaml: key 'x' bad", "a.yaml: bad\nvalue: Error: inside"])
def test_worker_rewrap_keeps_the_original_message(capsys, cls, message):
    """torch re-raises a worker's exception as ``cls(folded traceback)`` (ExceptionWrapper.reraise)."""
    from torch._utils import ExceptionWrapper

    def body():
        try:
            raise cls(message)
        except cls:
            wrapped = ExceptionWrapper(where="in DataLoader worker process 3")
        wrapped.reraise()

    assert _cli_line(capsys, body) == f"error: {one_line(cls(message))}\n"


def test_plain_construction_is_unchanged():
    assert str(DataError("x: y")) == "x: y" and DataError("a", "b").args == ("a", "b")


def test_other_exceptions_still_propagate():
    with pytest.raises(KeyError):
        exit_on_error(lambda: {}["k"])
