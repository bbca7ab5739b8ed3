import filecmp
import json
import os
import re

import cv2
import numpy as np
import pytest
import yaml

from opencood.data_utils.synthetic import generate
from opencood.data_utils.synthetic.generator import MARKER, TRUCK_MIN_LENGTH
from opencood.tools import make_synthetic
from opencood.utils.errors import DataError
from opencood.utils.pcd_utils import pcd_to_np
from opencood.utils.transformation_utils import x_to_world

SPLITS = ("train", "validate", "test")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "data"
    summary = generate(root, preset="tiny", seed=0, progress=False)
    return root, summary


def _scenarios(root):
    for split in SPLITS:
        base = root / "OPV2V" / split
        for scen in sorted(os.listdir(base)):
            yield split, scen, base / scen


def _agents(scen_dir):
    return sorted(d for d in os.listdir(scen_dir) if (scen_dir / d).is_dir())


def _frames(root):
    """Yield (split, scenario, cav id, timestamp, yaml dict, points (N, 4))."""
    for split, scen, scen_dir in _scenarios(root):
        for cav in _agents(scen_dir):
            for name in sorted(os.listdir(scen_dir / cav)):
                if name.endswith(".yaml"):
                    ts = name[:-5]
                    params = yaml.load((scen_dir / cav / name).read_text(), Loader=_LOADER)
                    yield split, scen, cav, ts, params, pcd_to_np(scen_dir / cav / f"{ts}.pcd")


def test_layout(tiny):
    root, summary = tiny
    assert (root / MARKER).exists()
    assert {s: len(v) for s, v in summary["scenarios"].items()} == {"train": 2, "validate": 1, "test": 1}
    for split, scen, scen_dir in _scenarios(root):
        assert re.fullmatch(r"\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}", scen)
        assert (scen_dir / "data_protocol.yaml").is_file()
        agents = _agents(scen_dir)
        assert 2 <= len(agents) <= 3 and all(a.isdigit() for a in agents)
        stamps = None
        for cav in agents:
            names = set(os.listdir(scen_dir / cav))
            ts = sorted(n[:-5] for n in names if n.endswith(".yaml"))
            assert ts == ["000000", "000002", "000004"]
            stamps = stamps or ts
            assert ts == stamps  # every agent has the same timestamps
            hetero = root / "OPV2V_Hetero" / split / scen / cav
            extra = root / "OPV2V" / "additional" / split / scen / cav
            for t in ts:
                assert {f"{t}.pcd"} | {f"{t}_camera{i}.png" for i in range(4)} <= names
                for suffix in ["_32.pcd", "_16.pcd"] + [f"_depth{i}.png" for i in range(4)]:
                    assert (hetero / f"{t}{suffix}").is_file()
                assert (extra / f"{t}_bev_visibility.png").is_file()


def test_yaml_contents(tiny, frames):
    root, _ = tiny
    other_cav_seen = False
    trucks = 0
    for _, scen, cav, ts, params, _ in frames:
        for key in ("lidar_pose", "true_ego_pos", "predicted_ego_pos"):
            assert len(params[key]) == 6
        assert isinstance(params["ego_speed"], float)
        assert all(len(p) == 3 for p in params["plan_trajectory"])
        # LiDAR 1.9 m above the car's ground contact point
        assert params["lidar_pose"][2] == pytest.approx(params["true_ego_pos"][2] + 1.9)
        for i in range(4):
            cam = params[f"camera{i}"]
            assert len(cam["cords"]) == 6 and np.shape(cam["extrinsic"]) == (4, 4)
            np.testing.assert_allclose(cam["intrinsic"], [[40 / np.tan(np.radians(50)), 0, 40],
                                                          [0, 40 / np.tan(np.radians(50)), 30], [0, 0, 1]],
                                       atol=1e-5)
        cav_ids = {int(c) for c in _agents(root / "OPV2V" / _split_of(root, scen) / scen)}
        assert int(cav) not in params["vehicles"]  # self excluded
        other_cav_seen |= bool(cav_ids & set(params["vehicles"]))
        for vid, v in params["vehicles"].items():
            assert isinstance(vid, int)
            assert set(v) - {"obj_type"} == {"location", "center", "angle", "extent", "speed"}
            ext = np.array(v["extent"])
            assert v.get("obj_type") == ("Truck" if 2 * ext[0] > TRUCK_MIN_LENGTH else None)
            trucks += "obj_type" in v
            assert 1.8 <= ext[0] <= 2.6 and 0.85 <= ext[1] <= 1.15 and 0.6 <= ext[2] <= 0.9
            assert 2 * ext[2] <= 2.9
            assert v["angle"][0] == 0.0 and v["angle"][2] == 0.0
    assert other_cav_seen  # other CAVs are listed like any vehicle
    assert trucks > 0  # a second object class exists


@pytest.fixture(scope="module")
def frames(tiny):
    return list(_frames(tiny[0]))


def _split_of(root, scen):
    return next(s for s in SPLITS if (root / "OPV2V" / s / scen).exists())


