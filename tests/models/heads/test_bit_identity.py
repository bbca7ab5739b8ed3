"""Single-class outputs are bit-identical to the code before the anchor head (see ``reference_code``).

Anchors, labels (float64/float32 anchors, exact and legacy IoU, numpy and torch paths), decoded regression maps,
post-processed boxes/scores/GT, and the three losses' values and gradients, for fixed random inputs.
"""
import numpy as np
import pytest
import torch

from opencood.data_utils.post_processor.voxel_postprocessor import VoxelPostprocessor
from opencood.utils.registry import LOSSES
from reference_code import reference_modules

RANGE = [-12.8, -6.4, -3.0, 12.8, 6.4, 1.0]
DETECTION = {"pos_cls_weight": 2.0, "cls": {"type": "SigmoidFocalLoss", "alpha": 0.25, "gamma": 2.0, "weight": 1.0},
             "reg": {"type": "WeightedSmoothL1Loss", "sigma": 3.0, "codewise": True, "weight": 2.0},
             "dir": {"type": "WeightedSoftmaxClassificationLoss", "weight": 0.2,
                     "args": {"dir_offset": 0.7853, "num_bins": 2, "anchor_yaw": [0, 90]}}}
LOSS_ARGS = {"point_pillar_loss": DETECTION,
             "point_pillar_depth_loss": dict(DETECTION, depth={"weight": 1.5, "gamma": 1.0}),
             "point_pillar_gencomm_loss": dict(DETECTION, depth={"weight": 1.0}, generate_weight=0.5)}


@pytest.fixture(scope="module")
def reference():
    return reference_modules()


def make_params(**target):
    params = {"core_method": "VoxelPostprocessor", "gt_range": list(RANGE),
              "anchor_args": {"cav_lidar_range": list(RANGE), "l": 3.9, "w": 1.6, "h": 1.56, "r": [0, 90],
                              "feature_stride": 4, "num": 2, "W": 64, "H": 32, "D": 1,
                              "vw": 0.4, "vh": 0.4, "vd": 4.0},
              "target_args": {"pos_threshold": 0.6, "neg_threshold": 0.45, "score_threshold": 0.2},
              "order": "hwl", "max_num": 150, "nms_thresh": 0.15,
              "dir_args": {"dir_offset": 0.7853, "num_bins": 2, "anchor_yaw": [0, 90]}}
    params["target_args"].update(target)
    return params


def random_gt(rng, n=12):
    """(n, 7) hwl boxes anywhere in RANGE, overlapping each other at times."""
    return np.concatenate([rng.uniform([-12, -6, -1.5], [12, 6, -0.5], (n, 3)),
                           rng.uniform([1.4, 1.5, 3.5], [1.8, 2.0, 4.5], (n, 3)), rng.uniform(-3.14, 3.14, (n, 1))], 1)


def assert_same(new, old):
    """Same type, dtype, shape and bits (dicts and tuples element-wise)."""
    if isinstance(new, dict):
        assert list(new) == list(old)
        for key in new:
            assert_same(new[key], old[key])
    elif isinstance(new, (tuple, list)):
        assert len(new) == len(old)
        for a, b in zip(new, old):
            assert_same(a, b)
    elif torch.is_tensor(new):
        assert torch.is_tensor(old) and new.dtype == old.dtype and new.device == old.device
        assert torch.equal(new, old)
    elif isinstance(new, np.ndarray):
        assert new.dtype == old.dtype and np.array_equal(new, old)
    else:
        assert new == old


@pytest.mark.parametrize("legacy", [False, True])
def test_anchors_and_labels(reference, legacy):
    ref_pp, _ = reference
    new, old = VoxelPostprocessor(make_params(legacy_plus_one=legacy), True), \
        ref_pp.VoxelPostprocessor(make_params(legacy_plus_one=legacy), True)
    anchors = new.generate_anchor_box()
    assert_same(anchors, old.generate_anchor_box())
    rng = np.random.default_rng(123)
    for _ in range(3):
        gt = random_gt(rng)
        center, mask = np.zeros((150, 7)), np.zeros(150)
        center[:len(gt)], mask[:len(gt)] = gt, 1
        assert_same(new.generate_label(center, anchors, mask), old.generate_label(center, anchors, mask))
        for dtype in (torch.float64, torch.float32):
            args = (torch.from_numpy(gt).to(dtype), torch.from_numpy(anchors).to(dtype))
            assert_same(new.generate_label_torch(*args), old.generate_label_torch(*args))
    labels = [new.generate_label(center, anchors, mask)] * 2
    assert_same(new.collate_batch(labels), old.collate_batch(labels))


