"""Anchor-based detection loss of PointPillars-style heads (spec baselines §A9).

Terms (each summed over anchors, then divided by the normaliser, B samples by default):
* ``cls_loss``: sigmoid focal loss (alpha, gamma), weights ``pos_cls_weight`` on positives and 1 on negatives,
  divided by the number of positives of the sample (>= 1), times ``cls.weight``;
* ``reg_loss``: smooth-L1 (sigma: quadratic below 1/sigma^2) on the 7 box deltas with the sin-difference trick
  on yaw, positives only / #positives, times ``reg.weight``;
* ``dir_loss``: softmax cross-entropy on ``num_bins`` yaw bins, positives only / #positives, times
  ``dir.weight`` (when a ``dir`` section is configured and the model outputs ``dir_preds``).
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from opencood.data_utils.post_processor.voxel_postprocessor import direction_target
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import LOSSES


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


@LOSSES.register("point_pillar_loss")
class PointPillarLoss(nn.Module):
    """Focal classification + smooth-L1 regression + direction-bin loss.

    Args:
        args: YAML ``loss.args``: ``pos_cls_weight``, ``cls{type, alpha, gamma, weight}``,
            ``reg{type, sigma, codewise, weight}``, optional ``dir{type, weight, args{dir_offset, num_bins,
            anchor_yaw}}``.

    Subclasses add terms by overriding :meth:`loss_terms` (call super, add entries) and extend
    ``TB_NAMES`` with their tensorboard scalar names.
    """

    TB_NAMES = OrderedDict([("reg_loss", "Regression_loss"), ("cls_loss", "Confidence_loss"),
                            ("dir_loss", "Dir_loss")])

    def __init__(self, args):
        super().__init__()
        for key in ("cls", "reg"):
            if key not in args:
                raise ConfigError(f"loss.args: missing key '{key}'")
        self.pos_cls_weight = float(args.get("pos_cls_weight", 1.0))
        self.cls = args["cls"]
        self.reg = args["reg"]
        self.dir = args.get("dir")
        if self.dir is not None and "args" not in self.dir:
            raise ConfigError("loss.args: missing key 'dir.args' (dir_offset, num_bins)")
        self.loss_tensors = {}

    @property
    def loss_dict(self):
        """The last values of every logged term as Python floats (reading them waits for the device)."""
        return {k: float(v) for k, v in self.loss_tensors.items()}

    def normalizer(self, output_dict, target_dict):
        """Divisor of every summed term: the number of samples B (``pos_equal_one.shape[0]``).

        Override to normalise differently (e.g. by the total number of agents).
        """
        return target_dict["pos_equal_one"].shape[0]

    def detection_terms(self, output_dict, target_dict, suffix=""):
        """cls / reg / dir terms (scalar tensors, already weighted and normalised)."""
        cls_preds = output_dict[f"cls_preds{suffix}"]  # (B, A, H, W)
        reg_preds = output_dict[f"reg_preds{suffix}"]  # (B, 7A, H, W)
        b = cls_preds.shape[0]
        norm = float(self.normalizer(output_dict, target_dict))

        positives = target_dict["pos_equal_one"].reshape(b, -1) > 0  # (B, K), K = H*W*A
        negatives = target_dict["neg_equal_one"].reshape(b, -1) > 0
        pos = positives.type_as(cls_preds)
        n_pos = pos.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
        cls_weights = (pos * self.pos_cls_weight + negatives.type_as(cls_preds)) / n_pos  # (B, K)
        reg_weights = pos / n_pos  # (B, K)

        cls_logits = cls_preds.permute(0, 2, 3, 1).reshape(b, -1)  # (B, K) in (H, W, A) order
        cls_loss = sigmoid_focal_loss(cls_logits, pos, self.cls.get("alpha", 0.25), self.cls.get("gamma", 2.0))
        cls_loss = (cls_loss * cls_weights).sum() * self.cls["weight"] / norm

        box_preds = reg_preds.permute(0, 2, 3, 1).reshape(b, -1, 7)  # (B, K, 7)
        reg_targets = target_dict["targets"].reshape(b, -1, 7).type_as(box_preds)  # (B, K, 7)
        p_sin, t_sin = add_sin_difference(box_preds, reg_targets)
        reg_loss = weighted_smooth_l1(p_sin, t_sin, self.reg.get("sigma", 3.0), reg_weights)
        reg_loss = reg_loss.sum() * self.reg["weight"] / norm

        terms = OrderedDict([("cls_loss", cls_loss), ("reg_loss", reg_loss)])
        dir_key = f"dir_preds{suffix}"
        if self.dir is not None and dir_key in output_dict:
            terms["dir_loss"] = self.direction_loss(output_dict[dir_key], reg_targets, target_dict,
                                                    reg_weights, norm)
        return terms

    def direction_loss(self, dir_preds, reg_targets, target_dict, weights, norm):
        """Softmax CE over yaw bins.

        Args:
            dir_preds: (B, bins*A, H, W).
            reg_targets: (B, K, 7) encoded targets.
            target_dict: label dict with ``anchor_box`` (H, W, A, 7) (hwl order, radians).
            weights: (B, K) positives / #positives.
            norm: normaliser.
        """
        if "anchor_box" not in target_dict:
            raise DataError("label_dict: missing key 'anchor_box' (needed by the direction loss)")
        dargs = self.dir["args"]
        bins = int(dargs["num_bins"])
        b = dir_preds.shape[0]
        anchors = torch.as_tensor(target_dict["anchor_box"], dtype=reg_targets.dtype,
                                  device=reg_targets.device).reshape(1, -1, 7).expand(b, -1, -1)  # (B, K, 7)
        target = direction_target(anchors, reg_targets, dargs["dir_offset"], bins)  # (B, K) bin indices
        logits = dir_preds.permute(0, 2, 3, 1).reshape(b, -1, bins)  # (B, K, bins)
        ce = F.cross_entropy(logits.reshape(-1, bins), target.reshape(-1).long(), reduction="none")
        return (ce.view(b, -1) * weights).sum() * self.dir["weight"] / norm

    def loss_terms(self, output_dict, target_dict, suffix=""):
        """All terms of this loss as an ordered dict of scalar tensors (subclasses extend it)."""
        return self.detection_terms(output_dict, target_dict, suffix)

    def forward(self, output_dict, target_dict, suffix=""):
        """Args:
            output_dict: model output (``cls_preds{suffix}``, ``reg_preds{suffix}``, ``dir_preds{suffix}``).
            target_dict: ``batch['ego']['label_dict']`` (``label_dict_single`` with suffix ``_single``):
                pos_equal_one / neg_equal_one (B, H, W, A), targets (B, H, W, 7A), anchor_box (H, W, A, 7).
            suffix: key suffix of the predictions and of the logged names.

        Returns:
            scalar total loss. ``self.loss_tensors`` gets detached 0-d tensors ``total_loss{suffix}`` and each
            term (``self.loss_dict`` gives them as floats): nothing here waits for the device, so a GPU step
            stays asynchronous until the caller reads a value.
        """
        terms = self.loss_terms(output_dict, target_dict, suffix)
        total = sum(terms.values())
        self.loss_tensors[f"total_loss{suffix}"] = total.detach()
        self.loss_tensors.update({f"{k}{suffix}": v.detach() for k, v in terms.items()})
        return total

    def logging(self, epoch, batch_id, batch_len, writer=None, suffix=""):
        """Print one line with the last losses and write tensorboardX scalars (step = epoch*batch_len+batch_id)."""
        values = self.loss_dict
        parts = [f"[epoch {epoch}][{batch_id + 1}/{batch_len}]{suffix}",
                 f"Loss: {values.get(f'total_loss{suffix}', 0.0):.4f}"]
        for key, name in self.TB_NAMES.items():
            value = values.get(f"{key}{suffix}")
            if value is None:
                continue
            parts.append(f"{key.replace('_loss', '')}: {value:.4f}")
            if writer is not None:
                writer.add_scalar(f"{name}{suffix}", value, epoch * batch_len + batch_id)
        print(" || ".join(parts))