def test_points_and_objects(frames):
    for _, _, _, _, params, pts in frames:
        assert pts.shape[0] > 2000 and pts.dtype == np.float32
        assert 0.0 <= pts[:, 3].min() and pts[:, 3].max() <= 1.0
        low = pts[pts[:, 2] < -1.5, 2]  # ground returns: the sensor frame is 1.9 m above the ground
        assert np.median(low) == pytest.approx(-1.9, abs=0.05)
        world = pts[:, :3].astype(np.float64) @ x_to_world(params["lidar_pose"])[:3, :3].T \
            + x_to_world(params["lidar_pose"])[:3, 3]
        for v in params["vehicles"].values():  # every listed object has LiDAR points on it
            pose = list(np.add(v["location"], v["center"])) + list(v["angle"])
            obj = np.linalg.inv(x_to_world(pose))
            local = world @ obj[:3, :3].T + obj[:3, 3]
            inside = (np.abs(local) <= np.array(v["extent"]) + 0.1).all(axis=1)
            assert inside.sum() >= 1


def test_beam_variants_and_images(tiny):
    root, _ = tiny
    split, scen, scen_dir = next(_scenarios(root))
    cav = _agents(scen_dir)[0]
    hetero = root / "OPV2V_Hetero" / split / scen / cav
    n64 = pcd_to_np(scen_dir / cav / "000000.pcd").shape[0]
    n32 = pcd_to_np(hetero / "000000_32.pcd").shape[0]
    n16 = pcd_to_np(hetero / "000000_16.pcd").shape[0]
    assert n16 < n32 < n64
    rgb = cv2.imread(str(scen_dir / cav / "000000_camera0.png"), cv2.IMREAD_UNCHANGED)
    assert rgb.shape == (60, 80, 3)
    depth = cv2.imread(str(hetero / "000000_depth0.png"), cv2.IMREAD_UNCHANGED)
    assert depth.shape == (60, 80) and depth.dtype == np.uint8
    assert depth[-1].mean() < 20 and depth[0].max() == 255  # road close below, sky far above
    bev = cv2.imread(str(root / "OPV2V" / "additional" / split / scen / cav / "000000_bev_visibility.png"),
                     cv2.IMREAD_GRAYSCALE)
    assert bev.shape == (256, 256) and bev.max() > 0


def test_modality_json(tiny):
    root, summary = tiny
    assign = json.loads((root / "modality_assign" / "opv2v_4modality.json").read_text())
    in_order = json.loads((root / "modality_assign" / "opv2v_4modality_in_order.json").read_text())
    rs = np.random.RandomState(303)
    for split, scen, scen_dir in _scenarios(root):
        ids = sorted(_agents(scen_dir))
        perm = rs.permutation(4) + 1
        assert assign[scen] == {c: f"m{perm[j % 4]}" for j, c in enumerate(ids)}
        if split == "test":
            assert in_order[scen] == {c: f"m{j % 4 + 1}" for j, c in enumerate(ids)}
    assert set(in_order) == set(summary["scenarios"]["test"])


def test_collaboration_matters(tiny):
    root, summary = tiny
    assert summary["frac_seen_only_by_others"] > 0.1
    only_others = 0
    for split, scen, scen_dir in _scenarios(root):
        agents = _agents(scen_dir)
        ego = yaml.safe_load((scen_dir / agents[0] / "000000.yaml").read_text())["vehicles"]
        for cav in agents[1:]:
            other = yaml.safe_load((scen_dir / cav / "000000.yaml").read_text())["vehicles"]
            only_others += len(set(other) - set(ego) - {int(agents[0])})
    assert only_others > 0


def test_determinism_and_regeneration(tmp_path):
    opts = dict(scenarios=(1, 0, 0), agents=2, frames=2, cameras=False, progress=False)
    generate(tmp_path / "a", seed=3, **opts)
    generate(tmp_path / "b", seed=3, **opts)
    first = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "OPV2V").rglob("*") if p.is_file())
    assert first and not any(p.name.endswith(".png") and "camera" in p.name for p in first)
    for rel in first:
        assert filecmp.cmp(tmp_path / "a" / rel, tmp_path / "b" / rel, shallow=False), rel
    generate(tmp_path / "b", seed=4, **opts)  # regenerating over a synthetic root replaces it
    second = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b" / "OPV2V").rglob("*") if p.is_file())
    assert second != first


def test_refuses_foreign_dataset(tmp_path):
    (tmp_path / "OPV2V" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="refusing"):
        generate(tmp_path, preset="tiny", progress=False)
    assert (tmp_path / "OPV2V" / "train").is_dir()


def test_cli(tmp_path, capsys):
    rc = make_synthetic.main(["--root", str(tmp_path / "d"), "--preset", "tiny", "--scenarios", "1", "1", "1",
                              "--agents", "2", "--frames", "1", "--no-cameras", "--workers", "1",
                              "--pcd-encoding", "binary"])
    out = capsys.readouterr().out
    assert rc == 0 and "points per cloud" in out and "non-ego" in out
    assert b"DATA binary" in next((tmp_path / "d" / "OPV2V" / "test").rglob("*.pcd")).read_bytes()
    (tmp_path / "e" / "modality_assign").mkdir(parents=True)
    assert make_synthetic.main(["--root", str(tmp_path / "e"), "--preset", "tiny"]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_format(tmp_path, capsys):
    """``--format`` picks a registered writer; an unknown one is a one-line error listing the known ones."""
    rc = make_synthetic.main(["--root", str(tmp_path / "d"), "--format", "opv2v", "--preset", "tiny",
                              "--scenarios", "1", "0", "0", "--agents", "2", "--frames", "1", "--no-cameras",
                              "--workers", "1"])
    assert rc == 0 and (tmp_path / "d" / "OPV2V" / "train").is_dir()
    capsys.readouterr()
    assert make_synthetic.main(["--root", str(tmp_path / "e"), "--format", "kitti"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown make_synthetic --format 'kitti'" in err and "opv2v" in err and "\n" not in err
