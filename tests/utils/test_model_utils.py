"""rename_model_dict_keys and its CLI, ``heal_tools.py rename_keys``."""
import pytest
import torch

from opencood.tools import heal_tools
from opencood.utils.errors import CheckpointError
from opencood.utils.model_utils import rename_model_dict_keys


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


def test_rename_keys_cli(tmp_path, capsys):
    path = str(tmp_path / "net_epoch1.pth")
    torch.save(_state(), path)
    heal_tools.main(["rename_keys", path, "encoder_m1.*=encoder_m3.*", "reg_head.weight="])
    assert set(torch.load(path, weights_only=True)) == {"encoder_m3.a.weight", "encoder_m3.b.bias", "cls_head.weight"}
    assert "renamed keys of" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        heal_tools.main(["rename_keys", path, "no_equals_sign"])
    assert e.value.code == 2 and "expected OLD=NEW" in capsys.readouterr().err
