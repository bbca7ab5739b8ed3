import pytest
import torch

from opencood.utils.checkpoint import atomic_torch_save, check_state_dict, find_checkpoint
from opencood.utils.errors import CheckpointError


def test_check_state_dict_keys_and_shapes():
    m = torch.nn.Sequential(torch.nn.Linear(3, 2))
    sd = m.state_dict()
    check_state_dict(m, sd, "f.pth")
    bad = dict(sd)
    bad["0.weight"] = torch.zeros(5, 5)
    with pytest.raises(CheckpointError, match=r"f\.pth: key '0\.weight' has shape \(5, 5\), model expects \(2, 3\)"):
        check_state_dict(m, bad, "f.pth")
    extra = dict(sd, **{"9.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected key '9.weight'"):
        check_state_dict(m, extra, "f.pth")
    with pytest.raises(CheckpointError, match="missing key '0.bias'"):
        check_state_dict(m, {"0.weight": sd["0.weight"]}, "f.pth")
    with pytest.raises(CheckpointError, match=r"needs every '0\.\*' key"):
        check_state_dict(m, {"0.weight": sd["0.weight"]}, "f.pth", strict=False, required_prefixes=("0.",))


def test_find_checkpoint_prefers_bestval(tmp_path):
    assert find_checkpoint(str(tmp_path)) == (0, None)
    for n in ("net_epoch2.pth", "net_epoch10.pth", "net_epoch_bestval_at7.pth"):
        atomic_torch_save({}, str(tmp_path / n))
    assert find_checkpoint(str(tmp_path))[0] == 7
    assert find_checkpoint(str(tmp_path), prefer_bestval=False)[0] == 10
    assert not list(tmp_path.glob("*.tmp*"))
