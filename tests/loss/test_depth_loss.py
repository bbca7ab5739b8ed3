"""point_pillar_depth_loss: detection terms + depth focal loss of every depth_items_mX."""
import math

import pytest
import torch

from opencood.loss.point_pillar_depth_loss import depth_focal_loss
from opencood.utils.errors import DataError
from opencood.utils.registry import LOSSES

ARGS = {"pos_cls_weight": 2.0, "cls": {"type": "SigmoidFocalLoss", "alpha": 0.25, "gamma": 2.0, "weight": 2.0},
        "reg": {"type": "WeightedSmoothL1Loss", "sigma": 3.0, "codewise": True, "weight": 2.0},
        "depth": {"weight": 1.0}}


def detection_batch():
    g = torch.Generator().manual_seed(0)
    output = {"cls_preds": torch.randn(1, 2, 4, 4, generator=g), "reg_preds": torch.randn(1, 14, 4, 4, generator=g)}
    pos = torch.zeros(1, 4, 4, 2)
    pos[0, 1, 2, 0] = 1.0
    target = {"pos_equal_one": pos, "neg_equal_one": 1.0 - pos, "targets": torch.randn(1, 4, 4, 14, generator=g)}
    return output, target


def test_focal_value_for_uniform_logits():
    logits = torch.zeros(3, 48, 2, 2)
    gt = torch.randint(0, 48, (3, 2, 2))
    expected = 0.25 * (1 - 1 / 48) ** 2 * math.log(48)
    assert depth_focal_loss(logits, gt).item() == pytest.approx(expected, rel=1e-6)


class FakeWriter:
    def __init__(self):
        self.scalars = {}

    def add_scalar(self, name, value, step):
        self.scalars[name] = value


def test_depth_loss_added_logged_and_decreasing(capsys):
    loss_fn = LOSSES.get("point_pillar_depth_loss")(ARGS)
    output, target = detection_batch()
    detection_args = {k: v for k, v in ARGS.items() if k != "depth"}  # undeclared keys are errors
    det_only = LOSSES.get("point_pillar_loss")(detection_args)(output, target).item()

    logits = torch.zeros(2, 8, 3, 4, requires_grad=True)
    gt = torch.randint(0, 8, (2, 3, 4), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD([logits], lr=5.0)
    values = []
    for _ in range(5):
        total = loss_fn({**output, "depth_items_m2": (logits, gt)}, target)
        values.append(loss_fn.loss_dict["depth_loss"])
        assert total.item() == pytest.approx(det_only + values[-1], rel=1e-5)
        opt.zero_grad()
        total.backward()
        opt.step()
    assert values[0] > 0 and all(b < a for a, b in zip(values, values[1:]))

    writer = FakeWriter()
    loss_fn.logging(0, 0, 10, writer)
    assert "Depth_loss" in writer.scalars and "depth" in capsys.readouterr().out


def test_depth_only_for_fused_pass_and_missing_gt():
    loss_fn = LOSSES.get("point_pillar_depth_loss")(ARGS)
    output, target = detection_batch()
    items = (torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    single = {"cls_preds_single": output["cls_preds"], "reg_preds_single": output["reg_preds"],
              "depth_items_m2": items}
    loss_fn(single, target, suffix="_single")
    assert "depth_loss_single" not in loss_fn.loss_dict
    loss_fn(output, target)
    assert loss_fn.loss_dict["depth_loss"] == 0.0  # no camera agent in the batch
    with pytest.raises(DataError, match="depth_items_m4"):
        loss_fn({**output, "depth_items_m4": (items[0], None)}, target)
