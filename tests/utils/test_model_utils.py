import pytest
import torch
import torch.nn as nn

from opencood.utils.errors import CheckpointError
from opencood.utils.model_utils import fix_bn, fix_frozen_bn, rename_model_dict_keys, unfix_bn


def _state():
    return {"encoder_m1.a.weight": torch.ones(2), "encoder_m1.b.bias": torch.zeros(1),
            "cls_head.weight": torch.ones(3), "reg_head.weight": torch.ones(4)}


def test_rename_prefix_exact_and_drop():
    out = rename_model_dict_keys(_state(), {"encoder_m1.*": "encoder_m3.*", "cls_head.weight": "head.weight",
                                            "reg_head.weight": ""})
    assert set(out) == {"encoder_m3.a.weight", "encoder_m3.b.bias", "head.weight"}


def test_rename_file_in_place(tmp_path):
    path = str(tmp_path / "net_epoch1.pth")
    torch.save(_state(), path)
    rename_model_dict_keys(path, {"encoder_m1.*": ""})
    assert set(torch.load(path)) == {"cls_head.weight", "reg_head.weight"}


def test_rename_missing_key_names_it(tmp_path):
    path = str(tmp_path / "ck.pth")
    torch.save(_state(), path)
    with pytest.raises(CheckpointError, match="nope"):
        rename_model_dict_keys(path, {"nope": "x"})
    assert set(torch.load(path)) == set(_state())  # file untouched


def test_fix_bn_helpers():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))
    net.apply(fix_bn)
    assert not net[1].training and net[0].training
    net.apply(unfix_bn)
    assert net[1].training
    net[1].requires_grad_(False)
    net.train()
    fix_frozen_bn(net)
    assert not net[1].training and net[3].training
