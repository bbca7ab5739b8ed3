"""Detection loss + CoAlign's uncertainty loss (``point_pillar_uncertainty_loss``, spec baselines §B CoAlign 2a).

On the positive anchors, with s = the predicted log-variance (``unc_preds``) and the residual of the box
coding (prediction - target, detached: the variances learn the error, they do not move the boxes):

* x, y (``xy_loss_type: l2``): the KL-divergence form of a Gaussian, 1/2 (exp(-s) d^2 + s), per coordinate;
* yaw (``angle_loss_type: von-mise``): the von Mises negative log-likelihood with concentration k = exp(-s),
  log(I0e(k) e^k) - k cos(d_yaw) + lambda_V ELU(s - s0) (``torch.special.i0e``; d_yaw wrapped to
  [-pi, pi) with ``limit_period``).

Each term is weighted like the regression loss (positives / #positives per sample), summed, divided by B
and multiplied by ``uncertainty.weight``; tensorboard ``Uncertainty_loss``.
"""
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F

from opencood.loss.point_pillar_loss import PointPillarLoss
from opencood.utils.config import Key, Schema
from opencood.utils.errors import DataError
from opencood.utils.registry import LOSSES

UNCERTAINTY_ARGS = Schema({
    "uncertainty_dim": Key(int, 3, "2 (x, y) or 3 (x, y, yaw); must equal model.args.uncertainty_dim",
                           choices=(2, 3)),
    "xy_loss_type": Key(str, "l2", "x/y term: the Gaussian KL form", choices=("l2",)),
    "angle_loss_type": Key(str, "von-mise", "yaw term: the von Mises NLL", choices=("von-mise",)),
    "lambda_V": Key(float, 0.001, "weight of the ELU(s - s0) regulariser of the yaw variance"),
    "s0": Key(float, 1.0, "log-variance above which the yaw regulariser grows"),
    "limit_period": Key(bool, True, "wrap the yaw residual to [-pi, pi)"),
    "weight": Key(float, 1.0, "factor of uncertainty_loss"),
}, name="uncertainty loss")


def kl_l2(residual, log_var):
    """1/2 (exp(-s) d^2 + s), element-wise."""
    return 0.5 * (torch.exp(-log_var) * residual ** 2 + log_var)


def von_mises_nll(residual, log_var, lambda_v, s0):
    """log(I0e(k) e^k) - k cos(d) + lambda_V ELU(s - s0) with k = exp(-s), element-wise (constant log 2pi dropped)."""
    kappa = torch.exp(-log_var)
    return torch.log(torch.special.i0e(kappa)) + kappa - kappa * torch.cos(residual) + lambda_v * F.elu(log_var - s0)


@LOSSES.register("point_pillar_uncertainty_loss")
class PointPillarUncertaintyLoss(PointPillarLoss):
    """:class:`PointPillarLoss` + ``uncertainty_loss``.

    Args:
        args: ``loss.args`` of the detection loss plus ``uncertainty{...}`` (see ``UNCERTAINTY_ARGS``).
    """

    CONFIG = PointPillarLoss.CONFIG.extend({
        "uncertainty": Key(dict, {}, "uncertainty terms", schema=UNCERTAINTY_ARGS),
    }, name="uncertainty loss")
    TB_NAMES = OrderedDict(list(PointPillarLoss.TB_NAMES.items()) + [("uncertainty_loss", "Uncertainty_loss")])

    def uncertainty_loss(self, output_dict, target_dict):
        """Scalar uncertainty term of a batch (see module docstring)."""
        cfg = self.cfg.uncertainty
        unc = output_dict.get("unc_preds")
        if unc is None:
            raise DataError("output: missing key 'unc_preds' (the uncertainty loss needs point_pillar_uncertainty)")
        b = unc.shape[0]
        log_var = unc.permute(0, 2, 3, 1).reshape(b, -1, cfg.uncertainty_dim)  # (B, K, dim), K = H'W'A
        pred = output_dict["reg_preds"].permute(0, 2, 3, 1).reshape(b, -1, 7).detach()  # (B, K, 7)
        target = target_dict["targets"].reshape(b, -1, 7).type_as(pred)
        if log_var.shape[1] != pred.shape[1]:
            raise DataError(f"unc_preds has {log_var.shape[1]} anchors x {cfg.uncertainty_dim} but reg_preds "
                            f"{pred.shape[1]} anchors: check uncertainty_dim")
        pos = (target_dict["pos_equal_one"].reshape(b, -1) > 0).type_as(pred)  # (B, K)
        weights = pos / pos.sum(dim=1, keepdim=True).clamp(min=1.0)
        residual = pred - target
        terms = kl_l2(residual[..., :2], log_var[..., :2]).sum(dim=-1)  # (B, K)
        if cfg.uncertainty_dim == 3:
            d_yaw = residual[..., 6]
            if cfg.limit_period:
                d_yaw = torch.remainder(d_yaw + math.pi, 2 * math.pi) - math.pi
            terms = terms + von_mises_nll(d_yaw, log_var[..., 2], cfg.lambda_V, cfg.s0)
        return (terms * weights).sum() * cfg.weight / float(self.normalizer(output_dict, target_dict))

    def loss_terms(self, output_dict, target_dict, suffix=""):
        terms = super().loss_terms(output_dict, target_dict, suffix)
        if suffix == "":
            terms["uncertainty_loss"] = self.uncertainty_loss(output_dict, target_dict)
        return terms
