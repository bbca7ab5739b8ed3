"""Degenerate-input policy: empty clouds legal and counted, NaN/inf and absurd points dropped and counted,
grayscale images converted and counted, also through DataLoader workers; images that do not fit their
intrinsics refused; the trainer's per-epoch summary line."""
import os
import sys

import numpy as np
import pytest
from PIL import Image

from opencood.utils.camera_utils import cameras_from_agent_yaml
from opencood.utils.errors import DataError
from opencood.utils.input_stats import MAX_ABS_COORD, InputStats, summary_line
from opencood.utils.pcd_utils import read_pcd_points

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "data_utils", "datasets"))


def _write_intensity_pcd(path, pts):
    head = (b"VERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\nWIDTH %d\nHEIGHT 1\n"
            b"POINTS %d\nDATA binary\n" % (len(pts), len(pts)))
    with open(path, "wb") as f:
        f.write(head + np.asarray(pts, "<f4").tobytes())


def test_clean_points_policy():
    stats = InputStats()
    pts = np.array([[1, 2, 3, 0.5], [np.nan, 0, 0, 0], [0, -np.inf, 0, 0], [MAX_ABS_COORD + 1, 0, 0, 0],
                    [0, 0, -MAX_ABS_COORD, 0.25]], np.float32)
    np.testing.assert_array_equal(stats.clean_points(pts), pts[[0, 4]])
    assert stats.clean_points(np.zeros((0, 4), np.float32)).shape == (0, 4)
    gray = stats.rgb(Image.new("L", (4, 3), 7))
    assert gray.mode == "RGB" and np.asarray(gray)[0, 0].tolist() == [7, 7, 7]
    counts = stats.take()
    assert counts == {"clouds": 2, "empty_clouds": 1, "nonfinite_points": 2, "far_points": 1, "images": 1,
                      "converted_images": 1}
    assert summary_line(counts) == ("inputs: 1 empty clouds, 2 NaN/inf points dropped, 1 points beyond 1000 m "
                                    "dropped, 1 non-RGB images converted (of 2 clouds, 1 images)")
    assert stats.take()["clouds"] == 0 and summary_line(stats.take()) is None


def test_dataset_counts_through_workers(tmp_path):
    from opencood.data_utils.datasets import build_dataset
    from opencood.tools.loaders import build_loader
    from opv2v_tiny import make_hypes, make_tree
    base = make_tree(str(tmp_path / "data"), cameras=True)
    s1, s2 = (os.path.join(base, "train", f"2021_01_01_00_00_0{k}") for k in (1, 2))
    pts = read_pcd_points(os.path.join(s1, "100", "000000.pcd"))
    pts[:3, 0] = [np.nan, np.inf, -np.inf]
    _write_intensity_pcd(os.path.join(s1, "100", "000000.pcd"), pts)
    _write_intensity_pcd(os.path.join(s1, "200", "000000.pcd"), np.zeros((0, 4)))
    far = read_pcd_points(os.path.join(s2, "100", "000002.pcd"))
    far[:4, 1] = 5000.0
    _write_intensity_pcd(os.path.join(s2, "100", "000002.pcd"), far)
    Image.new("L", (16, 12)).save(os.path.join(s2, "200", "000000_camera1.png"))
    ds = build_dataset(make_hypes(base, extra={"input_source": ["lidar", "camera"]}), train=True)
    stats = ds.base.input_stats
    stats.take()  # created in the main process before the workers start (what the trainer does)
    n = sum(1 for _ in build_loader(ds, "val", batch_size=1, num_workers=2))
    counts = stats.take()
    assert n == len(ds) == 4
    assert (counts["empty_clouds"], counts["nonfinite_points"], counts["far_points"],
            counts["converted_images"]) == (1, 3, 4, 1)
    assert counts["clouds"] >= 8 and counts["images"] == 4 * counts["clouds"]


def _camera_params(cx, cy):
    cam = {"cords": [0, 0, 1.9, 0, 0, 0], "intrinsic": [[8.0, 0, cx], [0, 8.0, cy], [0, 0, 1]]}
    return {"camera0": cam}


def test_image_must_fit_its_intrinsics():
    img = Image.new("RGB", (16, 12))
    views = cameras_from_agent_yaml(_camera_params(8, 6), [img], None, [0] * 6, ["camera0"], "a.yaml")
    assert views[0].intrinsic[0, 2] == 8
    with pytest.raises(DataError, match=r"a.yaml: image of 'camera0' is 8x6 .*principal point at \(8, 6\)"):
        cameras_from_agent_yaml(_camera_params(8, 6), [Image.new("RGB", (8, 6))], None, [0] * 6, ["camera0"],
                                "a.yaml")
    with pytest.raises(DataError, match="depth image of 'camera0'"):
        cameras_from_agent_yaml(_camera_params(8, 6), [img], [Image.new("L", (8, 6))], [0] * 6, ["camera0"], "a.yaml")


@pytest.mark.parametrize("key, value", [("intrinsic", "[[8, 0, 8], [0, 8, 6], [0, 0, 1]]"), ("intrinsic", [1, 2]),
                                        ("cords", [0, 0, "x", 0, 0, 0]), ("cords", [0, 0, float("nan"), 0, 0, 0])])
def test_bad_camera_numbers_name_the_key(key, value):
    params = _camera_params(8, 6)
    params["camera0"][key] = value
    with pytest.raises(DataError, match=f"a.yaml: key 'camera0.{key}' must be"):
        cameras_from_agent_yaml(params, [Image.new("RGB", (16, 12))], None, [0] * 6, ["camera0"], "a.yaml")
