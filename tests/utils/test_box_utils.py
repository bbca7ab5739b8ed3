"""Box geometry: corner template, corners <-> centre, projections, range filters, world objects."""
import numpy as np
import pytest
import torch

from opencood.utils import box_utils as bu
from opencood.utils.errors import DataError
from opencood.utils.transformation_utils import x1_to_x2, x_to_world


def _random_boxes(rng, n):
    boxes = np.zeros((n, 7))
    boxes[:, :3] = rng.uniform(-20, 20, (n, 3))
    boxes[:, 3:6] = rng.uniform(0.5, 5.0, (n, 3))
    boxes[:, 6] = rng.uniform(-np.pi, np.pi, n)
    return boxes


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def test_corner_template_exact():
    box = np.array([[1.0, 2.0, 3.0, 2.0, 4.0, 6.0, 0.0]])  # hwl: h=2, w=4, l=6
    c = bu.boxes_to_corners_3d(box, "hwl")[0]
    expect = np.array([[3, -2, -1], [3, 2, -1], [-3, 2, -1], [-3, -2, -1],
                       [3, -2, 1], [3, 2, 1], [-3, 2, 1], [-3, -2, 1]], dtype=float) + [1, 2, 3]
    np.testing.assert_allclose(c, expect)
    # yaw +90 deg: the heading (+l) points along +y.
    rot = bu.boxes_to_corners_3d(np.array([[0, 0, 0, 2.0, 4.0, 6.0, np.pi / 2]]), "hwl")[0]
    np.testing.assert_allclose(rot[0], [2, 3, -1], atol=1e-12)
    lwh = bu.boxes_to_corners_3d(np.array([[1.0, 2.0, 3.0, 6.0, 4.0, 2.0, 0.0]]), "lwh")[0]
    np.testing.assert_allclose(lwh, expect)


def test_numpy_and_torch_agree():
    rng = np.random.default_rng(0)
    boxes = _random_boxes(rng, 10)
    out_t = bu.boxes_to_corners_3d(torch.from_numpy(boxes).float(), "hwl")
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), bu.boxes_to_corners_3d(boxes, "hwl"), atol=1e-4)
    assert bu.boxes_to_corners2d(boxes, "hwl").shape == (10, 4, 3)
    with pytest.raises(ValueError):
        bu.boxes_to_corners_3d(boxes, "xyz")


@pytest.mark.parametrize("order", ["hwl", "lwh"])
def test_corner_center_round_trip(order):
    rng = np.random.default_rng(1)
    boxes = _random_boxes(rng, 40)
    boxes[:4, 6] = [np.pi - 1e-4, -np.pi + 1e-4, np.pi, -np.pi + 1e-9]  # near the +-pi seam
    back = bu.corner_to_center(bu.boxes_to_corners_3d(boxes, order), order)
    np.testing.assert_allclose(back[:, :6], boxes[:, :6], atol=1e-9)
    np.testing.assert_allclose(_wrap(back[:, 6] - boxes[:, 6]), 0, atol=1e-9)


def test_standup_boxes():
    c = bu.boxes_to_corners_3d(np.array([[0, 0, 0, 1.0, 2.0, 4.0, np.pi / 2]]), "hwl")
    np.testing.assert_allclose(bu.corner2d_to_standup_boxes(c[:, :4, :2]), [[-1, -2, 1, 2]], atol=1e-12)
    out = bu.corner_to_standup_box_torch(torch.from_numpy(c))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), [[-1, -2, 1, 2]], atol=1e-12)


def test_projection_numpy_torch():
    rng = np.random.default_rng(2)
    corners = bu.boxes_to_corners_3d(_random_boxes(rng, 5), "hwl")
    T = x1_to_x2([1, 2, 3, 5, 30, -4], [0, -1, 2, 0, -60, 2])
    expect = np.einsum("ij,nkj->nki", T, np.concatenate([corners, np.ones((5, 8, 1))], 2))[..., :3]
    np.testing.assert_allclose(bu.project_box3d(corners, T), expect, atol=1e-9)
    out = bu.project_box3d(torch.from_numpy(corners), torch.from_numpy(T))
    np.testing.assert_allclose(out.numpy(), expect, atol=1e-9)
    pts = bu.project_points_by_matrix_torch(torch.from_numpy(corners[0]).float(), torch.from_numpy(T))
    np.testing.assert_allclose(pts.numpy(), expect[0], atol=1e-4)


