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
EXPECTED = {
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
