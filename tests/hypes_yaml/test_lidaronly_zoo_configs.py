"""The zoo's full-geometry OPV2V LiDAR-only configs (reference names and keys) load unchanged and build."""
from pathlib import Path

import pytest

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools.train_utils import create_loss, create_model

ROOT = Path(__file__).parents[2] / "opencood" / "hypes_yaml" / "opv2v" / "LiDAROnly"
# file -> (fusion_net class, fusion_net parameters derived from the spec's layer list at C = 256)
EXPECTED = {
    # msg_cnn 512*256*9+256 + ConvGRU gates 768*512*9+512 and candidate 768*256*9+256 + mlp 256*256+256
    "lidar_v2vnet": ("V2VNetFusion", 1_179_904 + 3_539_456 + 1_769_728 + 65_792),
    # 3 blocks x [2 x attention (qkv 256*768 + out 256*256 + bias table 7*7*9 x 8 heads) + 2 x FFN (2 x 65,792)
    # + 4 LN] + head LN 512 + Linear 65,792
    "lidar_cobevt": ("CoBEVT", 3 * (2 * (196_608 + 65_536 + 3_528) + 2 * 131_584 + 4 * 512) + 512 + 65_792),
    # decode Conv3x3(512 -> 256) + bias
    "lidar_who2com": ("Who2comFusion", 512 * 256 * 9 + 256),
}


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_lidaronly_config_builds(stem):
    hypes = load_yaml(str(ROOT / f"{stem}.yaml"))
    model = create_model(hypes)
    create_loss(hypes)
    cls_name, count = EXPECTED[stem]
    assert type(model.fusion_net).__name__ == cls_name
    assert sum(p.numel() for p in model.fusion_net.parameters()) == count


def test_lidar_v2xvit_builds_at_256_channels():
    """OpenCOOD's point_pillar_v2xvit geometry: 256 channels at 0.8 m; every window size divides 64 x 128."""
    model = create_model(load_yaml(str(ROOT / "lidar_v2xvit.yaml")))
    encoder = model.fusion_net.fusion_net.encoder
    assert encoder.prior_feed.in_features == 259
    assert model.feature.size == (64, 128) and all(64 % w == 0 and 128 % w == 0 for w in model.fusion_net.window_sizes)
