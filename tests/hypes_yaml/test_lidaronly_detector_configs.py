"""Full-geometry OPV2V LiDAR-only configs of F-Cooper, early and late fusion and the standalone detectors: each
loads unchanged and builds with the parameter count derived from the spec's layer lists."""
from pathlib import Path

import pytest

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools.train_utils import create_loss, create_model

ROOT = Path(__file__).parents[2] / "opencood" / "hypes_yaml" / "opv2v" / "LiDAROnly"
# PointPillars m1 (PFN 10->64, backbone [3,5,8] x [64,128,256], deblocks to 3 x 128, shrink 3x3 384->256) +
# heads at 256 ch: the same 8,058,388 as lidar_att.yaml (max fusion and the single detector add none)
POINTPILLARS = 8_058_388
# SECOND (spec A2 layer list, OpenCOOD widths): VoxelBackBone8x 4->16->32->64->64->128 = 711,872 (27-tap sparse
# convs without bias + BN), BaseBEVBackbone [5, 5] x [128, 256] from 256 with deblocks to 2 x 256 = 4,576,768,
# heads on 512: cls 1,026 + reg 7,182 + dir 2,052
SECOND = 711_872 + 4_576_768 + 1_026 + 7_182 + 2_052


def _bottleneck(c_in, planes):
    out = 4 * planes
    down = c_in * out + 2 * out if c_in != out else 0  # first block of a stage: stride 2 -> 1x1 projection
    return c_in * planes + 2 * planes + 9 * planes * planes + 2 * planes + planes * out + 2 * out + down


def _pixor(in_channels=21, layer_nums=(3, 6, 6, 3), planes=(24, 48, 64, 96)):
    """PIXOR by its layer list: stem 2 x conv3x3 32 + BN, Bottleneck stages, FPN (1x1 laterals 196 / 128 / 96,
    3x3 deconvs 196->128->96), header 4 x conv3x3 96 + BN, cls (1) / reg (6) conv3x3 with bias."""
    total, c_in = 9 * in_channels * 32 + 64 + 9 * 32 * 32 + 64, 32
    for n, p in zip(layer_nums, planes):
        total += _bottleneck(c_in, p) + (n - 1) * _bottleneck(4 * p, p)
        c_in = 4 * p
    total += 384 * 196 + 196 + 256 * 128 + 128 + 192 * 96 + 96 + 196 * 128 * 9 + 128 + 128 * 96 * 9 + 96
    return total + 4 * (9 * 96 * 96 + 192) + 9 * 96 + 1 + 9 * 96 * 6 + 6


EXPECTED = {
    "lidar_pixor": ("pixor", _pixor()),  # 20 z slices of 0.2 m + intensity = 21 input channels
    "lidar_second": ("second", SECOND),
    "lidar_voxelnet": ("voxel_net", 6_287_184),  # hand count in tests/models/test_voxel_net.py
    "lidar_fcooper": ("heter_model_baseline", POINTPILLARS),
    "lidar_early": ("point_pillar", POINTPILLARS),
    "lidar_late": ("point_pillar", POINTPILLARS),
}


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_config_builds_with_expected_parameters(stem):
    hypes = load_yaml(str(ROOT / f"{stem}.yaml"))
    assert hypes["model"]["core_method"] == EXPECTED[stem][0]
    model = create_model(hypes)
    create_loss(hypes)
    assert model.trainable_parameter_count() == EXPECTED[stem][1]