def test_range_masks():
    boxes = np.array([[0, 0, 0, 1.0, 1.0, 1.0, 0.0],     # inside
                      [9.5, 0, 0, 1.0, 1.0, 1.0, 0.0],   # touches x max exactly (inclusive)
                      [9.8, 0, 0, 1.0, 1.0, 1.0, 0.0],   # 4 corners outside
                      [0, 0, 0.8, 1.0, 1.0, 1.0, 0.0]])  # top above z max
    rng_ = [-10, -10, -1, 10, 10, 1]
    kept, mask = bu.mask_boxes_outside_range_numpy(boxes, rng_, "hwl", return_mask=True)
    np.testing.assert_array_equal(mask, [True, True, False, False])
    assert kept.shape == (2, 7)
    kept4 = bu.mask_boxes_outside_range_numpy(boxes, rng_, "hwl", min_num_corners=4)
    assert kept4.shape == (4, 7)
    corners = torch.from_numpy(bu.boxes_to_corners_3d(boxes, "hwl"))
    np.testing.assert_array_equal(bu.get_mask_for_boxes_within_range_torch(corners, rng_).numpy(),
                                  [True, True, False, False])


def test_remove_large_and_abnormal_z():
    boxes = np.array([[0, 0, -1, 1.5, 1.6, 3.9, 0.3],
                      [0, 0, -1, 1.5, 1.6, 6.5, 0.0],          # long along x
                      [0, 0, -1, 1.5, 1.6, 6.5, np.pi / 2],    # long along y
                      [0, 0, 0.5, 1.5, 1.6, 3.9, 0.0],         # roof above 1 m
                      [0, 0, -2.5, 1.5, 1.6, 3.9, 0.0]])       # bottom below -3 m
    corners = torch.from_numpy(bu.boxes_to_corners_3d(boxes, "hwl"))
    np.testing.assert_array_equal(bu.remove_large_pred_bbx(corners).numpy(), [True, False, False, True, True])
    np.testing.assert_array_equal(bu.remove_bbx_abnormal_z(corners).numpy(), [True, True, True, False, False])


def test_create_bbx():
    c = bu.create_bbx([2.0, 1.0, 0.5])
    np.testing.assert_allclose(c, bu.boxes_to_corners_3d(np.array([[0, 0, 0, 1.0, 2.0, 4.0, 0]]), "hwl")[0])


def test_project_world_objects():
    lidar_pose = [10.0, 5.0, 1.9, 0.0, 30.0, 0.0]
    objects = {
        7: {"location": [20.0, 5.0, 0.0], "center": [0.1, 0.0, 0.7], "angle": [0.0, 120.0, 0.0],
            "extent": [2.0, 1.0, 0.75], "speed": 10.0},
        8: {"location": [float("nan"), 0.0, 0.0], "center": [0, 0, 0], "angle": [0, 0, 0], "extent": [1, 1, 1]},
        9: {"location": [500.0, 5.0, 0.0], "center": [0, 0, 0], "angle": [0, 0, 0], "extent": [2, 1, 1]},
    }
    out = {}
    bu.project_world_objects(objects, out, lidar_pose, "hwl")
    assert set(out) == {7, 9}
    box = out[7]
    centre = np.linalg.inv(x_to_world(lidar_pose)) @ [20.1, 5.0, 0.7, 1.0]
    np.testing.assert_allclose(box[:3], centre[:3], atol=1e-9)
    np.testing.assert_allclose(box[3:6], [1.5, 2.0, 4.0], atol=1e-9)
    np.testing.assert_allclose(box[6], np.radians(90.0), atol=1e-9)
    out_lwh = {}
    bu.project_world_objects(objects, out_lwh, lidar_pose, "lwh", lidar_range=[-100, -40, -3, 100, 40, 1])
    assert set(out_lwh) == {7}
    np.testing.assert_allclose(out_lwh[7][3:6], [4.0, 2.0, 1.5], atol=1e-9)
    with pytest.raises(DataError, match="extent"):
        bu.project_world_objects({3: {"location": [0, 0, 0], "center": [0, 0, 0], "angle": [0, 0, 0]}},
                                 {}, lidar_pose, "hwl")


