import torch

from opencood.models.sub_modules.pillar_vfe import PillarVFE

CFG = {"use_norm": True, "with_distance": False, "use_absolute_xyz": True, "num_filters": [64]}
RANGE = [-12.8, -6.4, -3.0, 12.8, 6.4, 1.0]


def _voxels(m=6, p=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.rand(m, p, 4, generator=g)
    num = torch.randint(1, p + 1, (m,), generator=g)
    coords = torch.stack([torch.zeros(m, dtype=torch.long), torch.zeros(m, dtype=torch.long),
                          torch.randint(0, 32, (m,), generator=g), torch.randint(0, 64, (m,), generator=g)], 1)
    for i in range(m):
        feats[i, num[i]:] = 0
    return {"voxel_features": feats, "voxel_num_points": num, "voxel_coords": coords}


def test_param_count_and_shape():
    vfe = PillarVFE(CFG, 4, [0.4, 0.4, 4.0], RANGE)
    assert sum(p.numel() for p in vfe.parameters()) == 10 * 64 + 2 * 64
    out = vfe(_voxels())["pillar_features"]
    assert out.shape == (6, 64)
    assert "pfn_layers.0.linear.weight" in vfe.state_dict()
    assert "pfn_layers.0.norm.running_mean" in vfe.state_dict()


def test_padded_points_are_ignored():
    vfe = PillarVFE(CFG, 4, [0.4, 0.4, 4.0], RANGE).eval()
    d = _voxels()
    ref = vfe(dict(d))["pillar_features"]
    noisy = dict(d)
    feats = d["voxel_features"].clone()
    pad = torch.arange(feats.shape[1]).view(1, -1) >= d["voxel_num_points"].view(-1, 1)
    feats[pad] = 5.0
    noisy["voxel_features"] = feats
    assert torch.allclose(vfe(noisy)["pillar_features"], ref, atol=1e-6)


def test_decoration_matches_hand_computation():
    # A linear identity-like PFN without norm exposes the decorated features through the max.
    cfg = dict(CFG, use_norm=False, num_filters=[10])
    vfe = PillarVFE(cfg, 4, [0.4, 0.4, 4.0], RANGE)
    with torch.no_grad():
        vfe.pfn_layers[0].linear.weight.copy_(torch.eye(10))
        vfe.pfn_layers[0].linear.bias.zero_()
    # one pillar at cell (y=2, x=3), one point at (x, y, z) = (-11.5, -5.3, 0.5)
    feats = torch.zeros(1, 4, 4)
    feats[0, 0] = torch.tensor([-11.5, -5.3, 0.5, 0.7])
    d = {"voxel_features": feats, "voxel_num_points": torch.tensor([1]),
         "voxel_coords": torch.tensor([[0, 0, 2, 3]])}
    out = vfe(d)["pillar_features"][0]
    centre = torch.tensor([-12.8 + 3.5 * 0.4, -6.4 + 2.5 * 0.4, -3.0 + 2.0])
    expect_centre_offset = feats[0, 0, :3] - centre
    # ReLU keeps only positive entries
    expect = torch.cat([feats[0, 0], torch.zeros(3), expect_centre_offset]).clamp(min=0)
    assert torch.allclose(out, expect, atol=1e-5)
