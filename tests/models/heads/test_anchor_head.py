"""The anchor head definition: conv heads, multi-class anchors / assignment / decoding, config checks, training."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from opencood.data_utils.post_processor.voxel_postprocessor import VoxelPostprocessor
from opencood.models.heads import (ANCHOR_ARGS, AnchorClass, AnchorHead, anchors_per_cell, build_detection_heads,
                                   conv_heads, resolve_head_config)
from opencood.utils.config import Context
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import LOSSES

RANGE = [-12.8, -6.4, -3.0, 12.8, 6.4, 1.0]
GT_RANGE = [-12.8, -6.4, -4.0, 12.8, 6.4, 1.0]  # 3 m trucks at z -1.78 reach below -3 m
DIR = {"dir_offset": 0.7853, "num_bins": 2, "anchor_yaw": [0, 90]}
CLASSES = [  # V2X-Real's super-classes (spec data_eval §2), yaws 0 / 90 degrees
    {"name": "vehicle", "l": 3.9, "w": 1.6, "h": 1.56, "z": -1.78, "r": [0, 90]},
    {"name": "pedestrian", "l": 0.8, "w": 0.6, "h": 1.73, "z": -0.6, "r": [0, 90],
     "pos_threshold": 0.5, "neg_threshold": 0.35},
    {"name": "truck", "l": 8.0, "w": 3.0, "h": 3.0, "z": -1.78, "r": [0, 90]},
]
LOSS_ARGS = {"pos_cls_weight": 2.0, "cls": {"alpha": 0.25, "gamma": 2.0, "weight": 1.0},
             "reg": {"sigma": 3.0, "weight": 2.0}, "dir": {"weight": 0.2, "args": DIR}}


def make_params(classes=CLASSES, **anchor):
    """postprocess section on a 64 x 32 voxel grid of 0.4 m, stride 4 -> 8 x 16 anchor cells."""
    anchor_args = {"cav_lidar_range": list(RANGE), "feature_stride": 4, "W": 64, "H": 32, "D": 1,
                   "vw": 0.4, "vh": 0.4, "vd": 4.0}
    if classes is None:
        anchor_args.update({"l": 3.9, "w": 1.6, "h": 1.56, "r": [0, 90], "num": 2})
    else:
        anchor_args["classes"] = copy.deepcopy(classes)
    anchor_args.update(anchor)
    return {"core_method": "VoxelPostprocessor", "gt_range": list(GT_RANGE), "anchor_args": anchor_args,
            "target_args": {"pos_threshold": 0.6, "neg_threshold": 0.45, "score_threshold": 0.2},
            "order": "hwl", "max_num": 150, "nms_thresh": 0.15, "max_box_extent": 100.0,
            "pred_z_range": [-4.0, 1.0], "dir_args": dict(DIR)}


def box(x, y, cls):
    """A GT box of class ``cls`` (its anchor size, slightly perturbed) at (x, y), yaw 0.1 rad."""
    c = CLASSES[cls]
    return [x, y, c["z"], c["h"] * 1.05, c["w"] * 0.95, c["l"] * 1.1, 0.1]


# ---------------------------------------------------------------------------------------------- conv heads
def test_conv_heads_shapes_and_init():
    torch.manual_seed(0)
    heads = build_detection_heads(16, {"anchor_number": 6, "dir_args": DIR, "cls_prior_prob": 0.01})
    assert list(heads) == ["cls_head", "reg_head", "dir_head"]
    assert [h.out_channels for h in heads.values()] == [6, 42, 12]
    assert torch.allclose(torch.sigmoid(heads["cls_head"].bias), torch.full((6,), 0.01))
    # Same random weights as three plain convs built in the same order (no extra RNG draws).
    torch.manual_seed(0)
    plain = [nn.Conv2d(16, 6, 1), nn.Conv2d(16, 42, 1), nn.Conv2d(16, 12, 1)]
    for conv, ref in zip(heads.values(), plain):
        assert torch.equal(conv.weight, ref.weight)
    torch.manual_seed(0)
    no_prior = conv_heads(16, 6, DIR["num_bins"])
    assert torch.equal(no_prior["cls_head"].bias, plain[0].bias) and torch.equal(no_prior["dir_head"].weight, plain[2].weight)
    assert "dir_head" not in conv_heads(16, 2)
    with pytest.raises(ConfigError, match="cls_prior_prob"):
        build_detection_heads(16, {"anchor_number": 2, "cls_prior_prob": 1.5})
    with pytest.raises(ConfigError, match="model.args.anchor_number"):
        build_detection_heads(16, {"dir_args": DIR})
    head = VoxelPostprocessor(make_params(), True).head
    assert [h.out_channels for h in head.conv_heads(8).values()] == [6, 42, 12]


# ---------------------------------------------------------------------------------------------- anchors
def test_multi_class_anchors_per_class():
    pp = VoxelPostprocessor(make_params(), True)
    head = pp.head
    assert head.class_names == ["vehicle", "pedestrian", "truck"] and head.num_anchors == 6
    assert head.anchor_class.tolist() == [0, 0, 1, 1, 2, 2]
    assert anchors_per_cell(make_params()["anchor_args"]) == 6 == pp.anchor_num
    anchors = pp.generate_anchor_box()
    assert anchors.shape == (8, 16, 6, 7) and anchors.dtype == np.float32
    single = VoxelPostprocessor(make_params(None), True).generate_anchor_box()
    np.testing.assert_array_equal(anchors[..., :2], np.repeat(single[..., :1, :2], 6, axis=2))
    np.testing.assert_allclose(anchors[2, 3, :, 2], [-1.78, -1.78, -0.6, -0.6, -1.78, -1.78], atol=1e-6)
    np.testing.assert_allclose(anchors[2, 3, 2, 3:6], [1.73, 0.6, 0.8], atol=1e-6)  # h, w, l
    np.testing.assert_allclose(anchors[2, 3, 5, 3:6], [3.0, 3.0, 8.0], atol=1e-6)
    np.testing.assert_allclose(anchors[2, 3, :, 6], [0, math.pi / 2] * 3, atol=1e-6)
    np.testing.assert_allclose(single[..., 2], -1.0)  # HEAL form: z = -1 m


# ---------------------------------------------------------------------------------------------- assignment
def labels_of(pp, boxes, classes):
    center, mask, cls = np.zeros((150, 7)), np.zeros(150), np.zeros(150, dtype=np.int64)
    center[:len(boxes)], mask[:len(boxes)], cls[:len(boxes)] = boxes, 1, classes
    return pp.generate_label(center, pp.generate_anchor_box(), mask, cls)


def test_anchor_of_a_class_only_matches_gts_of_that_class():
    pp = VoxelPostprocessor(make_params(), True)
    truck = [box(0.0, 0.0, 2)]
    label = labels_of(pp, truck, [2])
    pos = label["pos_equal_one"]  # (H', W', 6)
    assert pos[..., 4:].sum() >= 1 and pos[..., :4].sum() == 0  # only truck anchors are positive
    assert np.all(label["neg_equal_one"][..., :4] == 1)  # vehicle and pedestrian anchors: background
    # The same box labelled a vehicle: only vehicle anchors can be positive.
    as_vehicle = labels_of(pp, truck, [0])["pos_equal_one"]
    assert as_vehicle[..., :2].sum() >= 1 and as_vehicle[..., 2:].sum() == 0


def test_multi_class_labels_equal_one_single_class_head_per_class():
    """Each class is assigned on its own: its slots equal a 1-class head with its anchors and thresholds."""
    rng = np.random.default_rng(4)
    pp = VoxelPostprocessor(make_params(), True)
    classes = np.array([0, 1, 2, 1, 0, 2, 1])
    boxes = [box(float(rng.uniform(-11, 11)), float(rng.uniform(-5, 5)), int(c)) for c in classes]
    label = labels_of(pp, boxes, classes)
    for k, spec in enumerate(CLASSES):
        one = {key: spec[key] for key in ("l", "w", "h", "z", "r")}
        params = make_params(None, **one)
        params["target_args"]["pos_threshold"] = spec.get("pos_threshold", 0.6)
        params["target_args"]["neg_threshold"] = spec.get("neg_threshold", 0.45)
        single = VoxelPostprocessor(params, True)
        ref = labels_of(single, [b for b, c in zip(boxes, classes) if c == k], 0)
        for key in ("pos_equal_one", "neg_equal_one"):
            np.testing.assert_array_equal(label[key][..., 2 * k:2 * k + 2], ref[key])
        targets = label["targets"].reshape(8, 16, 6, 7)[..., 2 * k:2 * k + 2, :]
        np.testing.assert_array_equal(targets, ref["targets"].reshape(8, 16, 2, 7))


@pytest.mark.parametrize("iou, expect", [(0.55, "pos"), (0.4, "neg")])
def test_per_class_thresholds_apply(iou, expect):
    """Two classes of the same 4 x 2 m size, thresholds 0.6/0.45 and 0.5/0.35; one GT of each at x = 0.

    Cell 0 (x = 0) holds each GT's best anchor; cell 1 is shifted so its yaw-0 anchors have stand-up IoU
    ``iou`` with the GT of their class: positive only for class 1 at 0.55, negative only for class 0 at 0.4.
    """
    same = {"l": 4.0, "w": 2.0, "h": 1.5, "z": -1.0, "yaws": (0.0, math.pi / 2)}
    head = AnchorHead(VoxelPostprocessor(make_params(), True).head.grid,
                      [AnchorClass("a", pos_threshold=0.6, neg_threshold=0.45, **same),
                       AnchorClass("b", pos_threshold=0.5, neg_threshold=0.35, **same)])
    shift = 4.0 * (1 - iou) / (1 + iou)  # stand-up IoU of a shift d along l: (l - d) / (l + d)
    anchors = torch.zeros(1, 2, 4, 7, dtype=torch.float64)  # (H', W', A, 7) hwl
    anchors[..., 2:6] = torch.tensor([-1.0, 1.5, 2.0, 4.0], dtype=torch.float64)
    anchors[0, 1, :, 0] = shift
    anchors[..., 1::2, 6] = math.pi / 2
    gt = torch.tensor([[0.0, 0.0, -1.0, 1.5, 2.0, 4.0, 0.0]] * 2, dtype=torch.float64)
    label = head.assign(gt, anchors, gt_class=torch.tensor([0, 1]))
    pos, neg = label["pos_equal_one"][0, 1], label["neg_equal_one"][0, 1]  # cell 1: slots a0, a90, b0, b90
    assert label["pos_equal_one"][0, 0].tolist() == [1, 0, 1, 0]  # best anchors
    if expect == "pos":
        assert pos.tolist() == [0, 0, 1, 0] and neg[[0, 2]].tolist() == [0, 0]
    else:
        assert pos.sum() == 0 and neg[[0, 2]].tolist() == [1, 0]


def test_class_input_checks():
    pp = VoxelPostprocessor(make_params(), True)
    anchors = torch.from_numpy(pp.generate_anchor_box()).double()
    gt = torch.tensor([box(0.0, 0.0, 0)], dtype=torch.float64)
    with pytest.raises(DataError, match="object_bbx_class"):
        pp.generate_label_torch(gt, anchors)
    with pytest.raises(DataError, match="outside"):
        pp.generate_label_torch(gt, anchors, gt_class=torch.tensor([3]))
    with pytest.raises(DataError, match="anchors have 2 per cell"):
        pp.generate_label_torch(gt, anchors[:, :, :2], gt_class=torch.tensor([0]))
    # A single-class head is class-agnostic: classes are ignored (and may be absent).
    single = VoxelPostprocessor(make_params(None), True)
    a1 = torch.from_numpy(single.generate_anchor_box()).double()
    with_cls = single.generate_label_torch(gt, a1, gt_class=torch.tensor([2]))
    without = single.generate_label_torch(gt, a1)
    assert all(torch.equal(with_cls[k], without[k]) for k in without)


# ---------------------------------------------------------------------------------------------- decoding
def test_decoded_boxes_carry_their_anchor_class():
    pp = VoxelPostprocessor(make_params(), False)
    anchors = pp.generate_anchor_box()
    cls = torch.full((1, 6, 8, 16), -10.0)
    cls[0, 4, 2, 3] = 3.0  # a yaw-0 truck anchor (8 m long: kept with max_box_extent 100 m)
    cls[0, 2, 5, 12] = 2.0  # a pedestrian anchor
    out = {"cls_preds": cls, "reg_preds": torch.zeros(1, 42, 8, 16), "dir_preds": torch.zeros(1, 12, 8, 16)}
    data = {"ego": {"anchor_box": torch.from_numpy(anchors), "transformation_matrix": torch.eye(4)}}
    boxes, scores, labels = pp.post_process(data, {"ego": out}, return_labels=True)
    assert boxes.shape == (2, 8, 3) and labels.tolist() == [2, 1]
    torch.testing.assert_close(scores, torch.sigmoid(torch.tensor([3.0, 2.0])))
    extent = boxes[0, :, 0].max() - boxes[0, :, 0].min()
    assert abs(float(extent) - 8.0) < 1e-4
    params = make_params()
    del params["max_box_extent"]  # default 6 m: the truck is dropped, as the reference's vehicle filter
    _, _, labels = VoxelPostprocessor(params, False).post_process(data, {"ego": out}, return_labels=True)
    assert labels.tolist() == [1]


def test_generate_gt_bbx_returns_classes():
    pp = VoxelPostprocessor(make_params(), False)
    center, mask, cls = np.zeros((150, 7)), np.zeros(150), np.zeros(150, dtype=np.int64)
    center[:3] = [box(0.0, 0.0, 2), box(5.0, 2.0, 1), box(-6.0, -3.0, 0)]
    mask[:3], cls[:3] = 1, [2, 1, 0]
    data = {"ego": {"object_bbx_center": center, "object_bbx_mask": mask, "object_ids": [1, 2, 3],
                    "object_bbx_class": cls, "transformation_matrix_clean": torch.eye(4)}}
    corners, labels = pp.generate_gt_bbx(data, return_labels=True)
    assert corners.shape == (3, 8, 3) and labels.tolist() == [2, 1, 0]
    del data["ego"]["object_bbx_class"]
    assert pp.generate_gt_bbx(data, return_labels=True)[1].tolist() == [0, 0, 0]
    assert torch.equal(pp.generate_gt_bbx(data), corners)


# ---------------------------------------------------------------------------------------------- config
def test_yaml_form_errors():
    params = make_params()
    params["anchor_args"]["l"] = 3.9
    with pytest.raises(ConfigError, match="'postprocess.anchor_args.l' and 'postprocess.anchor_args.classes'"):
        VoxelPostprocessor(params, True)
    with pytest.raises(ConfigError, match=r"'postprocess.anchor_args.num' \(2\) must equal .* \(6\)"):
        VoxelPostprocessor(make_params(num=2), True)
    with pytest.raises(ConfigError, match="repeats a class name"):
        VoxelPostprocessor(make_params(CLASSES + CLASSES[:1]), True)
    with pytest.raises(ConfigError, match="missing key 'postprocess.anchor_args.r'"):
        VoxelPostprocessor(make_params(None, r=None), True)
    with pytest.raises(ConfigError, match="'postprocess.anchor_args.W' = 60 does not fit"):
        VoxelPostprocessor(make_params(W=60), True)
    bad = copy.deepcopy(CLASSES)
    bad[1]["pos_treshold"] = 0.5
    with pytest.raises(ConfigError, match=r"unknown key 'postprocess.anchor_args.classes\[1\].pos_treshold'; "
                                          r"did you mean 'pos_threshold'"):
        VoxelPostprocessor(make_params(bad), True)
    # The same check at load time, through the declared schema (the loader's validation pass).
    with pytest.raises(ConfigError, match=r"classes\[1\].pos_treshold"):
        ANCHOR_ARGS.validate(make_params(bad)["anchor_args"], "postprocess.anchor_args", Context("x.yaml"))


def test_resolve_head_config_derives_and_checks():
    hypes = {"_source": "exp.yaml", "postprocess": make_params(),
             "model": {"args": {"dir_args": dict(DIR)}}, "loss": {"args": {"dir": {"weight": 0.2}}}}
    resolve_head_config(hypes)
    assert hypes["postprocess"]["anchor_args"]["num"] == 6 and hypes["model"]["args"]["anchor_number"] == 6
    assert hypes["loss"]["args"]["dir"]["args"] == DIR  # derived from postprocess.dir_args
    wrong = copy.deepcopy(hypes)
    wrong["loss"]["args"]["dir"]["args"]["num_bins"] = 4
    with pytest.raises(ConfigError, match="exp.yaml: key 'loss.args.dir.args.num_bins' = 4 differs from "
                                          "'postprocess.dir_args.num_bins' = 2"):
        resolve_head_config(wrong)
    wrong = copy.deepcopy(hypes)
    wrong["model"]["args"]["dir_args"]["dir_offset"] = 0.5
    with pytest.raises(ConfigError, match="'model.args.dir_args.dir_offset' = 0.5 differs"):
        resolve_head_config(wrong)
    wrong = copy.deepcopy(hypes)
    wrong["model"]["args"]["anchor_number"] = 2
    with pytest.raises(ConfigError, match="'model.args.anchor_number' = 2 differs"):
        resolve_head_config(wrong)
    wrong = copy.deepcopy(hypes)
    del wrong["postprocess"]["dir_args"]
    with pytest.raises(ConfigError, match="missing key 'postprocess.dir_args'"):
        resolve_head_config(wrong)


# ---------------------------------------------------------------------------------------------- training
class TinyDetector(nn.Module):
    """Two 3x3 convs on a fixed random BEV map, then the anchor head's conv heads."""

    def __init__(self, head):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                                  nn.ReLU())
        for name, conv in head.conv_heads(16, cls_prior_prob=0.01).items():
            setattr(self, name, conv)

    def forward(self, x):
        f = self.body(x)  # (B, 16, H', W')
        return {"cls_preds": self.cls_head(f), "reg_preds": self.reg_head(f), "dir_preds": self.dir_head(f)}


