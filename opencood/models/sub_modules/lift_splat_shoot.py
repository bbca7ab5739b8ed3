"""Lift-Splat-Shoot camera encoders (spec baselines §A5, §A6): 4 images -> BEV feature map of one agent.

``encoder_args`` (YAML ``model.args.mX.encoder_args``, see ``LiftSplatShoot.CONFIG``):
``grid_conf{xbound, ybound, zbound: [min, max, step] metres, ddiscr: [d_min, d_max, D], mode: LID|UD|SID}``,
``data_aug_conf{final_dim: [H, W]}`` (the rest of HEAL's ``data_aug_conf`` is read by the camera
pre-processing from ``heter.modality_setting.mX``), ``img_downsample`` (8), ``img_features`` (C, 128),
``camera_encoder`` (EfficientNet | Resnet101), ``use_depth_gt`` (false), ``depth_supervision`` (false),
``pretrained`` (false: never downloads weights unless asked).

``forward`` returns ``(bev, aux)``; ``aux["depth_items"] = (depth_logits (N*Ncam, D, fH, fW),
gt_bins (N*Ncam, fH, fW) long or None)`` when ``depth_supervision`` is on and depth is predicted (not
``use_depth_gt``), else ``aux`` is empty; the heterogeneous model puts it into its output as
``depth_items_mX`` for ``point_pillar_depth_loss``.
"""
import torch.nn as nn

from opencood.models.sub_modules.encoder_inputs import modality_inputs
from opencood.models.sub_modules.feature_info import FeatureInfo
from opencood.models.sub_modules.lss_submodule import (CamEncode, create_frustum, depth_values_from_conf,
                                                       frustum_to_lidar, gen_dx_bx, splat_sum)
from opencood.utils.camera_utils import GRID_CONF
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import ENCODERS

CAMERA_KEYS = ("imgs", "intrins", "rots", "trans", "post_rots", "post_trans")


DATA_AUG_CONF = Schema({
    "final_dim": Key(list, REQUIRED, "[H, W] pixels of the augmented image the trunk sees", length=2),
}, name="data_aug_conf")


def grid_cells(bound):
    """Cells along one ``[min, max, step]`` bound (as :func:`gen_dx_bx`)."""
    return int(round((float(bound[1]) - float(bound[0])) / float(bound[2])))


