"""VoxelNet loss (OpenCOOD ``voxel_net_loss``; spec baselines §A3).

total = alpha * BCE over positive anchors / #pos + beta * BCE over negative anchors / #neg
        + reg * smooth-L1 (beta 1, summed) over the 7 box deltas of positive anchors / #pos,
counts and sums over the whole batch (not per sample). Anchors that are neither positive nor negative do not
count. Labels: ``pos_equal_one`` / ``neg_equal_one`` (B, H', W', A), ``targets`` (B, H', W', 7A).
"""
from collections import OrderedDict

import torch.nn.functional as F

from opencood.loss.base_loss import Criterion
from opencood.utils.config import Key, Schema
from opencood.utils.registry import LOSSES

EPS = 1e-6  # OpenCOOD's small_addon_for_BCE, in the denominators


@LOSSES.register("voxel_net_loss")
class VoxelNetLoss(Criterion):
    """Balanced binary cross-entropy + smooth-L1 regression.

    Args:
        args: YAML ``loss.args`` (see ``CONFIG``).
    """

    CONFIG = Schema({
        "alpha": Key(float, 1.5, "weight of the positive-anchor BCE"),
        "beta": Key(float, 1.0, "weight of the negative-anchor BCE"),
        "reg": Key(float, 2.0, "weight of the regression term"),
    }, name="voxel_net_loss")
    TB_NAMES = OrderedDict([("reg_loss", "Regression_loss"), ("conf_loss", "Confidence_loss")])

    def __init__(self, args):
        super().__init__()
        self.cfg = self.CONFIG.parse(args, "loss.args", (args or {}).get("_source", "config"))

    def loss_terms(self, output_dict, target_dict, suffix=""):
        logits = output_dict[f"cls_preds{suffix}"].permute(0, 2, 3, 1)  # (B, H', W', A)
        reg = output_dict[f"reg_preds{suffix}"].permute(0, 2, 3, 1)  # (B, H', W', 7A)
        pos = target_dict["pos_equal_one"].type_as(logits)  # (B, H', W', A)
        neg = target_dict["neg_equal_one"].type_as(logits)
        targets = target_dict["targets"].type_as(reg)  # (B, H', W', 7A)
        n_pos = pos.sum() + EPS
        # -log(sigmoid(x)) and -log(1 - sigmoid(x)), computed stably from the logits
        cls_pos = (pos * F.softplus(-logits)).sum() / n_pos
        cls_neg = (neg * F.softplus(logits)).sum() / (neg.sum() + EPS)
        pos_reg = pos.repeat_interleave(7, dim=-1)  # (B, H', W', 7A), anchor-major like the targets
        reg_loss = F.smooth_l1_loss(reg * pos_reg, targets * pos_reg, reduction="sum") / n_pos
        return OrderedDict([("conf_loss", self.cfg.alpha * cls_pos + self.cfg.beta * cls_neg),
                            ("reg_loss", self.cfg.reg * reg_loss)])
