"""Pose noise (opencood.utils.pose_utils)."""
import numpy as np
import pytest

from opencood.data_utils.datasets.basedataset.agent_frame import AgentFrame
from opencood.utils.errors import ConfigError
from opencood.utils.pose_utils import add_noise_data_dict, generate_noise, generate_noise_laplace
from opencood.utils.transformation_utils import x_to_world

POSE = [1.0, 2.0, 1.9, 0.5, 30.0, -0.5]


def data():
    return [AgentFrame(agent_id=c, is_ego=c == "1", lidar_pose=np.array(POSE), lidar_pose_clean=np.array(POSE))
            for c in ("1", "2")]


def test_no_noise_keeps_pose_and_records_clean():
    d = add_noise_data_dict(data(), None)
    for agent in d:
        assert agent.lidar_pose.tolist() == POSE and agent.lidar_pose_clean.tolist() == POSE
    d = add_noise_data_dict(data(), {"add_noise": False, "args": {"pos_std": 5, "rot_std": 5}})
    assert d[0].lidar_pose.tolist() == POSE
    np.testing.assert_array_equal(d[0].T_world_lidar, x_to_world(POSE))


@pytest.mark.parametrize("laplace", [False, True])
def test_noise_only_on_x_y_yaw_for_every_agent(laplace):
    setting = {"add_noise": True, "args": {"pos_std": 0.5, "rot_std": 2.0, "pos_mean": 0, "rot_mean": 0,
                                           "laplace": laplace}}
    d = add_noise_data_dict(data(), setting, np.random.default_rng(0))
    for agent in d:
        delta = np.subtract(agent.lidar_pose, POSE)
        assert np.all(delta[[2, 3, 5]] == 0) and np.all(delta[[0, 1, 4]] != 0)
        assert agent.lidar_pose_clean.tolist() == POSE
    assert d[0].lidar_pose.tolist() != d[1].lidar_pose.tolist()
    # the draws: agent by agent, in list order, from the one generator
    rng = np.random.default_rng(0)
    draw = generate_noise_laplace if laplace else generate_noise
    for agent in d:
        np.testing.assert_array_equal(agent.lidar_pose, np.array(POSE) + draw(0.5, 2.0, 0, 0, rng=rng))
    np.testing.assert_array_equal(d[1].T_world_lidar, x_to_world(d[1].lidar_pose))


def test_noise_statistics():
    noise = np.stack([generate_noise(0.2, 1.0, 0.1, -0.5, np.random.default_rng(i)) for i in range(4000)])
    assert noise[:, 0].mean() == pytest.approx(0.1, abs=0.02) and noise[:, 0].std() == pytest.approx(0.2, abs=0.02)
    assert noise[:, 4].mean() == pytest.approx(-0.5, abs=0.06) and noise[:, 4].std() == pytest.approx(1.0, abs=0.06)


def test_missing_std_is_a_config_error():
    with pytest.raises(ConfigError, match="noise_setting.args.rot_std"):
        add_noise_data_dict(data(), {"add_noise": True, "args": {"pos_std": 0.2}})


@pytest.mark.parametrize("laplace", [False, True])
def test_v2v4real_style_noises_collaborators_only_on_x_y_z_yaw(laplace):
    """V2V4Real's own model: the ego stays clean; x, y, z and (of the rotation) yaw only."""
    setting = {"add_noise": True, "args": {"pos_std": 0.5, "rot_std": 2.0, "pos_mean": 0.1, "rot_mean": -0.3,
                                           "laplace": laplace, "style": "v2v4real"}}
    d = add_noise_data_dict(data(), setting, np.random.default_rng(3))
    assert d[0].is_ego and d[0].lidar_pose.tolist() == POSE
    delta = np.subtract(d[1].lidar_pose, POSE)
    assert np.all(delta[[3, 5]] == 0) and np.all(delta[[0, 1, 2, 4]] != 0)
    assert d[1].lidar_pose_clean.tolist() == POSE
    rng = np.random.default_rng(3)  # the collaborator's draws: x/y, yaw, then z from the x/y distribution
    expected = (generate_noise_laplace if laplace else generate_noise)(0.5, 2.0, 0.1, -0.3, rng=rng)
    expected[2] = (rng.laplace if laplace else rng.normal)(0.1, 0.5)
    np.testing.assert_array_equal(d[1].lidar_pose, np.array(POSE) + expected)


def test_v2v4real_style_z_statistics():
    setting = {"add_noise": True, "args": {"pos_std": 0.3, "rot_std": 1.0, "style": "v2v4real"}}
    rng = np.random.default_rng(0)
    z = [add_noise_data_dict(data(), setting, rng)[1].lidar_pose[2] - POSE[2] for _ in range(3000)]
    assert np.mean(z) == pytest.approx(0.0, abs=0.03) and np.std(z) == pytest.approx(0.3, abs=0.03)


def test_unknown_noise_style_is_a_config_error():
    with pytest.raises(ConfigError, match="style"):
        add_noise_data_dict(data(), {"add_noise": True, "args": {"pos_std": 0.2, "rot_std": 0.2, "style": "carla"}})