@pytest.mark.parametrize("keys", [("cls_preds", "reg_preds"), ("cls_preds", "reg_preds", "dir_preds"),
                                  ("cls_preds", "reg_preds", "dir_preds", "iou_preds")])
def test_decoding_and_gt(reference, keys):
    ref_pp, _ = reference
    new, old = VoxelPostprocessor(make_params(), False), ref_pp.VoxelPostprocessor(make_params(), False)
    anchors = new.generate_anchor_box()
    g = torch.Generator().manual_seed(5)
    out = {"cls_preds": torch.randn(1, 2, 8, 16, generator=g) * 2,
           "reg_preds": torch.randn(1, 14, 8, 16, generator=g) * 0.2,
           "dir_preds": torch.randn(1, 4, 8, 16, generator=g), "iou_preds": torch.rand(1, 2, 8, 16, generator=g)}
    assert_same(new.delta_to_boxes3d(out["reg_preds"], anchors), old.delta_to_boxes3d(out["reg_preds"], anchors))
    tfm = torch.eye(4, dtype=torch.float64)
    tfm[:2, 3] = torch.tensor([1.5, -0.5])
    data = {"ego": {"anchor_box": torch.from_numpy(anchors), "transformation_matrix": torch.eye(4)},
            "cav_1": {"anchor_box": torch.from_numpy(anchors), "transformation_matrix": tfm}}
    outputs = {cav: {k: v.roll(i, dims=-1) for k, v in out.items() if k in keys} for i, cav in enumerate(data)}
    result = new.post_process(data, outputs)
    assert result[0].shape[0] > 10
    assert_same(result, old.post_process(data, outputs))
    center, mask = np.zeros((150, 7), dtype=np.float32), np.zeros(150, dtype=np.float32)
    center[:12], mask[:12] = random_gt(np.random.default_rng(1)), 1
    gt = {"ego": {"object_bbx_center": center, "object_bbx_mask": mask, "object_ids": list(range(12)),
                  "transformation_matrix_clean": tfm}}
    assert_same(new.generate_gt_bbx(gt), old.generate_gt_bbx(gt))


def loss_inputs():
    """Labels on the 8 x 16 x 2 grid, random predictions, B = 2."""
    g = torch.Generator().manual_seed(7)
    anchors = torch.from_numpy(VoxelPostprocessor(make_params(), True).generate_anchor_box())
    pos = (torch.rand(2, 8, 16, 2, generator=g) < 0.1).float()
    neg = (torch.rand(2, 8, 16, 2, generator=g) < 0.8).float() * (1 - pos)
    labels = {"pos_equal_one": pos, "neg_equal_one": neg, "targets": torch.randn(2, 8, 16, 14, generator=g) * 0.3,
              "anchor_box": anchors}
    preds = {"cls_preds": torch.randn(2, 2, 8, 16, generator=g), "reg_preds": torch.randn(2, 14, 8, 16, generator=g),
             "dir_preds": torch.randn(2, 4, 8, 16, generator=g), "pred_feature": torch.randn(3, 4, 8, 16, generator=g),
             "gt_feature": torch.randn(3, 4, 8, 16, generator=g),
             "depth_items_m2": (torch.randn(2, 5, 3, 4, generator=g), torch.randint(0, 5, (2, 3, 4), generator=g))}
    return preds, labels


@pytest.mark.parametrize("name", list(LOSS_ARGS))
@pytest.mark.parametrize("suffix", ["", "_single"])
def test_loss_values_and_gradients(reference, name, suffix):
    _, ref_losses = reference
    results = []
    for loss in (LOSSES.get(name)(LOSS_ARGS[name]), ref_losses[name](LOSS_ARGS[name])):
        preds, labels = loss_inputs()
        grads = ("cls_preds", "reg_preds", "dir_preds")
        for key in grads:
            preds[key].requires_grad_(True)
            preds[f"{key}{suffix}"] = preds[key]
        total = loss(preds, labels, suffix)
        total.backward()
        results.append((total.detach(), [preds[k].grad for k in grads], loss.loss_dict))
    assert_same(results[0], results[1])
