"""Road-side units of the synthetic world (``generate(..., infrastructure=K)``) and the default world's digest."""
import filecmp
import hashlib
import json
import os

import numpy as np
import pytest
import yaml

from opencood.data_utils.synthetic import generate
from opencood.data_utils.synthetic.world import RSU_LIDAR_HEIGHT
from opencood.utils.pcd_utils import pcd_to_np
from opencood.utils.transformation_utils import x_to_world

_SMALL = dict(preset="tiny", seed=5, scenarios=(1, 0, 1), agents=(2, 3), frames=2, progress=False)
# sha256 over (relative path, bytes) of every file of generate(**_SMALL) with cameras: the default world must not
# change when options are added (regenerate the digest only for a deliberate change of the default world).
DEFAULT_WORLD_SHA256 = "e8eb0020f63f81b2b5113bbfec0c34db011bfae258bb074033e28e55efacfe17"


def _digest(root):
    h = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = os.path.join(folder, name)
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("infra")
    generate(base / "plain", **_SMALL)
    generate(base / "rsu", infrastructure=2, **_SMALL)
    return base / "plain", base / "rsu"


def test_default_world_unchanged(pair):
    assert _digest(pair[0]) == DEFAULT_WORLD_SHA256


def test_vehicle_files_identical_and_units_added(pair):
    plain, rsu = pair
    for split in ("train", "test"):
        for scen in os.listdir(plain / "OPV2V" / split):
            cavs = sorted(os.listdir(plain / "OPV2V" / split / scen))
            with_units = sorted(os.listdir(rsu / "OPV2V" / split / scen))
            assert with_units == sorted(cavs + ["-1", "-2"])
            for top in ("OPV2V", "OPV2V_Hetero"):
                for cav in (c for c in cavs if c != "data_protocol.yaml"):
                    a, b = plain / top / split / scen / cav, rsu / top / split / scen / cav
                    match, mismatch, errors = filecmp.cmpfiles(a, b, os.listdir(a), shallow=False)
                    assert not mismatch and not errors and match
    assign = json.loads((rsu / "modality_assign" / "opv2v_4modality.json").read_text())
    assert all({"-1", "-2"} <= set(v) for v in assign.values())
    with pytest.raises(ValueError, match="infrastructure must be 0..4"):
        generate(rsu.parent / "bad", infrastructure=5, **_SMALL)


def test_unit_yaml_and_cloud(pair):
    _, rsu = pair
    scen = next(iter(os.listdir(rsu / "OPV2V" / "train")))
    folder = rsu / "OPV2V" / "train" / scen
    poses, seen = [], set()
    for ts in ("000000", "000002"):
        params = yaml.safe_load((folder / "-1" / f"{ts}.yaml").read_text())
        assert params["RSU"] is True and params["ego_speed"] == 0.0 and params["plan_trajectory"] == []
        assert params["true_ego_pos"] == params["predicted_ego_pos"]
        assert params["lidar_pose"][2] == pytest.approx(RSU_LIDAR_HEIGHT)
        assert len(params["camera3"]["cords"]) == 6
        poses.append(params["lidar_pose"])
        seen |= set(params["vehicles"])
        pts = pcd_to_np(folder / "-1" / f"{ts}.pcd")
        ground = pts[:, 2] < -RSU_LIDAR_HEIGHT + 0.2
        assert ground.mean() > 0.3  # the elevated sensor sees the road 3 m below it
        assert (folder / "-1" / f"{ts}_camera0.png").is_file()
    assert poses[0] == poses[1]  # fixed
    cavs = {int(c) for c in os.listdir(folder) if c.isdigit()}
    assert seen & cavs  # connected vehicles are objects for the unit
    # the two units stand on opposite corners, facing the intersection centre (between them)
    p1 = x_to_world(yaml.safe_load((folder / "-1" / "000000.yaml").read_text())["lidar_pose"])
    p2 = x_to_world(yaml.safe_load((folder / "-2" / "000000.yaml").read_text())["lidar_pose"])
    mid = (p1[:3, 3] + p2[:3, 3]) / 2
    ahead = np.linalg.inv(p1) @ np.array([*mid[:2], p1[2, 3], 1.0])
    assert ahead[0] > 15.0 and abs(ahead[1]) < 1e-6
