"""Where2comm's spatial-confidence communication (spec baselines §B): what each collaborator sends.

Each agent's confidence map is the max over anchors of sigmoid(its own cls map) (computed by the model with
the shared ``cls_head``), optionally smoothed by a fixed Gaussian. A cell is sent when its confidence exceeds
``thre``; the ego keeps all of its cells. The achieved communication rate is the mean of the masks over the
non-ego agents of the batch (fraction of cells sent, 0 when no collaborator is present).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from opencood.models.fuse_modules.warp import agent_batch_index
from opencood.utils.config import Key, Schema
from opencood.utils.errors import ConfigError

GAUSSIAN_SMOOTH = Schema({
    "k_size": Key(int, 5, "kernel size (odd) of the Gaussian smoothing of the confidence map"),
    "c_sigma": Key(float, 1.0, "sigma of the Gaussian, in cells"),
}, name="gaussian_smooth")

COMMUNICATION = Schema({
    "thre": Key(float, 0.01, "a cell is sent when its confidence exceeds this, in [0, 1]"),
    "gaussian_smooth": Key(dict, None, "smooth the confidence map before thresholding", schema=GAUSSIAN_SMOOTH),
    "round": Key(int, 1, "communication rounds (only 1)", choices=(1,)),
}, name="communication")


def gaussian_kernel(k_size, sigma):
    """(k, k) kernel exp(-(x^2 + y^2) / (2 sigma^2)) / (2 pi sigma), centred (Where2comm's un-normalised form)."""
    r = torch.arange(k_size, dtype=torch.float32) - (k_size - 1) / 2
    y, x = torch.meshgrid(r, r, indexing="ij")
    return torch.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2)) / (2 * math.pi * sigma)


class Communication(nn.Module):
    """Confidence -> binary request/send masks and the communication rate.

    Args:
        args: the ``communication`` section (see ``CONFIG``).
        where: dotted path of the section, for messages.
        source: config file, for messages.
    """

    CONFIG = COMMUNICATION

    def __init__(self, args, where="model.args.where2comm.communication", source="config"):
        super().__init__()
        cfg = self.CONFIG.parse(args, where, source)
        if not 0.0 <= cfg.thre <= 1.0:
            raise ConfigError(f"{source}: {where}.thre = {cfg.thre} must be in [0, 1]")
        self.thre = float(cfg.thre)
        self.smooth = None
        if cfg.gaussian_smooth is not None:
            k, sigma = int(cfg.gaussian_smooth.k_size), float(cfg.gaussian_smooth.c_sigma)
            if k < 1 or k % 2 == 0 or sigma <= 0:
                raise ConfigError(f"{source}: {where}.gaussian_smooth needs an odd k_size >= 1 and c_sigma > 0, "
                                  f"got k_size {k}, c_sigma {sigma}")
            self.register_buffer("kernel", gaussian_kernel(k, sigma)[None, None], persistent=False)
            self.smooth = k

    def forward(self, confidence, record_len):
        """Args:
            confidence: (N, 1, H, W) per-agent confidence in [0, 1], each in its own frame.
            record_len: (B,) agents per sample (ego first).

        Returns:
            masks (N, 1, H, W) float in {0, 1} (ego rows all ones) and the rate (0-d tensor): mean of the
            masks of the non-ego agents.
        """
        conf = confidence.detach()
        if self.smooth is not None:
            conf = F.conv2d(conf, self.kernel.to(conf.dtype), padding=(self.smooth - 1) // 2)
        masks = (conf > self.thre).to(confidence.dtype)  # (N, 1, H, W)
        _, local_idx = agent_batch_index(record_len, total=confidence.shape[0])
        is_ego = (local_idx == 0).view(-1, 1, 1, 1)
        masks = torch.where(is_ego, torch.ones_like(masks), masks)
        others = ~is_ego.view(-1)
        rate = masks[others].mean() if bool(others.any()) else masks.new_zeros(())
        return masks, rate
