"""The one typed input of every fusion module (``FUSION_MODULES``).

A fusion module is ``forward(inp: FusionInput) -> (fused (B, C, H, W), aux dict)``; ``aux`` carries extra
outputs (communication masks / rates of Where2comm-style methods; empty for ``att`` and ``max``), which the
model adds to its output dict. Fusion modules are built as ``cls(section, channels=C)`` with ``section`` =
``model.args[fusion_method]`` and ``C`` the channels of the features they get (from the model's channel
chain). They must not import the models (the models read the fusion registry when they are defined).
"""
from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass
class FusionInput:
    """What the agents of a batch hand to fusion.

    Attributes:
        features: (N, C, H, W) agent features, samples concatenated in ``record_len`` order, ego first; each
            map in its own agent's LiDAR frame.
        record_len: (B,) long, agents per sample.
        affine: (B, L, L, 2, 3) normalised pairwise affines: ``affine[b, i, j]`` = normalised T_{j<-i}
            (``normalize_pairwise_tfm`` of ``pairwise_t_matrix`` over ``lidar_range``); ``affine[b, 0, j]``
            resamples agent j's map into the ego frame (``warp_affine_simple``).
        pairwise_t_matrix: (B, L, L, 4, 4) metric ``T_{j<-i}`` (metres), or None.
        agent_types: N agent-type names (``"m1"``...) in batch order, or None (one type).
        confidence: optional (N, 1, H, W) per-agent confidence maps (e.g. the detection head's scores).
        prior: optional (N, 3) per-agent prior encoding ``[time delay (s), speed (m/s), infrastructure 0/1]``.
        lidar_range: (6,) metres ``[xmin, ymin, zmin, xmax, ymax, zmax]`` the maps cover (ego frame).
        cell: (metres along x, metres along y) of one feature cell, or None.
    """

    features: torch.Tensor
    record_len: torch.Tensor
    affine: torch.Tensor
    pairwise_t_matrix: Optional[torch.Tensor] = None
    agent_types: Optional[Sequence[str]] = None
    confidence: Optional[torch.Tensor] = None
    prior: Optional[torch.Tensor] = None
    lidar_range: Optional[Sequence[float]] = None
    cell: Optional[Sequence[float]] = None
