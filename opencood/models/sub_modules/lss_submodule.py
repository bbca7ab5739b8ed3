"""Building blocks of Lift-Splat-Shoot (spec baselines §A5): depth bins, image encoders, frustum geometry, splat.

Frames: images use OpenCV camera axes (x right, y down, z forward); ``rots``/``trans`` map camera points to
the agent's LiDAR frame (CARLA/UE4, x forward, y right, z up), in metres. The BEV grid is the LiDAR frame
discretised by ``grid_conf`` (rows = y, columns = x).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from opencood.utils.errors import ConfigError

DEPTH_MODES = ("UD", "LID", "SID")


def gen_dx_bx(xbound, ybound, zbound):
    """BEV grid description from ``grid_conf`` bounds ``[min, max, step]`` (metres).

    Returns:
        dx: (3,) cell size (x, y, z); bx: (3,) centre of the first cell; nx: (3,) long cell counts.
    """
    bounds = [xbound, ybound, zbound]
    dx = torch.tensor([row[2] for row in bounds], dtype=torch.float32)
    bx = torch.tensor([row[0] + row[2] / 2.0 for row in bounds], dtype=torch.float32)
    nx = torch.tensor([int(round((row[1] - row[0]) / row[2])) for row in bounds], dtype=torch.long)
    return dx, bx, nx


def depth_bin_values(d_min, d_max, num_bins, mode):
    """Depth (metres) at the start of every bin, as the frustum's depth samples.

    LID: ``d_k = d_min + b·k(k+1)/2`` with ``b = 2(d_max − d_min) / (D(D+1))``; UD: uniform steps of
    ``(d_max − d_min)/D``; SID: uniform in ``log(1 + d)``.

    Returns:
        (D,) float32 tensor.
    """
    k = torch.arange(num_bins, dtype=torch.float64)
    if mode == "UD":
        values = d_min + k * (d_max - d_min) / num_bins
    elif mode == "LID":
        bin_size = 2.0 * (d_max - d_min) / (num_bins * (num_bins + 1))
        values = d_min + bin_size * k * (k + 1) / 2.0
    elif mode == "SID":
        lo, hi = math.log1p(d_min), math.log1p(d_max)
        values = torch.expm1(lo + k * (hi - lo) / num_bins)
    else:
        raise ConfigError(f"model.args.encoder_args.grid_conf: unknown depth mode '{mode}'; "
                          f"known: {', '.join(DEPTH_MODES)}")
    return values.float()


def bin_depths(depth, d_min, d_max, num_bins, mode):
    """Bin index of metric depths, the inverse of :func:`depth_bin_values` (floor), clamped to valid bins.

    Depths are clamped to ``[d_min, d_max]`` first, so every cell gets a bin in ``[0, num_bins − 1]``.

    Args:
        depth: (...) depth in metres.

    Returns:
        (...) long bin indices.
    """
    depth = depth.clamp(min=d_min, max=d_max)
    if mode == "UD":
        index = (depth - d_min) / ((d_max - d_min) / num_bins)
    elif mode == "LID":
        bin_size = 2.0 * (d_max - d_min) / (num_bins * (num_bins + 1))
        index = -0.5 + 0.5 * torch.sqrt(1.0 + 8.0 * (depth - d_min) / bin_size)
    elif mode == "SID":
        lo, hi = math.log1p(d_min), math.log1p(d_max)
        index = num_bins * (torch.log1p(depth) - lo) / (hi - lo)
    else:
        raise ConfigError(f"model.args.encoder_args.grid_conf: unknown depth mode '{mode}'; "
                          f"known: {', '.join(DEPTH_MODES)}")
    # small tolerance so a depth exactly on a bin edge is not pushed into the bin below by rounding
    return torch.floor(index + 1e-4).long().clamp(0, num_bins - 1)


def create_frustum(final_dim, downsample, depth_values):
    """Frustum of (u, v, d) samples in the augmented image.

    (u, v) are the pixel coordinates of the feature-cell centres, ``k·ds + (ds − 1)/2`` (pixel centres at
    integer coordinates), so geometry and the depth ground truth (sampled at ``k·ds + ds//2``) refer to the
    same image points.

    Args:
        final_dim: (fH_img, fW_img) size of the augmented image in pixels.
        downsample: image-to-feature stride.
        depth_values: (D,) depth samples in metres.

    Returns:
        (D, fH, fW, 3) float32 tensor (u, v, depth).
    """
    img_h, img_w = int(final_dim[0]), int(final_dim[1])
    f_h, f_w = img_h // downsample, img_w // downsample
    num_d = depth_values.numel()
    offset = (downsample - 1) / 2.0
    us = (torch.arange(f_w, dtype=torch.float32) * downsample + offset).view(1, 1, f_w).expand(num_d, f_h, f_w)
    vs = (torch.arange(f_h, dtype=torch.float32) * downsample + offset).view(1, f_h, 1).expand(num_d, f_h, f_w)
    ds = depth_values.float().view(num_d, 1, 1).expand(num_d, f_h, f_w)
    return torch.stack((us, vs, ds), dim=-1)  # (D, fH, fW, 3)


def frustum_to_lidar(frustum, rots, trans, intrins, post_rots, post_trans):
    """LiDAR-frame xyz of every frustum sample of every camera.

    Undo the image augmentation (``p_aug = post_rot · p + post_tran``), lift (u, v, d) to (u·d, v·d, d),
    apply ``K⁻¹`` (OpenCV camera coordinates), then camera -> LiDAR by ``rots``/``trans``.

    Args:
        frustum: (D, fH, fW, 3) from :func:`create_frustum`.
        rots: (B, N, 3, 3) camera->LiDAR rotation; trans: (B, N, 3) translation (metres).
        intrins: (B, N, 3, 3) intrinsics of the original image.
        post_rots: (B, N, 3, 3), post_trans: (B, N, 3) augmentation (pixels).

    Returns:
        (B, N, D, fH, fW, 3) xyz in the LiDAR frame (metres).
    """
    b, n = trans.shape[:2]
    points = frustum.view(1, 1, *frustum.shape) - post_trans.view(b, n, 1, 1, 1, 3)  # (B, N, D, fH, fW, 3)
    points = torch.linalg.inv(post_rots).view(b, n, 1, 1, 1, 3, 3).matmul(points.unsqueeze(-1))
    points = torch.cat((points[..., :2, :] * points[..., 2:3, :], points[..., 2:3, :]), dim=-2)  # (.., 3, 1)
    combine = rots.matmul(torch.linalg.inv(intrins))  # (B, N, 3, 3)
    points = combine.view(b, n, 1, 1, 1, 3, 3).matmul(points).squeeze(-1)  # (B, N, D, fH, fW, 3)
    return points + trans.view(b, n, 1, 1, 1, 3)


def splat_sum(features, geometry, dx, bx, nx):
    """Sum-pool frustum features into the BEV grid (points outside the grid are dropped).

    Args:
        features: (B, N, D, fH, fW, C) lifted camera features.
        geometry: (B, N, D, fH, fW, 3) their LiDAR-frame xyz (metres).
        dx, bx, nx: grid from :func:`gen_dx_bx`.

    Returns:
        (B, nz, C, ny, nx) pooled features (rows = y, columns = x).
    """
    b = features.shape[0]
    c = features.shape[-1]
    n_x, n_y, n_z = (int(v) for v in nx)
    feats = features.reshape(-1, c)  # (P, C)
    cells = ((geometry - (bx - dx / 2.0)) / dx).floor().long().view(-1, 3)  # (P, 3) (x, y, z)
    batch_ix = torch.arange(b, device=features.device).repeat_interleave(feats.shape[0] // b)  # (P,)
    kept = ((cells[:, 0] >= 0) & (cells[:, 0] < n_x) & (cells[:, 1] >= 0) & (cells[:, 1] < n_y)
            & (cells[:, 2] >= 0) & (cells[:, 2] < n_z))
    cells, feats, batch_ix = cells[kept], feats[kept], batch_ix[kept]
    flat = ((batch_ix * n_z + cells[:, 2]) * n_y + cells[:, 1]) * n_x + cells[:, 0]  # (P',)
    out = feats.new_zeros(b * n_z * n_y * n_x, c).index_add_(0, flat, feats)  # (B*nz*ny*nx, C)
    return out.view(b, n_z, n_y, n_x, c).permute(0, 1, 4, 2, 3)  # (B, nz, C, ny, nx)


class Up(nn.Module):
    """Upsample ``x1`` by 2 (bilinear), concatenate with the skip ``x2``, then 2 × (conv3x3-BN-ReLU).

    Args:
        in_channels: channels of ``x1`` + ``x2``.
        out_channels: output channels.
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x1, x2):
        x1 = F.interpolate(x1, size=x2.shape[-2:], mode="bilinear", align_corners=True)  # (B, C1, H2, W2)
        return self.conv(torch.cat([x2, x1], dim=1))  # (B, out, H2, W2)


