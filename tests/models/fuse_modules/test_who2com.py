"""Who2com: the decode of [ego; attended], config errors, and the zoo config end to end."""
import pytest
import torch

from opencood.models.fuse_modules.att_fuse import AttFusion
from opencood.models.fuse_modules.fusion_input import FusionInput
from opencood.models.fuse_modules.who2com_fuse import Who2comFusion
from opencood.utils.errors import ConfigError
from tests.models.fuse_modules.zoo_cases import check_forward_backward, loss_falls, tiny_batch, train_and_infer


def test_output_is_the_decode_of_ego_and_attended():
    torch.manual_seed(0)
    net = Who2comFusion({"feat_dim": 8})
    x = torch.randn(3, 8, 4, 8)
    affine = torch.zeros(2, 5, 5, 2, 3)
    affine[..., 0, 0] = affine[..., 1, 1] = 1.0
    inp = FusionInput(features=x, record_len=torch.tensor([2, 1]), affine=affine)
    out, aux = net(inp)
    attended, _ = AttFusion(8)(inp)
    ref = net.decode_layer(torch.cat([x[[0, 2]], attended], dim=1))
    assert aux == {} and out.shape == (2, 8, 4, 8) and torch.allclose(out, ref, atol=1e-6)
    assert sum(p.numel() for p in net.parameters()) == 16 * 8 * 9 + 8


def test_bad_sections_are_one_line_errors():
    with pytest.raises(ConfigError, match="missing key 'feat_dim'"):
        Who2comFusion(None)
    with pytest.raises(ConfigError, match="unknown key 'model.args.who2com.feat_dims'"):
        Who2comFusion({"feat_dims": 8})


def test_zoo_who2com_forward_backward_and_loss_falls(make_tiny_config):
    hypes, model, criterion, batch = tiny_batch(make_tiny_config, "lidar_who2com")
    check_forward_backward(model, criterion, batch)
    loss_falls(hypes, model, criterion, batch, steps=3, factor=0.5)


@pytest.mark.slow
def test_zoo_who2com_train_and_infer_cli(make_tiny_config, tmp_path):
    train_and_infer(make_tiny_config, "lidar_who2com", tmp_path)
