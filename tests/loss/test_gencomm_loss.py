"""point_pillar_gencomm_loss = point_pillar_depth_loss + generate_weight * MSE(gt_feature, pred_feature)."""
import pytest
import torch

from opencood.utils.errors import DataError
from opencood.utils.registry import LOSSES


B, H, W, A = 2, 4, 4, 2
ARGS = {"pos_cls_weight": 2.0,
        "cls": {"type": "SigmoidFocalLoss", "alpha": 0.25, "gamma": 2.0, "weight": 2.0},
        "reg": {"type": "WeightedSmoothL1Loss", "sigma": 3.0, "codewise": True, "weight": 2.0}}


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = (torch.rand(B, H, W, A, generator=g) < 0.2).float()
    labels = {"pos_equal_one": pos, "neg_equal_one": 1 - pos,
              "targets": torch.randn(B, H, W, 7 * A, generator=g)}
    out = {"cls_preds": torch.randn(B, A, H, W, generator=g), "reg_preds": torch.randn(B, 7 * A, H, W, generator=g),
           "pred_feature": torch.randn(3, 8, H, W, generator=g), "gt_feature": torch.rand(3, 8, H, W, generator=g)}
    return out, labels


def test_total_is_detection_plus_weighted_mse():
    out, labels = _inputs()
    gen = LOSSES.get("point_pillar_gencomm_loss")(dict(ARGS, generate_weight=0.5))
    det = LOSSES.get("point_pillar_depth_loss")(ARGS)
    total = gen(out, labels)
    det_total = det(out, labels)
    mse = ((out["pred_feature"] - out["gt_feature"]) ** 2).mean()
    torch.testing.assert_close(total, det_total + 0.5 * mse)
    assert gen.loss_dict["gen_loss"] == pytest.approx(float(0.5 * mse), rel=1e-6)
    assert gen.loss_dict["cls_loss"] == pytest.approx(det.loss_dict["cls_loss"])


def test_gen_loss_logged_under_gen_loss_name():
    out, labels = _inputs(1)
    loss = LOSSES.get("point_pillar_gencomm_loss")(ARGS)
    loss(out, labels)

    class Writer:
        scalars = {}

        def add_scalar(self, name, value, step):
            self.scalars[name] = value

    loss.logging(0, 0, 1, writer=Writer())
    assert Writer.scalars["Gen_loss"] == pytest.approx(loss.loss_dict["gen_loss"])
    assert Writer.scalars["Gen_loss"] == pytest.approx(
        float(((out["pred_feature"] - out["gt_feature"]) ** 2).mean()), rel=1e-6)


def test_gradient_reaches_both_features_and_single_pass_has_no_gen_term():
    out, labels = _inputs(2)
    out["pred_feature"].requires_grad_(True)
    out["gt_feature"].requires_grad_(True)  # not detached, as the reference
    loss = LOSSES.get("point_pillar_gencomm_loss")(ARGS)
    loss(out, labels).backward()
    assert out["pred_feature"].grad.abs().sum() > 0 and out["gt_feature"].grad.abs().sum() > 0
    single = {"cls_preds_single": out["cls_preds"], "reg_preds_single": out["reg_preds"]}
    loss(dict(out, **single), labels, suffix="_single")
    assert "gen_loss_single" not in loss.loss_dict


def test_missing_features_is_a_clear_error():
    out, labels = _inputs(3)
    del out["pred_feature"]
    with pytest.raises(DataError, match="pred_feature"):
        LOSSES.get("point_pillar_gencomm_loss")(ARGS)(out, labels)
