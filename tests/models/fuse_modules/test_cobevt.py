"""CoBEVT: window/grid partition, agent masking, config errors, and the zoo config end to end."""
import pytest
import torch

from opencood.models.fuse_modules.cobevt_fuse import CoBEVT
from opencood.models.fuse_modules.fusion_input import FusionInput
from opencood.models.sub_modules.swap_fusion_modules import relative_position_index
from opencood.utils.errors import ConfigError
from tests.models.fuse_modules.zoo_cases import check_forward_backward, loss_falls, tiny_batch, train_and_infer

SECTION = {"input_dim": 16, "mlp_dim": 16, "agent_size": 5, "window_size": 2, "dim_head": 8, "drop_out": 0.0,
           "depth": 1}


def _identity(b, l):
    affine = torch.zeros(b, l, l, 2, 3)
    affine[..., 0, 0] = affine[..., 1, 1] = 1.0
    return affine


def test_relative_position_index_is_a_bijection_of_offsets():
    idx = relative_position_index(2, 2)  # 8 tokens
    assert idx.shape == (8, 8) and int(idx.max()) < 3 * 3 * 3
    assert idx[0, 0] == idx[5, 5]  # same (0, 0, 0) offset
    assert len(torch.unique(idx)) == 27  # every (agent, row, col) offset appears


def test_absent_agents_and_other_samples_do_not_leak():
    torch.manual_seed(0)
    net = CoBEVT(SECTION, channels=16).eval()
    x = torch.randn(4, 16, 4, 8)
    alone, _ = net(FusionInput(features=x[:1], record_len=torch.tensor([1]), affine=_identity(1, 5)))
    both, _ = net(FusionInput(features=x, record_len=torch.tensor([1, 3]), affine=_identity(2, 5)))
    assert torch.allclose(alone[0], both[0], atol=1e-5)
    # a collaborator moves the ego result far away: window (rows 0-1, cols 0-1) then grid (strided) attention
    x2 = x.clone()
    x2[2, :, 0, 0] += 5.0 * torch.randn(16)  # not a constant shift: LayerNorm would remove that
    moved, _ = net(FusionInput(features=x2, record_len=torch.tensor([1, 3]), affine=_identity(2, 5)))
    assert not torch.allclose(moved[1, :, 3, 5], both[1, :, 3, 5], atol=1e-4)


def test_bad_sections_are_one_line_errors():
    with pytest.raises(ConfigError, match="missing key 'model.args.cobevt'"):
        CoBEVT(None, channels=16)
    with pytest.raises(ConfigError, match="unknown key 'model.args.cobevt.window'"):
        CoBEVT(dict(SECTION, window=3))
    net = CoBEVT(dict(SECTION, window_size=3))
    with pytest.raises(ConfigError, match="window_size 3 does not divide the 4 x 8"):
        net(FusionInput(features=torch.randn(1, 16, 4, 8), record_len=torch.tensor([1]), affine=_identity(1, 5)))


def test_zoo_cobevt_forward_backward_and_loss_falls(make_tiny_config):
    hypes, model, criterion, batch = tiny_batch(make_tiny_config, "lidar_cobevt")
    check_forward_backward(model, criterion, batch)
    loss_falls(hypes, model, criterion, batch, steps=3, factor=0.5)


@pytest.mark.slow
def test_zoo_cobevt_train_and_infer_cli(make_tiny_config, tmp_path):
    train_and_infer(make_tiny_config, "lidar_cobevt", tmp_path)
