"""Pose noise (opencood.utils.pose_utils)."""
from collections import OrderedDict

import numpy as np
import pytest

from opencood.utils.errors import ConfigError
from opencood.utils.pose_utils import add_noise_data_dict, generate_noise

POSE = [1.0, 2.0, 1.9, 0.5, 30.0, -0.5]


def data():
    return OrderedDict((c, {"params": {"lidar_pose": list(POSE)}}) for c in ("1", "2"))


def test_no_noise_keeps_pose_and_records_clean():
    d = add_noise_data_dict(data(), None)
    for cav in d.values():
        assert cav["params"]["lidar_pose"] == POSE and cav["params"]["lidar_pose_clean"] == POSE
    d = add_noise_data_dict(data(), {"add_noise": False, "args": {"pos_std": 5, "rot_std": 5}})
    assert d["1"]["params"]["lidar_pose"] == POSE


@pytest.mark.parametrize("laplace", [False, True])
def test_noise_only_on_x_y_yaw_for_every_agent(laplace):
    setting = {"add_noise": True, "args": {"pos_std": 0.5, "rot_std": 2.0, "pos_mean": 0, "rot_mean": 0,
                                           "laplace": laplace}}
    d = add_noise_data_dict(data(), setting, np.random.default_rng(0))
    for cav in d.values():
        delta = np.subtract(cav["params"]["lidar_pose"], POSE)
        assert np.all(delta[[2, 3, 5]] == 0) and np.all(delta[[0, 1, 4]] != 0)
        assert cav["params"]["lidar_pose_clean"] == POSE
    assert d["1"]["params"]["lidar_pose"] != d["2"]["params"]["lidar_pose"]


def test_noise_statistics():
    noise = np.stack([generate_noise(0.2, 1.0, 0.1, -0.5, np.random.default_rng(i)) for i in range(4000)])
    assert noise[:, 0].mean() == pytest.approx(0.1, abs=0.02) and noise[:, 0].std() == pytest.approx(0.2, abs=0.02)
    assert noise[:, 4].mean() == pytest.approx(-0.5, abs=0.06) and noise[:, 4].std() == pytest.approx(1.0, abs=0.06)


def test_missing_std_is_a_config_error():
    with pytest.raises(ConfigError, match="noise_setting.args.rot_std"):
        add_noise_data_dict(data(), {"add_noise": True, "args": {"pos_std": 0.2}})
