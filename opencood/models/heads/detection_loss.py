"""Loss terms of the anchor head (spec baselines §A9); the registered losses in ``opencood/loss`` call these.

Terms (each summed over anchors, then divided by the normaliser ``norm``, B samples by default):

* ``cls_loss``: sigmoid focal loss (alpha, gamma), weights ``pos_cls_weight`` on positives and 1 on negatives,
  divided by the number of positives of the sample (>= 1), times ``cls.weight``;
* ``reg_loss``: smooth-L1 (sigma: quadratic below 1/sigma^2) on the 7 box deltas with the sin-difference trick
  on yaw, positives only / #positives, times ``reg.weight``;
* ``dir_loss``: softmax cross-entropy on ``num_bins`` yaw bins, positives only / #positives, times
  ``dir.weight``.

Every anchor has one score (the probability of its own class), so the terms are the same for one or many
classes: which class an anchor stands for is fixed by the head's anchor layout.
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F

from opencood.models.heads.box_coding import direction_target


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    """Element-wise sigmoid focal loss.

    Args:
        logits: (...,) raw scores.
        targets: (...,) in {0, 1}, same shape.

    Returns:
        (...,) loss, not reduced.
    """
    p = torch.sigmoid(logits)
    alpha_w = targets * alpha + (1 - targets) * (1 - alpha)
    pt = targets * (1 - p) + (1 - targets) * p
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return alpha_w * pt.pow(gamma) * bce


def weighted_smooth_l1(preds, targets, sigma=3.0, weights=None):
    """Smooth-L1 with transition at 1/sigma^2; NaN targets contribute nothing.

    Args:
        preds, targets: (B, K, D).
        weights: (B, K) per-anchor weights or None.

    Returns:
        (B, K, D) loss.
    """
    targets = torch.where(torch.isnan(targets), preds, targets)
    beta = 1.0 / sigma ** 2
    diff = (preds - targets).abs()
    loss = torch.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta)
    if weights is not None:
        loss = loss * weights.unsqueeze(-1)
    return loss


def add_sin_difference(preds, targets, dim=6):
    """Replace yaw of preds/targets by sin(a)cos(b) and cos(a)sin(b) so their difference is sin(a - b)."""
    sin_pred = torch.sin(preds[..., dim:dim + 1]) * torch.cos(targets[..., dim:dim + 1])
    sin_tgt = torch.cos(preds[..., dim:dim + 1]) * torch.sin(targets[..., dim:dim + 1])
    preds = torch.cat([preds[..., :dim], sin_pred, preds[..., dim + 1:]], dim=-1)
    targets = torch.cat([targets[..., :dim], sin_tgt, targets[..., dim + 1:]], dim=-1)
    return preds, targets


def anchor_loss_terms(cls_preds, reg_preds, labels, cfg, norm, dir_preds=None):
    """cls / reg (/ dir) terms of one prediction set, weighted and normalised.

    Args:
        cls_preds: (B, A, H', W') logits.
        reg_preds: (B, 7A, H', W') box deltas.
        labels: ``pos_equal_one`` / ``neg_equal_one`` (B, H', W', A), ``targets`` (B, H', W', 7A), and
            ``anchor_box`` (H', W', A, 7) when ``dir_preds`` is given.
        cfg: parsed ``loss.args`` (``pos_cls_weight``, ``cls{alpha, gamma, weight}``, ``reg{sigma, weight}``,
            ``dir{weight, args{dir_offset, num_bins}}`` or None).
        norm: float divisor of every summed term.
        dir_preds: (B, num_bins*A, H', W') or None (no direction term).

    Returns:
        OrderedDict ``cls_loss``, ``reg_loss`` (+ ``dir_loss``) of scalar tensors.
    """
    b = cls_preds.shape[0]
    positives = labels["pos_equal_one"].reshape(b, -1) > 0  # (B, K), K = H'W'A
    negatives = labels["neg_equal_one"].reshape(b, -1) > 0
    pos = positives.type_as(cls_preds)
    n_pos = pos.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
    cls_weights = (pos * cfg.pos_cls_weight + negatives.type_as(cls_preds)) / n_pos  # (B, K)
    reg_weights = pos / n_pos  # (B, K)
    cls_logits = cls_preds.permute(0, 2, 3, 1).reshape(b, -1)  # (B, K) in (H', W', A) order
    cls_loss = sigmoid_focal_loss(cls_logits, pos, cfg.cls.alpha, cfg.cls.gamma)
    cls_loss = (cls_loss * cls_weights).sum() * cfg.cls.weight / norm
    box_preds = reg_preds.permute(0, 2, 3, 1).reshape(b, -1, 7)  # (B, K, 7)
    reg_targets = labels["targets"].reshape(b, -1, 7).type_as(box_preds)  # (B, K, 7)
    p_sin, t_sin = add_sin_difference(box_preds, reg_targets)
    reg_loss = weighted_smooth_l1(p_sin, t_sin, cfg.reg.sigma, reg_weights)
    reg_loss = reg_loss.sum() * cfg.reg.weight / norm
    terms = OrderedDict([("cls_loss", cls_loss), ("reg_loss", reg_loss)])
    if cfg.dir is not None and dir_preds is not None:
        terms["dir_loss"] = direction_loss(dir_preds, reg_targets, labels["anchor_box"], reg_weights,
                                           cfg.dir, norm)
    return terms


def direction_loss(dir_preds, reg_targets, anchor_box, weights, dir_cfg, norm):
    """Softmax CE over yaw bins of the positives.

    Args:
        dir_preds: (B, bins*A, H', W').
        reg_targets: (B, K, 7) encoded targets.
        anchor_box: (H', W', A, 7) anchors (radians in the last column).
        weights: (B, K) positives / #positives.
        dir_cfg: ``{weight, args{dir_offset, num_bins}}``.
        norm: normaliser.

    Returns:
        scalar tensor.
    """
    bins = int(dir_cfg.args.num_bins)
    b = dir_preds.shape[0]
    anchors = torch.as_tensor(anchor_box, dtype=reg_targets.dtype,
                              device=reg_targets.device).reshape(1, -1, 7).expand(b, -1, -1)  # (B, K, 7)
    target = direction_target(anchors, reg_targets, dir_cfg.args.dir_offset, bins)  # (B, K) bin indices
    logits = dir_preds.permute(0, 2, 3, 1).reshape(b, -1, bins)  # (B, K, bins)
    ce = F.cross_entropy(logits.reshape(-1, bins), target.reshape(-1).long(), reduction="none")
    return (ce.view(b, -1) * weights).sum() * dir_cfg.weight / norm
