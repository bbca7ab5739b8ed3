"""Shared-memory batch helpers: same values as torch.cat / torch.stack, shared storage inside workers."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from opencood.data_utils.pre_processor.batch_utils import cat_tensors, stack_arrays


def _parts(seed):
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(rng.standard_normal((n, 3, 2)).astype(np.float32)) for n in (4, 0, 7)]


def _build(seed):
    parts = _parts(seed)
    arrays = [p[:4].numpy().astype(np.float64) for p in parts if len(p)]
    return {"cat": cat_tensors(parts), "cat1": cat_tensors([p[:, :2] for p in parts], dim=0),
            "stack": stack_arrays(arrays)}


def test_same_as_torch_in_the_main_process():
    parts = _parts(0)
    out = _build(0)
    torch.testing.assert_close(out["cat"], torch.cat(parts), rtol=0, atol=0)
    assert out["stack"].dtype == torch.float32 and out["stack"].shape == (2, 4, 3, 2)
    torch.testing.assert_close(out["stack"], torch.stack([p[:4] for p in parts if len(p)]), rtol=0, atol=0)
    assert not out["cat"].is_shared()
    ints = cat_tensors([torch.arange(3, dtype=torch.int32).reshape(3, 1), torch.ones(2, 1, dtype=torch.int32)])
    assert ints.dtype == torch.int32 and ints.flatten().tolist() == [0, 1, 2, 1, 1]


class _Batches(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, idx):
        out = _build(idx)
        out["shared"] = torch.tensor([out["cat"].is_shared(), out["stack"].is_shared()])
        return out


def test_shared_inside_a_worker_and_values_unchanged():
    loader = DataLoader(_Batches(), batch_size=None, num_workers=1)
    for idx, batch in enumerate(loader):
        assert batch["shared"].all()
        expect = _build(idx)
        for key in ("cat", "cat1", "stack"):
            torch.testing.assert_close(batch[key], expect[key], rtol=0, atol=0)
