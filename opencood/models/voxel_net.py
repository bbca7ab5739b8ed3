"""VoxelNet (OpenCOOD ``voxel_net``; spec baselines §A3): voxel feature encoding, 3D convolutional middle layers,
region proposal network, one detector per sample (early fusion) or per agent (late fusion).

svfe (PillarVFE on 3D voxels, T points each) -> dense (N, C, D, H, W) volume -> cml (3 x Conv3d k3, z strides
2, 1, 2) -> (N, C·D', H, W) -> rpn (3 stride-2 blocks, deconvs to a common resolution, concat) -> score (A) /
regression (7A) 1x1 heads at stride 2 of the voxel grid. No direction head. Reads ``processed_lidar``
(``SpVoxelPreprocessor`` with 3D voxels: ``voxel_size`` z < the range's height).
"""
import torch
import torch.nn as nn

from opencood.models.base_model import CooperativeModel
from opencood.models.sub_modules.pillar_vfe import PillarVFE
from opencood.utils.bev_grid import grid_size
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import MODELS

CML_STRIDES_Z = (2, 1, 2)
CML_PADDING_Z = (1, 0, 1)
RPN_STRIDE = 2  # output cell = 2 voxels (block 1's stride; deconvs bring every block there)


def conv_bn_relu(conv):
    """``conv`` + BatchNorm of its output channels + ReLU (2D or 3D after the conv's type)."""
    norm = nn.BatchNorm3d if isinstance(conv, nn.Conv3d) else nn.BatchNorm2d
    return nn.Sequential(conv, norm(conv.out_channels), nn.ReLU(inplace=True))


class CML(nn.Module):
    """Convolutional middle layers: 3 x (Conv3d k3 + BN + ReLU), z strides 2, 1, 2 (x/y stride 1).

    Args:
        channels: C of the voxel features (in and out).
    """

    def __init__(self, channels=64):
        super().__init__()
        self.layers = nn.Sequential(*[
            conv_bn_relu(nn.Conv3d(channels, channels, 3, stride=(s, 1, 1), padding=(p, 1, 1)))
            for s, p in zip(CML_STRIDES_Z, CML_PADDING_Z)])

    @staticmethod
    def output_depth(depth):
        """D' after the three z convolutions (k 3)."""
        for s, p in zip(CML_STRIDES_Z, CML_PADDING_Z):
            depth = (depth + 2 * p - 3) // s + 1
        return depth

    def forward(self, volume):
        return self.layers(volume)  # (N, C, D, H, W) -> (N, C, D', H, W)


class RPN(nn.Module):
    """Region proposal network: three blocks (first conv stride 2, then stride-1 convs), each upsampled to the
    first block's resolution by a transposed conv, concatenated, then the 1x1 score / regression heads.

    Args:
        in_channels: C·D' of the folded volume.
        anchor_num: anchors per cell A.
        filters: output channels of the three blocks (OpenCOOD: 128, 128, 256).
        layer_nums: convolutions per block including the strided one (4, 6, 6).
        upsample_filters: channels of each transposed conv (256).
    """

    def __init__(self, in_channels, anchor_num, filters=(128, 128, 256), layer_nums=(4, 6, 6), upsample_filters=256):
        super().__init__()
        ins = [in_channels] + list(filters[:-1])
        self.blocks = nn.ModuleList([
            nn.Sequential(conv_bn_relu(nn.Conv2d(c_in, c_out, 3, 2, 1)),
                          *[conv_bn_relu(nn.Conv2d(c_out, c_out, 3, 1, 1)) for _ in range(n - 1)])
            for c_in, c_out, n in zip(ins, filters, layer_nums)])
        ups = [2 ** i for i in range(len(filters))]  # block i is at stride 2^(i+1): back to stride 2
        self.deblocks = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(c, upsample_filters, u, u, 0), nn.BatchNorm2d(upsample_filters))
            for c, u in zip(filters, ups)])
        self.score_head = nn.Conv2d(upsample_filters * len(filters), anchor_num, 1)
        self.reg_head = nn.Conv2d(upsample_filters * len(filters), 7 * anchor_num, 1)

    def forward(self, x):
        """(N, C·D', H, W) -> scores (N, A, H/2, W/2), regression (N, 7A, H/2, W/2), features (N, 3U, H/2, W/2)."""
        ups = []
        for block, deblock in zip(self.blocks, self.deblocks):
            x = block(x)  # (N, F_i, H/2^(i+1), W/2^(i+1))
            ups.append(deblock(x))  # (N, U, H/2, W/2)
        feature = torch.cat(ups, dim=1)  # (N, 3U, H/2, W/2)
        return self.score_head(feature), self.reg_head(feature), feature


