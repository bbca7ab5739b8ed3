"""The V2XSet / V2X-Sim / V2V4Real LiDAR configs (full geometry and the tiny CPU ones) load and build."""
import pytest

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools.train_utils import create_loss, create_model

# (config, fusion.dataset, cav_lidar_range, anchor grid W x H); the full ones are PointPillars + AttFuse
# (8,058,388 parameters, as opv2v/LiDAROnly/lidar_att.yaml)
FULL = [("v2xset/LiDAROnly/lidar_attfuse.yaml", "v2xset", [-102.4, -102.4, -3, 102.4, 102.4, 1], (512, 512)),
        ("v2xsim/LiDAROnly/lidar_attfuse.yaml", "v2xsim", [-32, -32, -3, 32, 32, 1], (160, 160)),
        ("v2v4real/LiDAROnly/lidar_attfuse.yaml", "v2v4real", [-140.8, -40, -3, 140.8, 40, 1], (704, 200))]
TINY = ["demo/datasets/v2xset_lidar_att.yaml", "demo/datasets/v2xsim_lidar_att.yaml",
        "demo/datasets/v2v4real_lidar_att.yaml"]


def _params(hypes):
    model = create_model(hypes)
    create_loss(hypes)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("rel,dataset,lidar_range,grid", FULL, ids=[f[1] for f in FULL])
def test_full_config(rel, dataset, lidar_range, grid):
    hypes = load_yaml("opencood/hypes_yaml/" + rel)
    assert hypes["fusion"]["dataset"] == dataset
    anchor = hypes["postprocess"]["anchor_args"]
    assert anchor["cav_lidar_range"] == lidar_range == hypes["preprocess"]["cav_lidar_range"]
    assert hypes["postprocess"]["gt_range"] == lidar_range == hypes["model"]["args"]["lidar_range"]
    assert (anchor["W"], anchor["H"]) == grid
    assert _params(hypes) == 8_058_388


@pytest.mark.parametrize("rel", TINY, ids=lambda r: r.split("/")[-1].split("_")[0])
def test_tiny_config(rel):
    hypes = load_yaml("opencood/hypes_yaml/" + rel)
    zoo = load_yaml("opencood/hypes_yaml/demo/zoo/lidar_att.yaml")
    assert hypes["fusion"]["dataset"] == rel.split("/")[-1].split("_")[0]
    assert _params(hypes) == _params(zoo)
