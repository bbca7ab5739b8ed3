"""Detection (+ depth) loss + HEAL's per-level occupancy loss of Pyramid Fusion (spec baselines §C1).

Occupancy targets come from every agent's OWN anchor labels (``batch['ego']['label_dict_single']``, built when
``model.args.supervise_single`` is true): a cell at level l (``relative_downsample[l]`` x coarser than the
anchor grid) is positive when any anchor of any covered cell is positive (max-pool), negative when all of
them are negative (min-pool). Per level: sigmoid focal loss on ``occ_single_list[l]`` (N, 1, H_l, W_l),
weights ``pos_cls_weight`` * pos + neg, divided by each agent's positive count (>= 1), summed, divided by N,
times ``cls.weight`` and ``weight[l]`` (HEAL: [0.4, 0.2, 0.1]).
Without ``label_dict_single`` in the batch only the detection terms are computed.
"""
from collections import OrderedDict

import torch.nn.functional as F

from opencood.loss.point_pillar_depth_loss import PointPillarDepthLoss
from opencood.models.heads.detection_loss import sigmoid_focal_loss
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import LOSSES

PYRAMID_ARGS = Schema({
    "relative_downsample": Key(list, REQUIRED, "per level: cell of the occupancy map / anchor cell (HEAL [1, 2, 4])"),
    "weight": Key(list, REQUIRED, "per level: factor of its occupancy loss (HEAL [0.4, 0.2, 0.1])"),
}, name="pyramid loss")


def occupancy_targets(pos_equal_one, neg_equal_one, downsample):
    """Occupancy positives / negatives of one level.

    Args:
        pos_equal_one, neg_equal_one: (N, H', W', A) anchor labels in {0, 1}.
        downsample: int level cell / anchor cell.

    Returns:
        pos, neg (N, 1, H'/d, W'/d) float in {0, 1}.
    """
    pos = pos_equal_one.amax(dim=-1, keepdim=True).permute(0, 3, 1, 2).float()  # (N, 1, H', W') any anchor
    neg = neg_equal_one.amin(dim=-1, keepdim=True).permute(0, 3, 1, 2).float()  # all anchors negative
    if downsample > 1:
        pos = F.max_pool2d(pos, downsample)
        neg = -F.max_pool2d(-neg, downsample)  # min-pool
    return pos, neg


@LOSSES.register("point_pillar_pyramid_loss")
class PointPillarPyramidLoss(PointPillarDepthLoss):
    """:class:`PointPillarDepthLoss` + ``pyramid_loss`` (tensorboard ``Pyramid_loss``).

    Args:
        args: ``loss.args`` of the detection loss plus ``pyramid{relative_downsample, weight}``.
    """

    CONFIG = PointPillarDepthLoss.CONFIG.extend({
        "pyramid": Key(dict, REQUIRED, "per-level occupancy supervision", schema=PYRAMID_ARGS),
    }, name="pyramid loss")
    TB_NAMES = OrderedDict(list(PointPillarDepthLoss.TB_NAMES.items()) + [("pyramid_loss", "Pyramid_loss")])

    def __init__(self, args):
        super().__init__(args)
        pyramid = self.cfg.pyramid
        if len(pyramid.relative_downsample) != len(pyramid.weight):
            raise ConfigError(f"{args.get('_source', 'config')}: loss.args.pyramid: relative_downsample and "
                              f"weight differ in length")
        self.relative_downsample = [int(d) for d in pyramid.relative_downsample]
        self.level_weights = [float(w) for w in pyramid.weight]

    def occupancy_loss(self, occ_list, labels_single):
        """Weighted sum over levels of the occupancy focal loss (scalar tensor).

        Args:
            occ_list: [(N, 1, H_l, W_l)] logits, one per level.
            labels_single: per-agent ``pos_equal_one`` / ``neg_equal_one`` (N, H', W', A).
        """
        if len(occ_list) != len(self.relative_downsample):
            raise DataError(f"output occ_single_list has {len(occ_list)} levels but loss.args.pyramid."
                            f"relative_downsample has {len(self.relative_downsample)}")
        total = occ_list[0].new_zeros(())
        for occ, down, weight in zip(occ_list, self.relative_downsample, self.level_weights):
            pos, neg = occupancy_targets(labels_single["pos_equal_one"], labels_single["neg_equal_one"], down)
            if pos.shape != occ.shape:
                raise DataError(f"occupancy map {tuple(occ.shape)} does not match its labels {tuple(pos.shape)} "
                                f"(relative_downsample {down})")
            n = occ.shape[0]
            n_pos = pos.view(n, -1).sum(dim=1).clamp(min=1.0).view(n, 1, 1, 1)  # (N, 1, 1, 1)
            weights = (pos * self.cfg.pos_cls_weight + neg) / n_pos
            focal = sigmoid_focal_loss(occ, pos, self.cfg.cls.alpha, self.cfg.cls.gamma)
            total = total + weight * (focal * weights).sum() * self.cfg.cls.weight / n
        return total

    def loss_and_terms(self, output_dict, batch):
        """Detection on the fused labels + the occupancy loss on ``label_dict_single`` (when present)."""
        self.loss_tensors = {}
        total = self(output_dict, batch["label_dict"])
        single = batch.get("label_dict_single")
        if single is not None and "occ_single_list" in output_dict:
            occ = self.occupancy_loss(output_dict["occ_single_list"], single)
            self.loss_tensors["pyramid_loss"] = occ.detach()
            total = total + occ
            self.loss_tensors["total_loss"] = total.detach()
        return total, OrderedDict(self.loss_tensors)
