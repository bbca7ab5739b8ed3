"""The realism options that apply to any LiDAR format (``tilt``, ``self_hits``) in the DAIR-V2X-C and V2X-Real
writers: tilted vehicle poses reach the loaders through each format's calibration / YAML, ~2 % of a vehicle's
cloud returns from its own car (what ``mask_ego_points`` removes), road-side units stay level and self-hit free;
with both off the output is that of the plain writer."""
import datetime
import os

import numpy as np
import pytest
import yaml

from opencood.data_utils.datasets.basedataset.dairv2x_basedataset import DAIRV2XBaseDataset
from opencood.data_utils.datasets.basedataset.v2xreal_basedataset import V2XRealBaseDataset
from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
from opencood.data_utils.synthetic.formats import dairv2x as W
from opencood.data_utils.synthetic.formats import scene as S
from opencood.data_utils.synthetic.generator import REALISTIC
from opencood.tools import make_synthetic
from opencood.utils.pcd_utils import mask_ego_points

WORLD = dict(preset="tiny", seed=2, scenarios=(1, 1, 0), frames=2, progress=False)


def _ego_share(points):
    return 1.0 - len(mask_ego_points(points)) / len(points)


@pytest.fixture(scope="module")
def dair(tmp_path_factory):
    base = tmp_path_factory.mktemp("dair_realism")
    SYNTHETIC_FORMATS.get("dairv2x")(str(base / "real"), **WORLD, **REALISTIC)
    SYNTHETIC_FORMATS.get("dairv2x")(str(base / "plain"), **WORLD)
    return base


def _dair_dataset(root):
    d = os.path.join(root, W.DATA_DIR)
    return DAIRV2XBaseDataset({"data_dir": d, "root_dir": os.path.join(d, "train.json"),
                               "validate_dir": os.path.join(d, "val.json"), "train_params": {"max_cav": 2},
                               "fusion": {"dataset": "dairv2x"}}, train=False)


def test_dair_vehicle_pose_tilts_through_the_calibration_chain(dair):
    real, plain = _dair_dataset(str(dair / "real")), _dair_dataset(str(dair / "plain"))
    _, _, seed = S.scenario_names(2, (1, 1, 0), datetime.date(2021, 1, 1), "%Y%m%d_%H%M%S")[1]
    scene = S.build_scene(seed, 1, 1, 2, tilt=REALISTIC["tilt"])
    for frame in range(2):
        vehicle, infra = real.retrieve_base_data(frame)
        np.testing.assert_allclose(vehicle.lidar_pose_clean, scene.world.lidar_pose(scene.world.agent_ids[0], frame),
                                   atol=1e-9)
        assert abs(vehicle.lidar_pose_clean[3]) > 1e-3 and abs(vehicle.lidar_pose_clean[5]) > 1e-3  # roll, pitch
        assert infra.lidar_pose_clean[3] == pytest.approx(0, abs=1e-9)
        assert infra.lidar_pose_clean[5] == pytest.approx(0, abs=1e-9)
        flat = plain.retrieve_base_data(frame)[0]
        assert flat.lidar_pose_clean[3] == pytest.approx(0, abs=1e-9)
        assert flat.lidar_pose_clean[4] == pytest.approx(vehicle.lidar_pose_clean[4])  # same yaw; the mount
        np.testing.assert_allclose(flat.lidar_pose_clean[:2], vehicle.lidar_pose_clean[:2], atol=0.05)  # tilts
        # self-hits: ~2 % of the vehicle's cloud lies in the ego box (none without the option); the RSU adds none
        # (its share there is the ground below its pole, as without the option)
        assert _ego_share(vehicle.points) == pytest.approx(REALISTIC["self_hits"], abs=0.006)
        assert _ego_share(flat.points) == 0.0
        assert _ego_share(infra.points) == pytest.approx(_ego_share(plain.retrieve_base_data(frame)[1].points),
                                                         abs=0.003)


@pytest.fixture(scope="module")
def v2xreal(tmp_path_factory):
    base = tmp_path_factory.mktemp("v2xreal_realism")
    SYNTHETIC_FORMATS.get("v2xreal")(str(base), **WORLD, tilt=1.0, self_hits=0.03)
    return str(base / "v2xreal")


def test_v2xreal_yamls_carry_roll_and_pitch_and_clouds_self_hits(v2xreal):
    scen = os.path.join(v2xreal, "validate", os.listdir(os.path.join(v2xreal, "validate"))[0])
    for agent in ("1", "2", "-1", "-2"):
        with open(os.path.join(scen, agent, "000002.yaml")) as f:
            y = yaml.safe_load(f)
        pts = np.fromfile(os.path.join(scen, agent, "000002.bin"), dtype=np.float32).reshape(-1, 4)
        roll, pitch = y["lidar_pose"][3], y["lidar_pose"][5]
        if agent.startswith("-"):  # road-side units: level, no car of their own (the share is the ground below)
            assert roll == 0.0 and pitch == 0.0
        else:
            assert abs(roll) > 1e-3 and abs(pitch) > 1e-3
            assert _ego_share(pts) == pytest.approx(0.03, abs=0.008)
        cars = [v for v in y["vehicles"].values() if v["obj_type"] != "Pedestrian"]
        assert cars and all(abs(v["angle"][0]) > 0 or abs(v["angle"][2]) > 0 for v in cars)
    ds = V2XRealBaseDataset({"root_dir": os.path.join(v2xreal, "train"),
                             "validate_dir": os.path.join(v2xreal, "validate"),
                             "train_params": {"max_cav": 4}, "dataset_mode": "vc"}, train=False)
    agents = ds.retrieve_base_data(0)
    assert abs(agents[0].lidar_pose_clean[3]) > 1e-3 and agents[0].objects.shape[0] > 0


def test_make_synthetic_realistic_with_another_format(tmp_path, capsys):
    assert make_synthetic.main(["--root", str(tmp_path), "--format", "dairv2x", "--preset", "tiny", "--realistic",
                                "--scenarios", "1", "0", "1", "--frames", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    marker = os.path.join(str(tmp_path), "my_dair_v2x", S.MARKER)
    with open(marker) as f:
        opts = yaml.safe_load(f)["options"]
    assert opts["tilt"] == REALISTIC["tilt"] and opts["self_hits"] == REALISTIC["self_hits"]
