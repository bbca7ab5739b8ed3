"""Message degradation (quantisation, loss, noise) and its use in the baseline model and the volume count."""
import copy

import pytest
import torch

from opencood.models.sub_modules.degradation import MessageDegradation, quantize
from opencood.utils import comm_volume
from opencood.utils.errors import ConfigError
from opencood.utils.registry import MODELS

from tests.models.test_heter_model_baseline import ARGS, make_batch

IS_EGO = torch.tensor([True, False, False])


def message():
    return torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 5


def test_32_bits_is_lossless_and_1_bit_is_not():
    x = message()
    assert torch.equal(quantize(x, 32), x)
    assert torch.equal(MessageDegradation.from_args({"bits": 32})(x, IS_EGO), x)
    one = MessageDegradation.from_args({"bits": 1})(x, IS_EGO)
    assert torch.equal(one[0], x[0])  # the ego's own map never crosses a link
    for row in (1, 2):  # two levels: the row's min and max
        levels = one[row].unique()
        assert levels.numel() == 2
        torch.testing.assert_close(levels, torch.stack([x[row].min(), x[row].max()]))
    assert not torch.allclose(one[1:], x[1:])
    eight = quantize(x, 8)
    step = (x[1].max() - x[1].min()) / 255
    assert (eight[1] - x[1]).abs().max() <= step / 2 + 1e-5 and eight[1].unique().numel() <= 256


def test_mask_ratio_and_noise_and_seed():
    x = message()
    d = MessageDegradation.from_args({"mask_ratio": 0.5, "seed": 3})
    out = d(x, IS_EGO)
    zero = out[1:] == 0
    assert 0.4 < zero.float().mean() < 0.6 and torch.equal(out[1:][~zero], x[1:][~zero])
    again = MessageDegradation.from_args({"mask_ratio": 0.5, "seed": 3})(x, IS_EGO)
    assert torch.equal(out, again)  # same seed, same draws
    cell = MessageDegradation.from_args({"mask_ratio": 0.5, "mask_unit": "cell"})(x, IS_EGO)
    lost = (cell[1:] == 0).all(dim=1)
    assert 0.3 < lost.float().mean() < 0.7
    noisy = MessageDegradation.from_args({"noise_std": 3.0})(x, IS_EGO)
    assert (noisy[1:] - x[1:]).std().item() == pytest.approx(3.0, rel=0.1) and torch.equal(noisy[0], x[0])


@pytest.mark.parametrize("section,key", [({"mask_ratio": 1.5}, "mask_ratio"), ({"noise_std": -1}, "noise_std"),
                                         ({"bits": 0}, "bits"), ({"bits": 33}, "bits")])
def test_bad_settings_are_one_line_errors(section, key):
    with pytest.raises(ConfigError, match=f"comm_degradation.{key}") as e:
        MessageDegradation.from_args(section, "m.yaml")
    assert "\n" not in str(e.value)


def test_baseline_degrades_collaborator_features_only_at_eval_and_volume_counts_bits():
    args = copy.deepcopy(ARGS)
    torch.manual_seed(0)
    clean = MODELS.get("heter_model_baseline")(args).eval()
    args["comm_degradation"] = {"bits": 1}
    torch.manual_seed(0)
    lossy = MODELS.get("heter_model_baseline")(args).eval()
    batch = make_batch(torch.Generator().manual_seed(1))
    with torch.no_grad():
        f_clean, _, _ = clean.encode_agents(batch)
        f_lossy, _, aux = lossy.encode_agents(batch)
        out = lossy(batch)
    assert torch.equal(f_lossy[[0, 2]], f_clean[[0, 2]])  # both egos (record_len [2, 1])
    assert f_lossy[1].unique().numel() <= 2 and not torch.equal(f_lossy[1], f_clean[1])
    assert aux["message_bits"] == 1 and out["message_bits"] == 1
    c, h, w = f_clean.shape[1:]
    assert comm_volume.intermediate_bytes(out, batch["record_len"]) == [-(-c * h * w // 8) + 8]
    assert comm_volume.intermediate_bytes({"fused_feature": out["fused_feature"]}, batch["record_len"]) == \
        [c * h * w * 4]
    lossy.train()
    f_train, _, aux = lossy.encode_agents(batch)
    assert "message_bits" not in aux and f_train[1].unique().numel() > 2
