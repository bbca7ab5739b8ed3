"""SECOND encoder: MeanVFE -> VoxelBackBone8x (spconv) -> HeightCompression, on a tiny grid."""
import pytest
import torch

from opencood.models.sub_modules.second_encoder import SECOND, HeightCompression, MeanVFE
from opencood.models.sub_modules.sparse_backbone_3d import VoxelBackBone8x
from opencood.utils.errors import ConfigError
from opencood.utils.registry import ENCODERS
from opencood.utils.spconv_utils import spconv_has_cuda
from tests.models.module_state import attribute_snapshot


def tiny_args(**spconv):
    # x 12.8 m, y 6.4 m, z 4 m at 0.1 m -> grid (128, 64, 40), sparse shape (41, 64, 128)
    return {"voxel_size": [0.1, 0.1, 0.1], "lidar_range": [0.0, 0.0, -3.0, 12.8, 6.4, 1.0],
            "mean_vfe": {"num_point_features": 4},
            "spconv": {"num_features_in": 4, "num_features_out": 64, **spconv},
            "map2bev": {"feature_num": 128}}


def random_voxels(num, agents=(0,), seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    agent = torch.tensor(agents)[torch.randint(0, len(agents), (num,), generator=g)]
    coords = torch.stack([agent, torch.randint(0, 41, (num,), generator=g), torch.randint(0, 64, (num,), generator=g),
                          torch.randint(0, 128, (num,), generator=g)], dim=1)
    coords = torch.unique(coords, dim=0).int()
    v = coords.shape[0]
    num_points = torch.randint(1, 6, (v,), generator=g)
    feats = torch.randn(v, 5, 4, generator=g)
    feats[torch.arange(5).view(1, 5) >= num_points.view(-1, 1)] = 0.0  # zero-padded slots
    return {"voxel_features": feats.to(device), "voxel_coords": coords.to(device),
            "voxel_num_points": num_points.to(device)}


def test_mean_vfe_ignores_padding():
    feats = torch.tensor([[[1.0, 2, 3, 4], [3.0, 4, 5, 6], [0, 0, 0, 0]]])
    out = MeanVFE(4)(feats, torch.tensor([2]))
    assert torch.allclose(out, torch.tensor([[2.0, 3, 4, 5]]))


def test_height_compression_folds_z_into_channels():
    vol = torch.arange(2 * 3 * 2 * 4 * 5, dtype=torch.float32).view(2, 3, 2, 4, 5)
    out = HeightCompression()(vol)
    assert out.shape == (2, 6, 4, 5)
    assert torch.equal(out[:, 1], vol[:, 0, 1]) and torch.equal(out[:, 2], vol[:, 1, 0])


def test_output_shape_of_opv2v_grid():
    assert VoxelBackBone8x.output_shape((41, 1024, 2048)) == (2, 128, 256)


def test_second_forward_backward_cpu():
    enc = ENCODERS.get("second")(tiny_args())
    inputs = random_voxels(400, agents=(0,))
    inputs["batch_size"] = 2  # agent 1 has no voxels
    before = attribute_snapshot(enc)
    out, aux = enc({"inputs_m3": inputs}, "m3")
    assert out.shape == (2, 128, 8, 16) and aux == {}
    assert attribute_snapshot(enc) == before  # nothing stored in forward
    assert out[0].abs().sum() > 0
    assert torch.count_nonzero(out[1]) == 0
    out.sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert enc.spconv_block.conv_input[0].weight.grad.abs().sum() > 0


def test_second_batch_size_from_coords():
    enc = SECOND(tiny_args())
    out, _ = enc({"inputs_m3": random_voxels(200, agents=(0, 1, 2), seed=1)}, "m3")
    assert out.shape[0] == 3


def test_second_config_checks():
    with pytest.warns(UserWarning, match="num_features_in"):
        enc = SECOND(tiny_args(num_features_in=64))  # HEAL configs say 64; the VFE gives 4
    assert enc.spconv_block.conv_input[0].weight.shape[-1] == 4
    bad = tiny_args()
    bad["map2bev"]["feature_num"] = 256
    with pytest.raises(ConfigError, match="feature_num"):
        SECOND(bad)
    with pytest.raises(ConfigError, match="voxel_size"):
        SECOND({"lidar_range": [0, 0, 0, 1, 1, 1], "spconv": {}})


@pytest.mark.gpu
def test_second_forward_backward_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if not spconv_has_cuda():
        pytest.skip("spconv is the CPU-only build (install spconv-cu12x)")
    enc = SECOND(tiny_args()).cuda()
    out, _ = enc({"inputs_m3": random_voxels(400, agents=(0, 1), device="cuda")}, "m3")
    assert out.shape == (2, 128, 8, 16)
    out.sum().backward()
    assert enc.spconv_block.conv_input[0].weight.grad.abs().sum() > 0