class EfficientNetTrunk(nn.Module):
    """torchvision EfficientNet-b0 stages 0..7 fused into 512 channels at stride 8 (or 16).

    Endpoints: r3 = stage 3 (40 ch, /8), r4 = stage 5 (112 ch, /16), r5 = stage 7 (320 ch, /32);
    ``up1(r5, r4)`` -> 512 @ /16, and for stride 8 ``up2(., r3)`` -> 512 @ /8.

    Args:
        downsample: 8 or 16.
        pretrained: load torchvision ImageNet weights (needs internet or a cached file).
    """

    out_channels = 512

    def __init__(self, downsample, pretrained=False):
        super().__init__()
        if downsample not in (8, 16):
            raise ConfigError(
                f"model.args.encoder_args.img_downsample: EfficientNet supports 8 or 16, got {downsample}")
        weights = torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1 if pretrained else None
        stages = torchvision.models.efficientnet_b0(weights=weights).features
        self.stem_to_r3 = nn.Sequential(*stages[0:4])  # -> (B, 40, H/8, W/8)
        self.r3_to_r4 = nn.Sequential(*stages[4:6])  # -> (B, 112, H/16, W/16)
        self.r4_to_r5 = nn.Sequential(*stages[6:8])  # -> (B, 320, H/32, W/32)
        self.downsample = downsample
        self.up1 = Up(320 + 112, 512)
        if downsample == 8:
            self.up2 = Up(512 + 40, 512)

    def forward(self, x):
        r3 = self.stem_to_r3(x)  # (B, 40, H/8, W/8)
        r4 = self.r3_to_r4(r3)  # (B, 112, H/16, W/16)
        r5 = self.r4_to_r5(r4)  # (B, 320, H/32, W/32)
        x = self.up1(r5, r4)  # (B, 512, H/16, W/16)
        if self.downsample == 8:
            x = self.up2(x, r3)  # (B, 512, H/8, W/8)
        return x


