"""Realism options of the synthetic world (tilt, self-hits, TYPE F rgb, agent-YAML variants) and the OPV2V loader
reading every variant they produce."""
import glob
import os

import numpy as np
import pytest
import yaml

from opencood.data_utils.datasets import build_dataset
from opencood.data_utils.datasets.basedataset.opv2v_basedataset import read_agent_params
from opencood.data_utils.synthetic import generate
from opencood.data_utils.synthetic.generator import REALISTIC
from opencood.utils.pcd_utils import mask_ego_points, pcd_to_np

from formats_tiny_opv2v import make_hypes

SMALL = dict(preset="tiny", seed=4, scenarios=(1, 1, 0), agents=3, frames=4, cameras=False, progress=False)
EGO_BOX = ((-1.95, 2.95), (-1.1, 1.1))  # mask_ego_points' region, LiDAR frame


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    base = tmp_path_factory.mktemp("realism")
    generate(base / "real", **SMALL, **REALISTIC)
    generate(base / "plain_rgb", **SMALL, **dict(REALISTIC, pcd_rgb="U"))
    return str(base / "real"), str(base / "plain_rgb")


def _yamls(root):
    return sorted(glob.glob(os.path.join(root, "OPV2V", "*", "*", "*", "*.yaml")))


def _in_ego_box(points):
    return ((points[:, 0] >= EGO_BOX[0][0]) & (points[:, 0] <= EGO_BOX[0][1])
            & (points[:, 1] >= EGO_BOX[1][0]) & (points[:, 1] <= EGO_BOX[1][1]))


def test_roll_and_pitch(worlds):
    root = worlds[0]
    poses, angles = {}, {}
    for path in _yamls(root):
        params = yaml.safe_load(open(path))
        cav, ts = path.split(os.sep)[-2], os.path.basename(path)[:-5]
        poses[(cav, ts)] = params["lidar_pose"]
        assert params["camera0"]["cords"][3] != 0.0 or params["camera0"]["cords"][5] != 0.0
        for obj_id, v in params["vehicles"].items():
            angles.setdefault((str(obj_id), ts), v["angle"])
    rp = np.array([[p[3], p[5]] for p in poses.values()])
    assert np.all(rp != 0.0) and 0.05 < np.abs(rp).mean() < 2.0  # degrees
    # an agent's body attitude is the one other agents list for that car
    shared = [(k, a) for k, a in angles.items() if k in poses]
    assert shared
    for key, angle in shared:
        assert angle[0] == pytest.approx(poses[key][3], abs=1e-5)
        assert angle[2] == pytest.approx(poses[key][5], abs=1e-5)


def test_self_hits_and_the_ego_mask(worlds):
    root = worlds[0]
    shares = []
    for path in glob.glob(os.path.join(root, "OPV2V", "train", "*", "*", "*.pcd")):
        points = pcd_to_np(path)
        shares.append(_in_ego_box(points).mean())
        assert not _in_ego_box(mask_ego_points(points)).any()
    assert 0.015 < np.mean(shares) < 0.025, shares
    ds = build_dataset(make_hypes(os.path.join(root, "OPV2V")), train=False)
    agent = ds.base.retrieve_base_data(0)[0]
    assert _in_ego_box(agent.points).mean() > 0.01
    kept = ds.prepare_points(agent, agent.lidar_pose, np.random.default_rng(0))
    assert not _in_ego_box(kept).any() and len(kept) == int((~_in_ego_box(agent.points)).sum())


def test_float_rgb_pcd_reads_as_the_integer_one(worlds):
    real, plain = worlds
    for path in sorted(glob.glob(os.path.join(real, "OPV2V", "train", "*", "*", "*.pcd")))[:3]:
        with open(path, "rb") as f:
            head = f.read(400)
        assert b"TYPE F F F F" in head and b"e-38" in head
        other = path.replace(real, plain)
        assert b"TYPE F F F U" in open(other, "rb").read(400)
        np.testing.assert_array_equal(pcd_to_np(path), pcd_to_np(other))


def test_yaml_variants_and_the_loader(worlds):
    root = worlds[0]
    texts = {p: open(p).read() for p in _yamls(root)}
    empty = [p for p, t in texts.items() if "plan_trajectory: []" in t]
    assert 0.15 < len(empty) / len(texts) < 0.35
    assert all(yaml.safe_load(texts[p])["ego_speed"] < 0 for p in empty)
    assert any("e-05" in texts[p] for p in empty)  # exponent form
    parsed = {p: yaml.safe_load(t) for p, t in texts.items()}
    int_speed = [p for p, d in parsed.items() if any(isinstance(w[2], int) for w in d["plan_trajectory"])]
    full = [p for p, d in parsed.items() if any(len(str(v).split(".")[-1]) > 6 for v in d["lidar_pose"])]
    assert int_speed and full
    for path in texts:  # the loader's fast parser reads every variant exactly as PyYAML
        params = read_agent_params(path)
        expect = yaml.safe_load(texts[path])
        assert params["lidar_pose"] == expect["lidar_pose"] and params["ego_speed"] == expect["ego_speed"]
        assert params["plan_trajectory"] == expect["plan_trajectory"]
    ds = build_dataset(make_hypes(os.path.join(root, "OPV2V")), train=False)
    assert all(ds[idx] is not None for idx in range(len(ds)))


def test_realism_options_are_checked():
    for bad in (dict(tilt=-1), dict(self_hits=0.7), dict(pcd_rgb="X"),
                dict(pcd_rgb="F", pcd_encoding="binary_compressed")):
        with pytest.raises(ValueError):
            generate("/nonexistent/never", **dict(SMALL, **bad))
