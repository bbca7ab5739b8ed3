"""Detection loss + depth supervision of Lift-Splat-Shoot cameras (spec baselines §A5, §A9).

For every model output ``depth_items_mX = (depth_logits (M, D, fH, fW), gt_bins (M, fH, fW) long)`` the
softmax focal loss (alpha 0.25, gamma 2) is averaged over all feature cells and multiplied by
``loss.args.depth.weight`` (1.0). Depth is supervised once per step, with the fused (suffix ``''``)
predictions, not again for the ``_single`` pass.
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F

from opencood.loss.point_pillar_loss import PointPillarLoss
from opencood.utils.config import Key, Schema
from opencood.utils.errors import DataError
from opencood.utils.registry import LOSSES

DEPTH_PREFIX = "depth_items"


def depth_focal_loss(depth_logits, gt_bins, alpha=0.25, gamma=2.0):
    """Softmax focal loss over depth bins, averaged over cells.

    Args:
        depth_logits: (M, D, fH, fW) raw scores.
        gt_bins: (M, fH, fW) long target bins in [0, D).

    Returns:
        scalar: mean over cells of ``−alpha · (1 − p_t)^gamma · log p_t``.
    """
    log_p = F.log_softmax(depth_logits, dim=1)  # (M, D, fH, fW)
    log_pt = log_p.gather(1, gt_bins.unsqueeze(1).long()).squeeze(1)  # (M, fH, fW)
    return (-alpha * (1.0 - log_pt.exp()).pow(gamma) * log_pt).mean()


@LOSSES.register("point_pillar_depth_loss")
class PointPillarDepthLoss(PointPillarLoss):
    """:class:`PointPillarLoss` + ``depth_loss`` (tensorboard ``Depth_loss``).

    Args:
        args: ``loss.args`` of PointPillarLoss plus optional ``depth{weight: 1.0, alpha: 0.25, gamma: 2.0}``.
    """

    CONFIG = PointPillarLoss.CONFIG.extend({
        "depth": Key(dict, {}, "depth supervision of LSS cameras", schema=Schema({
            "weight": Key(float, 1.0, "factor of depth_loss"),
            "alpha": Key(float, 0.25, "focal-loss weight"),
            "gamma": Key(float, 2.0, "focal-loss focusing exponent"),
        }, name="depth loss")),
    }, name="detection + depth loss")
    TB_NAMES = OrderedDict(list(PointPillarLoss.TB_NAMES.items()) + [("depth_loss", "Depth_loss")])

    def __init__(self, args):
        super().__init__(args)
        depth = self.cfg.depth
        self.depth_weight = float(depth.weight)
        self.depth_alpha = float(depth.alpha)
        self.depth_gamma = float(depth.gamma)

    def depth_loss(self, output_dict):
        """Sum over ``depth_items_mX`` of the weighted depth focal loss, or None without depth items."""
        losses = []
        for key in sorted(k for k in output_dict if k.startswith(DEPTH_PREFIX)):
            depth_logits, gt_bins = output_dict[key]
            if gt_bins is None:
                raise DataError(f"output['{key}']: no ground-truth depth (depth supervision needs 'depth' "
                                f"in input_source)")
            losses.append(depth_focal_loss(depth_logits, gt_bins, self.depth_alpha, self.depth_gamma))
        if not losses:
            return None
        return torch.stack(losses).sum() * self.depth_weight

    def loss_terms(self, output_dict, target_dict, suffix=""):
        terms = super().loss_terms(output_dict, target_dict, suffix)
        if suffix == "":
            depth = self.depth_loss(output_dict)
            # no camera agent in this batch: log 0 rather than the previous step's value
            terms["depth_loss"] = depth if depth is not None else next(iter(terms.values())).new_zeros(())
        return terms