class ResNet101Trunk(nn.Module):
    """torchvision ResNet-101 conv1 .. layer2: 512 channels at stride 8.

    Args:
        downsample: must be 8.
        pretrained: load torchvision ImageNet weights (needs internet or a cached file).
    """

    out_channels = 512

    def __init__(self, downsample, pretrained=False):
        super().__init__()
        if downsample != 8:
            raise ConfigError(f"model.args.encoder_args.img_downsample: Resnet101 supports 8, got {downsample}")
        weights = torchvision.models.ResNet101_Weights.IMAGENET1K_V1 if pretrained else None
        net = torchvision.models.resnet101(weights=weights)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2 = net.layer1, net.layer2

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        return self.layer2(self.layer1(x))  # (B, 512, H/8, W/8)


TRUNKS = {"efficientnet": EfficientNetTrunk, "resnet101": ResNet101Trunk}


class CamEncode(nn.Module):
    """Image trunk + 1x1 heads: depth logits (D) and context features (C); lift = softmax(depth) ⊗ features.

    Args:
        num_depth: D bins; out_features: C; downsample: image stride (8).
        ddiscr: [d_min, d_max, D] metres; mode: 'LID' | 'UD' | 'SID'.
        camera_encoder: 'EfficientNet' | 'Resnet101'.
        use_depth_gt: lift with the one-hot ground-truth depth instead of the predicted distribution.
        depth_supervision: read the ground-truth depth bins (4th image channel) for the depth loss.
        pretrained: ImageNet weights for the trunk.
    """

    def __init__(self, num_depth, out_features, downsample, ddiscr, mode, camera_encoder="EfficientNet",
                 use_depth_gt=False, depth_supervision=True, pretrained=False):
        super().__init__()
        key = str(camera_encoder).lower()
        if key not in TRUNKS:
            raise ConfigError(f"model.args.encoder_args.camera_encoder: unknown '{camera_encoder}'; "
                              f"known: EfficientNet, Resnet101")
        self.D, self.C = int(num_depth), int(out_features)
        self.downsample = int(downsample)
        self.d_min, self.d_max = float(ddiscr[0]), float(ddiscr[1])
        self.mode = mode
        self.use_depth_gt = bool(use_depth_gt)
        self.depth_supervision = bool(depth_supervision)
        self.trunk = TRUNKS[key](self.downsample, pretrained)
        if not self.use_depth_gt:
            self.depth_head = nn.Conv2d(self.trunk.out_channels, self.D, kernel_size=1)
        self.image_head = nn.Conv2d(self.trunk.out_channels, self.C, kernel_size=1)

    def gt_depth_bins(self, depth):
        """Ground-truth depth bin of every feature cell.

        Args:
            depth: (B, H, W) depth image in metres (augmented like the RGB image).

        Returns:
            (B, H/ds, W/ds) long bins, depth sampled at pixel ``k·ds + ds//2``.
        """
        half = self.downsample // 2
        sampled = depth[:, half::self.downsample, half::self.downsample]  # (B, fH, fW)
        return bin_depths(sampled, self.d_min, self.d_max, self.D, self.mode)

    def forward(self, x):
        """Args:
            x: (B, 3 or 4, H, W) normalised RGB (+ depth in metres as channel 3).

        Returns:
            lifted: (B, C, D, fH, fW); depth_logits: (B, D, fH, fW) or None (``use_depth_gt``);
            gt_bins: (B, fH, fW) long or None (no depth channel / not needed).
        """
        feats = self.trunk(x[:, :3])  # (B, 512, fH, fW)
        context = self.image_head(feats)  # (B, C, fH, fW)
        gt_bins = None
        if (self.depth_supervision or self.use_depth_gt) and x.shape[1] > 3:
            gt_bins = self.gt_depth_bins(x[:, 3])  # (B, fH, fW)
        if self.use_depth_gt:
            if gt_bins is None:
                raise ConfigError("model.args.encoder_args.use_depth_gt: needs depth images "
                                  "(add 'depth' to input_source)")
            depth_logits = None
            prob = F.one_hot(gt_bins, self.D).permute(0, 3, 1, 2).type_as(context)  # (B, D, fH, fW)
        else:
            depth_logits = self.depth_head(feats)  # (B, D, fH, fW)
            prob = depth_logits.softmax(dim=1)
        lifted = prob.unsqueeze(1) * context.unsqueeze(2)  # (B, C, D, fH, fW)
        return lifted, depth_logits, gt_bins


def depth_values_from_conf(grid_conf):
    """(D,) frustum depth samples from ``grid_conf`` (``ddiscr`` [d_min, d_max, D], ``mode``)."""
    d_min, d_max, num_bins = grid_conf["ddiscr"]
    return depth_bin_values(float(d_min), float(d_max), int(num_bins), grid_conf.get("mode", "LID"))

