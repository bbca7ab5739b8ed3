import math

import pytest
import torch

from opencood.utils.errors import DataError
from opencood.utils.registry import LOSSES

B, H, W, A = 2, 4, 4, 2
ARGS = {"pos_cls_weight": 2.0,
        "cls": {"type": "SigmoidFocalLoss", "alpha": 0.25, "gamma": 2.0, "weight": 1.0},
        "reg": {"type": "WeightedSmoothL1Loss", "sigma": 3.0, "codewise": True, "weight": 2.0}}
DIR = {"type": "WeightedSoftmaxClassificationLoss", "weight": 0.2,
       "args": {"dir_offset": 0.7853, "num_bins": 2, "anchor_yaw": [0, 90]}}


def _labels(g):
    pos = (torch.rand(B, H, W, A, generator=g) < 0.2).float()
    pos[0, 0, 0, 0] = 1.0
    anchors = torch.zeros(H, W, A, 7)
    anchors[..., 3:6] = torch.tensor([1.56, 1.6, 3.9])
    anchors[..., 1, 6] = math.pi / 2
    return {"pos_equal_one": pos, "neg_equal_one": 1 - pos,
            "targets": torch.randn(B, H, W, 7 * A, generator=g) * 0.3, "anchor_box": anchors}


def _perfect_reg(labels):
    return labels["targets"].permute(0, 3, 1, 2).clone()  # (B, 7A, H, W)


def _dir_bins(labels):
    """Spec: floor(wrap(anchor_yaw + d_yaw - offset, [0, 2pi)) / pi), per (B, H, W, A)."""
    yaw = labels["anchor_box"][..., 6].unsqueeze(0) + labels["targets"].view(B, H, W, A, 7)[..., 6]
    return torch.floor(torch.remainder(yaw - 0.7853, 2 * math.pi) / math.pi).long().clamp(0, 1)


def test_focal_value_by_hand():
    loss = LOSSES.get("point_pillar_loss")(ARGS)
    labels = {"pos_equal_one": torch.ones(1, 1, 1, 1), "neg_equal_one": torch.zeros(1, 1, 1, 1),
              "targets": torch.zeros(1, 1, 1, 7)}
    out = {"cls_preds": torch.zeros(1, 1, 1, 1), "reg_preds": torch.zeros(1, 7, 1, 1)}
    loss(out, labels)
    # p = 0.5: alpha 0.25 * (1 - p)^2 * ln 2, times pos_cls_weight 2 / one positive / B 1
    assert loss.loss_dict["cls_loss"] == pytest.approx(0.25 * 0.25 * math.log(2) * 2.0, rel=1e-5)
    assert loss.loss_dict["reg_loss"] == pytest.approx(0.0, abs=1e-7)


def test_smooth_l1_transition_and_batch_normaliser():
    loss = LOSSES.get("point_pillar_loss")(ARGS)
    labels = {"pos_equal_one": torch.ones(2, 1, 1, 1), "neg_equal_one": torch.zeros(2, 1, 1, 1),
              "targets": torch.zeros(2, 1, 1, 7)}
    reg = torch.zeros(2, 7, 1, 1)
    reg[0, 0] = 0.05  # quadratic: 0.5 * 0.05^2 * 9
    reg[1, 1] = 1.0  # linear: 1 - 0.5 / 9
    loss({"cls_preds": torch.zeros(2, 1, 1, 1), "reg_preds": reg}, labels)
    expect = (0.5 * 0.05 ** 2 * 9 + (1 - 0.5 / 9)) * 2.0 / 2  # x reg weight / B
    assert loss.loss_dict["reg_loss"] == pytest.approx(expect, rel=1e-5)


def test_perfect_reg_and_dir_give_zero():
    loss = LOSSES.get("point_pillar_loss")(dict(ARGS, dir=DIR))
    labels = _labels(torch.Generator().manual_seed(0))
    dir_logits = torch.nn.functional.one_hot(_dir_bins(labels), 2).float() * 40 - 20  # (B, H, W, A, 2)
    out = {"cls_preds": torch.zeros(B, A, H, W), "reg_preds": _perfect_reg(labels),
           "dir_preds": dir_logits.view(B, H, W, 2 * A).permute(0, 3, 1, 2)}
    total = loss(out, labels)
    assert loss.loss_dict["reg_loss"] == pytest.approx(0.0, abs=1e-6)
    assert loss.loss_dict["dir_loss"] == pytest.approx(0.0, abs=1e-6)
    assert float(total) == pytest.approx(loss.loss_dict["cls_loss"], rel=1e-5)


def test_loss_decreases_under_optimisation():
    loss = LOSSES.get("point_pillar_loss")(dict(ARGS, dir=DIR))
    labels = _labels(torch.Generator().manual_seed(1))
    params = {"cls_preds": torch.zeros(B, A, H, W, requires_grad=True),
              "reg_preds": torch.zeros(B, 7 * A, H, W, requires_grad=True),
              "dir_preds": torch.zeros(B, 2 * A, H, W, requires_grad=True)}
    opt = torch.optim.Adam(params.values(), lr=0.1)
    values = []
    for _ in range(10):
        opt.zero_grad()
        total = loss(params, labels)
        total.backward()
        opt.step()
        values.append(float(total.detach()))
    assert values[-1] < 0.5 * values[0]
    assert set(loss.loss_dict) == {"total_loss", "cls_loss", "reg_loss", "dir_loss"}
    assert all(isinstance(v, float) for v in loss.loss_dict.values())


def test_suffix_and_logging(capsys):
    loss = LOSSES.get("point_pillar_loss")(ARGS)
    labels = _labels(torch.Generator().manual_seed(2))
    out = {"cls_preds_single": torch.zeros(B, A, H, W), "reg_preds_single": torch.zeros(B, 7 * A, H, W)}
    loss(out, labels, suffix="_single")
    assert "total_loss_single" in loss.loss_dict and "cls_loss_single" in loss.loss_dict

    class Writer:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, name, value, step):
            self.scalars[name] = (value, step)

    w = Writer()
    loss.logging(3, 4, 10, writer=w, suffix="_single")
    line = capsys.readouterr().out.strip()
    assert line.count("\n") == 0 and "[epoch 3][5/10]_single" in line
    assert w.scalars["Regression_loss_single"][1] == 34 and "Confidence_loss_single" in w.scalars


def test_missing_anchor_box_is_a_clear_error():
    loss = LOSSES.get("point_pillar_loss")(dict(ARGS, dir=DIR))
    labels = _labels(torch.Generator().manual_seed(3))
    del labels["anchor_box"]
    out = {"cls_preds": torch.zeros(B, A, H, W), "reg_preds": torch.zeros(B, 7 * A, H, W),
           "dir_preds": torch.zeros(B, 2 * A, H, W)}
    with pytest.raises(DataError, match="anchor_box"):
        loss(out, labels)