def _loop_project_world_objects(object_dict, lidar_pose, order, lidar_range=None, min_num_corners=2):
    """One object at a time (the pre-vectorisation algorithm), as the reference for the batched version."""
    out = {}
    for object_id, content in object_dict.items():
        pose = np.concatenate([np.add(content["location"], content["center"], dtype=np.float64),
                               np.asarray(content["angle"], np.float64)])
        extent = np.asarray(content["extent"], dtype=np.float64)
        if not (np.isfinite(pose).all() and np.isfinite(extent).all()):
            continue
        tfm = x1_to_x2(pose, lidar_pose)
        corners = bu.create_bbx(extent) @ tfm[:3, :3].T + tfm[:3, 3]
        box = bu.corner_to_center(corners[None], order=order)
        if lidar_range is not None:
            box = bu.mask_boxes_outside_range_numpy(box, lidar_range, order, min_num_corners)
        if box.shape[0] == 1:
            out[object_id] = box[0]
    return out


@pytest.mark.parametrize("order", ["hwl", "lwh"])
def test_vectorized_world_objects_equal_per_object_loop(order):
    rng = np.random.default_rng(11)
    for trial in range(20):
        n = int(rng.integers(0, 50))
        objects = {int(i): {"location": rng.uniform(-100, 100, 3).tolist(),
                            "center": rng.uniform(-0.1, 0.1, 3).tolist(),
                            "angle": [float(rng.uniform(-5, 5)), float(rng.uniform(-180, 180)),
                                      float(rng.uniform(-5, 5))],
                            "extent": rng.uniform(0.5, 3, 3).tolist(), "speed": 1.0}
                   for i in rng.permutation(10000)[:n]}
        if n and trial % 3 == 0:
            objects[next(iter(objects))]["extent"][1] = float("inf")
        pose = [*rng.uniform(-100, 100, 3), *rng.uniform(-180, 180, 3)]
        lidar_range = None if trial % 2 else [-50, -30, -3, 50, 30, 1]
        expect = _loop_project_world_objects(objects, pose, order, lidar_range)
        got = {}
        bu.project_world_objects(objects, got, pose, order, lidar_range)
        assert list(got) == list(expect)
        for k in expect:
            np.testing.assert_allclose(got[k], expect[k], rtol=0, atol=1e-9)
        ids, boxes = bu.world_objects_to_boxes(objects, pose, order, lidar_range)
        assert ids == list(expect) and boxes.shape == (len(ids), 7) and boxes.dtype == np.float64


def test_world_objects_to_boxes_empty_and_bad_values():
    ids, boxes = bu.world_objects_to_boxes({}, [0, 0, 0, 0, 0, 0])
    assert ids == [] and boxes.shape == (0, 7)
    bad = {5: {"location": [0, 0], "center": [0, 0, 0], "angle": [0, 0, 0], "extent": [1, 1, 1]}}
    with pytest.raises(DataError, match=r"vehicles\[5\]"):
        bu.world_objects_to_boxes(bad, [0, 0, 0, 0, 0, 0])
    bad = {5: {"location": [0, 0, 0], "center": [0, 0, 0], "angle": [0, 0, 0], "extent": [1, 1, 1]},
           6: {"location": ["a", "b", "c"], "center": [0, 0, 0], "angle": [0, 0, 0], "extent": [1, 1, 1]}}
    with pytest.raises(DataError, match=r"vehicles\[6\]: .* 3 numbers"):
        bu.world_objects_to_boxes(bad, [0, 0, 0, 0, 0, 0])


def test_transform_boxes_moves_centres_and_yaw():
    boxes = np.array([[10.0, 5.0, -1.0, 1.5, 2.0, 4.4, 0.3], [-3.0, 1.0, -1.2, 1.6, 1.9, 4.0, -2.9]])
    tfm = x1_to_x2([0, 0, 1.9, 0, 0, 0], [20, 0, 1.9, 0, 90, 0])  # frame a -> frame b (yawed 90 deg)
    out = bu.transform_boxes(boxes, tfm, "hwl")
    np.testing.assert_allclose(out[:, :3], boxes[:, :3] @ tfm[:3, :3].T + tfm[:3, 3], atol=1e-9)
    np.testing.assert_allclose(out[:, 3:6], boxes[:, 3:6], atol=1e-9)
    np.testing.assert_allclose(np.cos(out[:, 6] - (boxes[:, 6] - np.pi / 2)), 1.0, atol=1e-9)
