"""BEV picture: written headless, right size, colours and axis orientation."""
import os

import cv2
import numpy as np
import pytest
import torch

from opencood.utils.box_utils import boxes_to_corners_3d
from opencood.visualization import vis_utils

PC_RANGE = [-40.0, -20.0, -3.0, 40.0, 20.0, 1.0]


def box(x, y, yaw=0.0):
    return boxes_to_corners_3d(np.array([[x, y, -1.0, 1.5, 2.0, 4.0, yaw]]), "hwl")  # (1, 8, 3)


def color_mask(rgb_image, color):
    return np.all(rgb_image == np.array(color, dtype=np.uint8), axis=-1)


def test_draw_bev_headless_file_size_colours(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    points = np.random.default_rng(0).uniform(-30, 30, size=(2000, 4))
    path = tmp_path / "vis" / "bev_00000.png"
    image = vis_utils.draw_bev(points, box(10, 5), torch.from_numpy(box(-10, -5, 0.5)).float(), str(path),
                               PC_RANGE, agent_positions=[(0, 0, "m1"), (15, -8, "m2")], title="frame 0",
                               image_size=(320, 160))
    assert path.is_file() and path.stat().st_size > 0
    assert sorted(os.listdir(path.parent)) == ["bev_00000.png"]
    disk = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert disk.shape == (160, 320, 3)
    np.testing.assert_array_equal(disk, image)
    green = color_mask(disk, vis_utils.GT_COLOR)
    red = color_mask(disk, vis_utils.PRED_COLOR)
    assert green.sum() > 20 and red.sum() > 20
    assert color_mask(disk, vis_utils.POINT_COLOR).sum() > 500
    assert color_mask(disk, vis_utils.AGENT_COLORS[0]).sum() > 0  # m1 marker
    # GT at x=+10 is right of centre, prediction at x=-10 left of centre (4 px per metre here).
    gt_cols = np.nonzero(green[40:])[1]  # below the legend (top 40 rows)
    assert gt_cols.min() > 160 + 4 * 6 and gt_cols.max() < 160 + 4 * 14


def test_left_hand_flips_y(tmp_path):
    gt = box(0, 10)  # +y
    left = vis_utils.draw_bev(None, gt, None, tmp_path / "l.png", PC_RANGE, left_hand=True)
    right = vis_utils.draw_bev(None, gt, None, tmp_path / "r.png", PC_RANGE, left_hand=False)
    assert left.shape == (200, 400, 3)  # default 5 px per metre
    cols = slice(0, 300)  # left of the legend
    rows_left = np.nonzero(color_mask(left[:, cols], vis_utils.GT_COLOR))[0]
    rows_right = np.nonzero(color_mask(right[:, cols], vis_utils.GT_COLOR))[0]
    assert rows_left.min() > 100  # +y drawn below the centre row (CARLA top view)
    assert rows_right.max() < 100  # +y drawn above it


def test_empty_inputs_and_bad_range(tmp_path):
    image = vis_utils.draw_bev(None, np.zeros((0, 8, 3)), None, tmp_path / "e.png", PC_RANGE)
    assert not color_mask(image, vis_utils.GT_COLOR)[40:].any()  # only the legend is green
    assert (tmp_path / "e.png").stat().st_size > 0
    with pytest.raises(ValueError, match="pc_range"):
        vis_utils.draw_bev(None, None, None, tmp_path / "x.png", [0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="gt_corners"):
        vis_utils.draw_bev(None, np.zeros((3, 7)), None, tmp_path / "x.png", PC_RANGE)
