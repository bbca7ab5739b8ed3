"""CoAlign's uncertainty loss: the KL-L2 and von Mises terms against their formulas, positives only."""
import math

import pytest
import torch
from scipy.special import i0

from opencood.loss.point_pillar_uncertainty_loss import PointPillarUncertaintyLoss, kl_l2, von_mises_nll

ARGS = {"cls": {"weight": 1.0}, "reg": {"weight": 2.0},
        "uncertainty": {"lambda_V": 0.0, "s0": 1.0, "weight": 1.0}}


def test_von_mises_term_is_the_negative_log_likelihood():
    d = torch.tensor([0.0, 0.3, -2.0, 3.0])
    s = torch.tensor([-2.0, 0.0, 1.0, 4.0])
    kappa = torch.exp(-s)
    nll = [math.log(2 * math.pi * i0(float(k))) - float(k) * math.cos(float(x)) for k, x in zip(kappa, d)]
    assert torch.allclose(von_mises_nll(d, s, 0.0, 1.0) + math.log(2 * math.pi), torch.tensor(nll), atol=1e-5)
    reg = von_mises_nll(d, s, 0.5, 1.0) - von_mises_nll(d, s, 0.0, 1.0)
    assert torch.allclose(reg, 0.5 * torch.nn.functional.elu(s - 1.0))
    assert torch.isfinite(von_mises_nll(d, torch.full((4,), -30.0), 0.0, 1.0)).all()  # large kappa: i0e is stable


def test_kl_l2_is_minimal_at_the_squared_residual():
    s = torch.tensor(math.log(0.25), requires_grad=True)
    kl_l2(torch.tensor(0.5), s).backward()
    assert abs(float(s.grad)) < 1e-6


def test_loss_counts_only_positive_anchors():
    torch.manual_seed(0)
    loss = PointPillarUncertaintyLoss(dict(ARGS))
    b, a, h, w = 1, 2, 4, 4
    pos = torch.zeros(b, h, w, a)
    pos[0, 1, 2, 1] = 1
    labels = {"pos_equal_one": pos, "neg_equal_one": 1 - pos, "targets": torch.zeros(b, h, w, 7 * a)}
    out = {"cls_preds": torch.zeros(b, a, h, w), "reg_preds": torch.zeros(b, 7 * a, h, w),
           "unc_preds": torch.randn(b, 3 * a, h, w)}
    base = float(loss.uncertainty_loss(out, labels))
    s = out["unc_preds"].permute(0, 2, 3, 1).reshape(-1, 3)[(1 * w + 2) * a + 1]  # the positive anchor's (x, y, yaw)
    expect = 0.5 * float(s[0] + s[1]) + float(von_mises_nll(torch.tensor(0.0), s[2], 0.0, 1.0))
    assert base == pytest.approx(expect, rel=1e-5)
    out["unc_preds"][0, 0, 0, 0] += 10.0  # a negative anchor's variance changes nothing
    assert float(loss.uncertainty_loss(out, labels)) == pytest.approx(base)
    assert "uncertainty_loss" in loss.loss_terms(out, labels)