def test_three_class_head_trains_and_loss_falls():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    pp = VoxelPostprocessor(make_params(), True)
    anchors = pp.generate_anchor_box()
    labels = []
    for _ in range(2):  # B = 2 samples of 6 random boxes of the 3 classes
        classes = rng.integers(0, 3, 6)
        boxes = [box(float(rng.uniform(-11, 11)), float(rng.uniform(-5, 5)), int(c)) for c in classes]
        labels.append(labels_of(pp, boxes, classes))
    batch = VoxelPostprocessor.collate_batch(labels)
    batch["anchor_box"] = torch.from_numpy(anchors)
    assert batch["pos_equal_one"].shape == (2, 8, 16, 6) and batch["targets"].shape == (2, 8, 16, 42)
    model = TinyDetector(pp.head)
    x = torch.randn(2, 4, 8, 16)
    loss = LOSSES.get("point_pillar_loss")(LOSS_ARGS)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    values = []
    for _ in range(30):
        opt.zero_grad()
        total = loss(model(x), batch)
        total.backward()
        opt.step()
        values.append(float(total.detach()))
    assert set(loss.loss_dict) == {"total_loss", "cls_loss", "reg_loss", "dir_loss"}
    assert values[-1] < 0.5 * values[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_multi_class_assignment_on_cuda_matches_cpu():
    pp = VoxelPostprocessor(make_params(), True)
    anchors = torch.from_numpy(pp.generate_anchor_box()).double()
    gt = torch.tensor([box(0.0, 0.0, 2), box(5.0, 2.0, 1), box(-6.0, -3.0, 0)], dtype=torch.float64)
    cls = torch.tensor([2, 1, 0])
    cpu = pp.generate_label_torch(gt, anchors, gt_class=cls)
    gpu = pp.generate_label_torch(gt.cuda(), anchors.cuda(), gt_class=cls.cuda())
    for key in cpu:
        assert gpu[key].is_cuda
        torch.testing.assert_close(gpu[key].cpu(), cpu[key])
