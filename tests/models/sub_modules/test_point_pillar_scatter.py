import pytest
import torch

from opencood.models.sub_modules.point_pillar_scatter import PointPillarScatter
from opencood.utils.errors import ConfigError


def test_scatter_matches_brute_force():
    nx, ny, c, n = 7, 5, 3, 3
    g = torch.Generator().manual_seed(1)
    cells = torch.randperm(n * ny * nx, generator=g)[:20]
    agent, rest = cells // (ny * nx), cells % (ny * nx)
    coords = torch.stack([agent, torch.zeros_like(agent), rest // nx, rest % nx], 1).int()
    feats = torch.randn(20, c, generator=g)
    scatter = PointPillarScatter({"num_features": c, "grid_size": [nx, ny, 1]})
    out = scatter({"pillar_features": feats, "voxel_coords": coords, "batch_size": n})["spatial_features"]
    ref = torch.zeros(n, c, ny, nx)
    for i in range(20):
        b, _, y, x = coords[i].tolist()
        ref[b, :, y, x] = feats[i]
    assert out.shape == (n, c, ny, nx)
    assert torch.equal(out, ref)


def test_batch_size_keeps_trailing_empty_agent():
    scatter = PointPillarScatter({"num_features": 2, "grid_size": [4, 3, 1]})
    d = {"pillar_features": torch.ones(1, 2), "voxel_coords": torch.tensor([[0, 0, 1, 2]]), "batch_size": 2}
    assert scatter(d)["spatial_features"].shape == (2, 2, 3, 4)


def test_rejects_3d_grid():
    with pytest.raises(ConfigError, match="grid_size"):
        PointPillarScatter({"num_features": 2, "grid_size": [4, 3, 2]})
