"""Where2comm: masks from confidence, rate vs threshold, ego sends all, masking before warping, EncodeLayer."""
import pytest
import torch
import yaml

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.models.comm_modules.where2comm import Communication, gaussian_kernel
from opencood.models.fuse_modules.fusion_input import FusionInput
from opencood.models.fuse_modules.where2comm_fuse import EncodeLayer, Where2commFusion
from opencood.tools.train_utils import create_model
from opencood.utils.errors import ConfigError
from tests.models.fuse_modules.zoo_helpers import fit_steps, tiny_batch

TINY = "opencood/hypes_yaml/demo/zoo/lidar_where2comm.yaml"
FULL = "opencood/hypes_yaml/opv2v/LiDAROnly/lidar_where2comm.yaml"


def identity_affine(b, L=5):
    return torch.eye(2, 3).expand(b, L, L, 2, 3).clone()


def test_rate_falls_as_the_threshold_rises_and_ego_sends_everything():
    torch.manual_seed(0)
    conf = torch.rand(5, 1, 16, 16)
    record_len = torch.tensor([3, 2])
    rates = []
    for thre in (0.0, 0.2, 0.5, 0.8, 1.0):
        masks, rate = Communication({"thre": thre})(conf, record_len)
        assert torch.equal(masks[[0, 3]], torch.ones(2, 1, 16, 16))  # the egos of both samples
        others = masks[[1, 2, 4]]
        assert float(rate) == pytest.approx(float(others.mean()))
        assert torch.equal(others, (conf[[1, 2, 4]] > thre).float())
        rates.append(float(rate))
    assert rates[0] == 1.0 and rates[-1] == 0.0
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[2] == pytest.approx(0.5, abs=0.05)


def test_gaussian_smoothing_and_bad_thresholds():
    k = gaussian_kernel(5, 1.0)
    assert k.shape == (5, 5) and float(k[2, 2]) == pytest.approx(1 / (2 * torch.pi))
    assert torch.allclose(k, k.T) and float(k[0, 2]) == pytest.approx(float(torch.exp(torch.tensor(-2.0))) / (2 * torch.pi))
    conf = torch.zeros(2, 1, 9, 9)
    conf[1, 0, 4, 4] = 1.0  # one confident cell spreads to its neighbours
    masks, _ = Communication({"thre": 0.05, "gaussian_smooth": {"k_size": 5, "c_sigma": 1.0}})(conf, torch.tensor([2]))
    assert int(masks[1].sum()) == 9
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match=r"thre = .* must be in \[0, 1\]"):
            Communication({"thre": bad})
    with pytest.raises(ConfigError, match="odd k_size"):
        Communication({"thre": 0.1, "gaussian_smooth": {"k_size": 4, "c_sigma": 1.0}})


@pytest.mark.parametrize("mode", ["ATTEN", "MAX", "Transformer"])
def test_features_are_masked_before_warping(mode):
    torch.manual_seed(1)
    fusion = Where2commFusion({"in_channels": 8, "communication": {"thre": 0.5}, "agg_operator": {"mode": mode}})
    fusion.eval()
    x = torch.randn(2, 8, 6, 6)
    conf = torch.zeros(2, 1, 6, 6)
    conf[1, :, :, :3] = 0.9  # the collaborator sends only its left half
    inp = FusionInput(features=x, record_len=torch.tensor([2]), affine=identity_affine(1), confidence=conf)
    out, aux = fusion(inp)
    assert out.shape == (1, 8, 6, 6) and float(aux["comm_rate"]) == pytest.approx(0.5)
    x_masked = x.clone()
    x_masked[1, :, :, 3:] = 0
    ref, _ = fusion(FusionInput(features=x_masked, record_len=torch.tensor([2]), affine=identity_affine(1),
                                confidence=torch.ones(2, 1, 6, 6)))
    assert torch.allclose(out, ref, atol=1e-6)


def test_encode_layer_parameter_count_and_missing_confidence():
    c = 64
    assert sum(p.numel() for p in EncodeLayer(c).parameters()) == 6 * c * c + 10 * c
    fusion = Where2commFusion({"in_channels": 8})
    with pytest.raises(Exception, match="no confidence maps"):
        fusion(FusionInput(features=torch.zeros(1, 8, 4, 4), record_len=torch.tensor([1]),
                           affine=identity_affine(1)))


def test_full_config_builds_with_the_reference_counts():
    model = create_model(load_yaml(FULL))
    fusion = sum(p.numel() for k, p in model.named_parameters() if k.startswith("fusion_net."))
    assert fusion == 6 * 256 * 256 + 10 * 256
    assert "fusion_net.fuse_modules.0.encode_layer.attn.in_proj_weight" in model.state_dict()
    assert "pillar_vfe.pfn_layers.0.linear.weight" in model.state_dict()


def test_tiny_batch_loss_falls_and_rate_tracks_the_threshold(make_tiny_config):
    hypes, ds, batch = tiny_batch(make_tiny_config(TINY))
    model, criterion, losses, out = fit_steps(hypes, batch, steps=4)
    assert out["cls_preds"].shape == (2, 2, 32, 64) and "comm_rate" in out
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.8 * losses[0]
    model.eval()
    rates = []
    for thre in (0.0, 0.05, 0.2, 1.0):
        model.fusion_net.communication.thre = thre
        with torch.no_grad():
            rates.append(float(model(batch["ego"])["comm_rate"]))
    assert rates[0] == 1.0 and rates[-1] == 0.0 and all(a >= b for a, b in zip(rates, rates[1:]))
    assert rates[1] > rates[2] or rates[2] > rates[3]


def test_bad_threshold_is_one_line_error_before_training(make_tiny_config, tmp_path):
    from opencood.tools import trainer
    h = yaml.safe_load(open(make_tiny_config(TINY)))
    h["model"]["args"]["where2comm"]["communication"]["thre"] = 1.5
    bad = tmp_path / "bad.yaml"
    yaml.safe_dump(h, open(bad, "w"))
    args = trainer.build_parser().parse_args(["-y", str(bad), "--log_root", str(tmp_path / "l"), "--skip_test"])
    with pytest.raises(ConfigError) as err:
        trainer.run(args)
    assert "\n" not in str(err.value) and "communication.thre = 1.5 must be in [0, 1]" in str(err.value)
    assert not list((tmp_path / "l").glob("*/net_epoch*.pth"))
