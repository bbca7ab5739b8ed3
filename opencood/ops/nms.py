"""Greedy rotated non-maximum suppression on BEV polygons (torch, CPU or CUDA)."""
import numpy as np
import torch

from opencood.ops.iou import corners_iou_bev


def nms_rotated(corners, scores, iou_thresh, top_k=1000):
    """Greedy NMS with rotated BEV IoU, as the reference's shapely loop but vectorized.

    Boxes are ranked by score (descending, ties keep input order); only the ``top_k`` best are
    considered. Walking down the ranking, a box is kept unless its IoU with an already kept box is
    strictly greater than ``iou_thresh``. The IoU matrix of the candidates is computed once in torch
    (on the input's device); the greedy walk runs on a CPU bool matrix.

    Args:
        corners: (N, 8, 3) box corners (bottom face 0-3 used) or (N, 4, 2) BEV quads, metres.
        scores: (N,) confidence.
        iou_thresh: suppression threshold (the reference's ``nms_thresh``, e.g. 0.15).
        top_k: number of best-scoring boxes that enter NMS.

    Returns:
        LongTensor (K,) of kept indices into ``corners``, sorted by score descending, on the device of
        ``scores``.
    """
    if corners.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=scores.device)
    order = torch.sort(scores, descending=True, stable=True).indices[:top_k]  # (K,)
    quads = corners[order][:, :4, :2]  # (K, 4, 2)
    overlap = (corners_iou_bev(quads, quads) > iou_thresh).cpu().numpy()  # (K, K)
    suppressed = np.zeros(order.shape[0], dtype=bool)
    keep = []
    for i in range(order.shape[0]):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlap[i]
    return order[torch.as_tensor(keep, dtype=torch.long, device=order.device)]
