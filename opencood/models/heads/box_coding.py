"""Box coding of the anchor head: residuals of boxes w.r.t. anchors and the direction bins of their yaw.

Boxes are 7-vectors ``(x, y, z, h, w, l, yaw)`` (``order='hwl'``) or ``(x, y, z, l, w, h, yaw)``
(``order='lwh'``), metres and radians, in the LiDAR frame of the agent the anchors belong to.

Box coding (per anchor ``a``, ``d_a = sqrt(w_a^2 + l_a^2)``)::

    dx = (x - x_a) / d_a,  dy = (y - y_a) / d_a,  dz = (z - z_a) / h_a,
    dh = ln(h / h_a),      dw = ln(w / w_a),      dl = ln(l / l_a),     dyaw = yaw - yaw_a

Direction bins: the regression target ``dyaw`` (compared through ``sin``) cannot tell a heading from its
opposite; a ``num_bins``-way classifier on ``wrap(yaw - dir_offset, [0, 2pi))`` resolves it at decoding.
Everything is plain torch, so it runs on whatever device its inputs live on.
"""
import math

import torch

from opencood.utils.errors import ConfigError

# Column indices of (h, w, l) in a 7-vector of each box order.
_DIMS_INDEX = {"hwl": (3, 4, 5), "lwh": (5, 4, 3)}


def dims_index(order, key="postprocess.order"):
    """``(ih, iw, il)`` column indices of a box order, or a ConfigError naming ``key``."""
    if order not in _DIMS_INDEX:
        raise ConfigError(f"config: key '{key}' must be 'hwl' or 'lwh', got {order!r}")
    return _DIMS_INDEX[order]


def limit_period(val, offset, period):
    """Wrap angles into ``[-offset * period, (1 - offset) * period)``.

    Args:
        val: tensor of angles, radians.
        offset: 0 gives ``[0, period)``, 0.5 gives ``[-period / 2, period / 2)``.
        period: radians.

    Returns:
        tensor like ``val``.
    """
    return val - torch.floor(val / period + offset) * period


def encode_boxes(boxes, anchors, order="hwl"):
    """Regression targets of boxes relative to their anchors.

    Args:
        boxes: (..., 7) ground-truth boxes, ``order`` layout.
        anchors: (..., 7) anchors, broadcastable to ``boxes``.
        order: ``'hwl'`` or ``'lwh'``.

    Returns:
        (..., 7) deltas ``(dx, dy, dz, d-dims as log ratios in the same column order, dyaw)``.
    """
    ih, iw, il = dims_index(order)
    diag = torch.sqrt(anchors[..., iw] ** 2 + anchors[..., il] ** 2)  # (...)
    dxy = (boxes[..., 0:2] - anchors[..., 0:2]) / diag[..., None]  # (..., 2)
    dz = (boxes[..., 2:3] - anchors[..., 2:3]) / anchors[..., ih:ih + 1]  # (..., 1)
    ddims = torch.log(boxes[..., 3:6] / anchors[..., 3:6])  # (..., 3)
    dyaw = boxes[..., 6:7] - anchors[..., 6:7]  # (..., 1)
    return torch.cat([dxy, dz, ddims, dyaw], dim=-1)


def decode_boxes(deltas, anchors, order="hwl"):
    """Inverse of :func:`encode_boxes`.

    Args:
        deltas: (..., 7) regression outputs.
        anchors: (..., 7) anchors, broadcastable to ``deltas``.
        order: ``'hwl'`` or ``'lwh'``.

    Returns:
        (..., 7) boxes in ``order`` layout, in the anchors' frame.
    """
    ih, iw, il = dims_index(order)
    diag = torch.sqrt(anchors[..., iw] ** 2 + anchors[..., il] ** 2)  # (...)
    xy = deltas[..., 0:2] * diag[..., None] + anchors[..., 0:2]  # (..., 2)
    z = deltas[..., 2:3] * anchors[..., ih:ih + 1] + anchors[..., 2:3]  # (..., 1)
    dims = torch.exp(deltas[..., 3:6]) * anchors[..., 3:6]  # (..., 3)
    yaw = deltas[..., 6:7] + anchors[..., 6:7]  # (..., 1)
    return torch.cat([xy, z, dims, yaw], dim=-1)


def direction_target(anchors, reg_targets, dir_offset, num_bins):
    """Direction-bin class of every anchor's target yaw (the loss's target, the decoder's inverse).

    bin = floor(wrap(yaw_a + dyaw - dir_offset, [0, 2pi)) / (2pi / num_bins)), clamped to the bins.

    Args:
        anchors: (B, N, 7), (N, 7) or (H', W', A, 7) anchors with N = H'W'A (only yaw is used).
        reg_targets: (B, N, 7) regression targets (``dyaw`` in the last column).
        dir_offset: radians (0.7853 in the configs).
        num_bins: number of direction bins (2).

    Returns:
        (B, N) long bin indices.
    """
    anchor_yaw = anchors[..., 6]
    if anchors.dim() != reg_targets.dim():
        anchor_yaw = anchor_yaw.reshape(-1)  # (N,)
    yaw = reg_targets[..., 6] + anchor_yaw.to(reg_targets)  # (B, N)
    offset_yaw = limit_period(yaw - dir_offset, 0.0, 2 * math.pi)
    bins = torch.floor(offset_yaw / (2 * math.pi / num_bins)).long()
    return bins.clamp(min=0, max=num_bins - 1)


def decode_direction(yaw, dir_bins, dir_offset, num_bins):
    """Resolve the heading ambiguity of decoded yaws with the direction head's bins.

    yaw' = wrap(yaw - dir_offset, [0, period)) + dir_offset + period * bin, then wrapped to [-pi, pi),
    with period = 2pi / num_bins.

    Args:
        yaw: (K,) decoded yaws, radians.
        dir_bins: (K,) predicted bin indices.
        dir_offset: radians.
        num_bins: number of direction bins.

    Returns:
        (K,) yaws in [-pi, pi).
    """
    period = 2 * math.pi / num_bins
    rot = limit_period(yaw - dir_offset, 0.0, period)
    yaw = rot + dir_offset + period * dir_bins.to(yaw.dtype)
    return limit_period(yaw, 0.5, 2 * math.pi)