@ENCODERS.register("lift_splat_shoot", "liftsplatshoot")
class LiftSplatShoot(nn.Module):
    """Lift (per-pixel depth distribution ⊗ context), splat (sum-pool into the LiDAR-frame BEV grid).

    Args:
        encoder_args: see ``CONFIG`` and the module docstring.

    Output of :meth:`forward`: (N, C·nz, ny, nx) BEV map in the agent's LiDAR frame (rows = y, columns = x),
    e.g. (N, 128, 256, 256) for ±51.2 m at 0.4 m and one z bin.
    """

    WHERE = "model.args.encoder_args"
    CONFIG = Schema({
        "grid_conf": Key(dict, REQUIRED, "BEV grid the frustum features are splatted onto", schema=GRID_CONF),
        "data_aug_conf": Key(dict, REQUIRED, "image size the trunk sees", schema=DATA_AUG_CONF),
        "img_downsample": Key(int, REQUIRED, "image-to-feature stride of the trunk (8; EfficientNet also 16)"),
        "img_features": Key(int, REQUIRED, "context channels C lifted per depth bin"),
        "use_depth_gt": Key(bool, False, "lift with the one-hot ground-truth depth instead of the prediction"),
        "depth_supervision": Key(bool, False, "return the depth logits + GT bins for the depth loss"),
        "camera_encoder": Key(str, "EfficientNet", "image trunk: EfficientNet (B0) | Resnet101 (case-insensitive)"),
        "pretrained": Key(bool, False, "torchvision ImageNet weights for the trunk (downloads once)"),
    }, name="lift_splat_shoot encoder")

    def __init__(self, encoder_args):
        super().__init__()
        cfg = self.CONFIG.parse(encoder_args, self.WHERE)
        self.feature_info(cfg)  # checks final_dim against img_downsample
        grid_conf, final_dim = cfg.grid_conf, cfg.data_aug_conf.final_dim
        self.downsample = cfg.img_downsample
        self.camC = cfg.img_features
        self.grid_conf = grid_conf
        self.data_aug_conf = cfg.data_aug_conf
        dx, bx, nx = gen_dx_bx(grid_conf["xbound"], grid_conf["ybound"], grid_conf["zbound"])
        self.register_buffer("dx", dx)
        self.register_buffer("bx", bx)
        self.register_buffer("nx", nx)
        depth_values = depth_values_from_conf(grid_conf)
        self.register_buffer("frustum", create_frustum(final_dim, self.downsample, depth_values))
        self.D = depth_values.numel()
        self.depth_supervision = cfg.depth_supervision
        self.camencode = CamEncode(self.D, self.camC, self.downsample, grid_conf["ddiscr"], grid_conf.mode,
                                   camera_encoder=cfg.camera_encoder, use_depth_gt=cfg.use_depth_gt,
                                   depth_supervision=self.depth_supervision, pretrained=cfg.pretrained)

    @staticmethod
    def bev_channels(img_features, nz):
        """Channels of the BEV map: the z bins stacked into channels (C·nz)."""
        return img_features * nz

    @classmethod
    def feature_info(cls, args, where=WHERE, source="config"):
        """Output map: ``img_features`` (x nz) channels on the ``grid_conf`` x/y grid (cell = bound steps)."""
        cfg = cls.CONFIG.parse(args, where, source)
        final_dim, ds = cfg.data_aug_conf.final_dim, cfg.img_downsample
        if final_dim[0] % ds or final_dim[1] % ds:
            raise ConfigError(f"{source}: {where}.data_aug_conf.final_dim {list(final_dim)} is not a multiple "
                              f"of img_downsample {ds}")
        gc = cfg.grid_conf
        channels = cls.bev_channels(cfg.img_features, grid_cells(gc.zbound))
        return FeatureInfo(channels, (float(gc.xbound[2]), float(gc.ybound[2])),
                           (grid_cells(gc.ybound), grid_cells(gc.xbound)))

    def get_geometry(self, rots, trans, intrins, post_rots, post_trans):
        """(N, Ncam, D, fH, fW, 3) LiDAR-frame xyz (metres) of every frustum sample."""
        return frustum_to_lidar(self.frustum, rots, trans, intrins, post_rots, post_trans)

    def get_cam_feats(self, imgs):
        """Lift every image.

        Args:
            imgs: (N, Ncam, 3|4, H, W).

        Returns:
            feats (N, Ncam, D, fH, fW, C); depth_logits (N*Ncam, D, fH, fW) or None; gt_bins or None.
        """
        n, ncam = imgs.shape[:2]
        lifted, depth_logits, gt_bins = self.camencode(imgs.flatten(0, 1))  # (N*Ncam, C, D, fH, fW)
        lifted = lifted.view(n, ncam, *lifted.shape[1:]).permute(0, 1, 3, 4, 5, 2)  # (N, Ncam, D, fH, fW, C)
        return lifted, depth_logits, gt_bins

    def collapse_z(self, bev):
        """(N, nz, C, ny, nx) -> (N, C·nz, ny, nx), z-major channel order."""
        return bev.flatten(1, 2)

    def forward(self, data_dict, modality_name):
        """Args:
            data_dict: batch dict with ``inputs_<modality_name>`` = ``{'imgs' (N, Ncam, 3|4, H, W),
                'intrins', 'rots', 'post_rots' (N, Ncam, 3, 3), 'trans', 'post_trans' (N, Ncam, 3)}``.
            modality_name: e.g. ``'m2'``.

        Returns:
            (N, C·nz, ny, nx) BEV features, and ``aux`` (``depth_items`` when depth is supervised).
        """
        key = f"inputs_{modality_name}"
        inputs = modality_inputs(data_dict, modality_name, CAMERA_KEYS)
        geometry = self.get_geometry(inputs["rots"], inputs["trans"], inputs["intrins"],
                                     inputs["post_rots"], inputs["post_trans"])  # (N, Ncam, D, fH, fW, 3)
        feats, depth_logits, gt_bins = self.get_cam_feats(inputs["imgs"])  # (N, Ncam, D, fH, fW, C)
        if feats.shape[2:5] != geometry.shape[2:5]:
            raise DataError(f"batch['{key}']['imgs']: image size {tuple(inputs['imgs'].shape[-2:])} does not "
                            f"match data_aug_conf.final_dim {list(self.data_aug_conf['final_dim'])}")
        supervised = self.depth_supervision and depth_logits is not None
        aux = {"depth_items": (depth_logits, gt_bins)} if supervised else {}
        bev = splat_sum(feats, geometry, self.dx, self.bx, self.nx)  # (N, nz, C, ny, nx)
        return self.collapse_z(bev), aux


@ENCODERS.register("lift_splat_shoot_voxel", "liftsplatshootvoxel")
class LiftSplatShootVoxel(LiftSplatShoot):
    """Lift-Splat-Shoot whose z bins are merged by a max instead of stacked into channels: (N, C, ny, nx)."""

    @staticmethod
    def bev_channels(img_features, nz):
        """Channels of the BEV map: C (z bins merged by a max)."""
        return img_features

    def collapse_z(self, bev):
        return bev.max(dim=1).values  # (N, C, ny, nx)