@MODELS.register("voxel_net")
class VoxelNet(CooperativeModel):
    """VoxelNet single-agent detector.

    Args:
        args: YAML ``model.args`` (see ``CONFIG``): ``voxel_size`` / ``lidar_range`` (metres, the detector's
            LiDAR frame; 3D voxels), ``pillar_vfe`` (the VFE; its last filter count is the volume's C),
            ``anchor_num``; OpenCOOD's ``N``, ``T``, ``D``, ``H``, ``W`` are accepted (D/H/W checked).
    """

    CONFIG = Schema({
        "voxel_size": Key(list, REQUIRED, "voxel [vx, vy, vz] metres (= the voxeliser's)", length=3),
        "lidar_range": Key(list, REQUIRED, "[xmin, ymin, zmin, xmax, ymax, zmax] metres", length=6),
        "pillar_vfe": Key(dict, {}, "voxel feature encoding (PillarVFE on 3D voxels)", schema=PillarVFE.CONFIG),
        "anchor_num": Key(int, None, "anchors per cell A"),
        "anchor_number": Key(int, None, "HEAL's name of anchor_num"),
        "rpn_filters": Key(list, [128, 128, 256], "output channels of the three RPN blocks", length=3),
        "rpn_layer_nums": Key(list, [4, 6, 6], "convolutions per RPN block", length=3),
        "rpn_upsample_filters": Key(int, 256, "channels of each RPN transposed conv"),
        "N": Key(int, None, "OpenCOOD key (batch size); the batch gives the number of samples"),
        "T": Key(int, None, "OpenCOOD key: points per voxel (the voxeliser's max_points_per_voxel)"),
        "D": Key(int, None, "voxels along z (checked against lidar_range / voxel_size)"),
        "H": Key(int, None, "voxels along y (checked)"),
        "W": Key(int, None, "voxels along x (checked)"),
        "bn_momentum": Key(float, None, "read by train_utils.create_model: momentum of every BatchNorm"),
        "feature_stride": Key(int, None, "derived: anchor cell in voxels; must be 2"),
        "anchor_voxel_size": Key(list, None, "derived: voxel of the anchor grid; must be voxel_size", length=3),
    }, name="voxel_net")

    def __init__(self, args):
        super().__init__()
        source = args.get("_source", "config")
        cfg = self.CONFIG.parse(args, "model.args", source)
        nx, ny, nz = (int(v) for v in grid_size(cfg.lidar_range, cfg.voxel_size))
        self.grid = (nz, ny, nx)  # (D, H, W)
        for key, value in zip("DHW", self.grid):
            if cfg[key] is not None and cfg[key] != value:
                raise ConfigError(f"{source}: model.args.{key} = {cfg[key]} but lidar_range / voxel_size give {value}")
        if cfg.feature_stride is not None and cfg.feature_stride != RPN_STRIDE:
            raise ConfigError(f"{source}: postprocess.anchor_args.feature_stride = {cfg.feature_stride} but "
                              f"VoxelNet's output cell is {RPN_STRIDE} voxels")
        if cfg.anchor_voxel_size is not None and [float(v) for v in cfg.anchor_voxel_size[:2]] != [
                float(v) for v in cfg.voxel_size[:2]]:
            raise ConfigError(f"{source}: model.args.voxel_size {cfg.voxel_size} differs in x/y from the anchor "
                              f"grid's voxel {cfg.anchor_voxel_size} (preprocess.args.voxel_size)")
        anchor_num = cfg.anchor_num if cfg.anchor_num is not None else cfg.anchor_number
        if anchor_num is None:
            raise ConfigError(f"{source}: missing key 'model.args.anchor_num'")
        self.svfe = PillarVFE(cfg.pillar_vfe, 4, cfg.voxel_size, cfg.lidar_range)
        channels = self.svfe.num_filters
        depth = CML.output_depth(nz)
        if depth < 1:
            raise ConfigError(f"{source}: model.args.voxel_size: {nz} voxels along z leave no output after the "
                              f"three z convolutions of VoxelNet's middle layers")
        self.cml = CML(channels)
        self.rpn = RPN(channels * depth, anchor_num, cfg.rpn_filters, cfg.rpn_layer_nums, cfg.rpn_upsample_filters)

    def voxel_indexing(self, features, coords, n_samples):
        """Scatter voxel features (V, C) at coords (V, 4) [sample, z, y, x] into a dense (N, C, D, H, W) volume."""
        d, h, w = self.grid
        dense = features.new_zeros((n_samples, d, h, w, features.shape[1]))
        coords = coords.long()
        dense[coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3]] = features
        return dense.permute(0, 4, 1, 2, 3)  # (N, C, D, H, W)

    def forward(self, data_dict):
        """Args: data_dict = batch['ego'] with ``processed_lidar`` and ``record_len`` (ones: one cloud per sample).

        Returns:
            ``cls_preds`` (N, A, H/2, W/2), ``reg_preds`` (N, 7A, H/2, W/2), ``fused_feature`` (N, 3U, H/2, W/2).
        """
        if "processed_lidar" not in data_dict:
            raise DataError("batch: missing key 'processed_lidar'")
        voxels = data_dict["processed_lidar"]
        n_samples = int(data_dict["record_len"].sum().item())
        batch = self.svfe({key: voxels[key] for key in ("voxel_features", "voxel_num_points", "voxel_coords")})
        volume = self.voxel_indexing(batch["pillar_features"], voxels["voxel_coords"], n_samples)  # (N, C, D, H, W)
        volume = self.cml(volume)  # (N, C, D', H, W)
        n, c, d, h, w = volume.shape
        cls_preds, reg_preds, feature = self.rpn(volume.reshape(n, c * d, h, w))
        return {"cls_preds": cls_preds, "reg_preds": reg_preds, "fused_feature": feature}
