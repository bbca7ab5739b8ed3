"""Classic standalone SECOND detector (OpenCOOD ``second``; spec baselines §A2).

mean_vfe -> backbone_3d (spconv VoxelBackBone8x) -> height_compression -> backbone_2d (BaseBEVBackbone) ->
cls/reg/dir heads, one detector per sample (early fusion) or per agent (late fusion), OpenCOOD's module names.
The encoder parts are those of the SECOND agent type (``sub_modules/second_encoder.py``).
Reads ``processed_lidar`` (voxels of at most ``max_points_per_voxel`` points, ``voxel_coords[:, 0]`` = sample).
"""
import torch

from opencood.models.heter_model_baseline import COMMON_KEYS, HeterModelBaseline
from opencood.models.point_pillar import SingleAgentDetector, without_fusion
from opencood.models.point_pillar_baseline import CLASSIC_TYPE
from opencood.models.sub_modules.base_bev_backbone import BaseBEVBackbone
from opencood.models.sub_modules.second_encoder import SECOND, HeightCompression, MeanVFE
from opencood.models.sub_modules.sparse_backbone_3d import VoxelBackBone8x
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import DataError
from opencood.utils.registry import MODELS

ONLY_TYPE = "m1"
CLASSIC_NAMES = {"encoder": "backbone_3d", "backbone": "backbone_2d", "shrinker": "shrink_conv"}
CLASSIC_SECTIONS = {"encoder_args": "model.args", "backbone_args": "model.args.base_bev_backbone",
                    "shrink_header": "model.args.shrink_header"}


@MODELS.register("second")
class Second(SingleAgentDetector, HeterModelBaseline):
    """SECOND: sparse 3D convolutions on mean voxel features, folded to BEV, 2D backbone, anchor heads.

    Args:
        args: YAML ``model.args`` (see ``CONFIG``): ``voxel_size`` / ``lidar_range`` (metres, the detector's
            LiDAR frame), ``mean_vfe``, ``backbone_3d`` (``num_features_out``), ``height_compression``
            (``feature_num`` = num_features_out x output z cells, checked), ``base_bev_backbone``,
            ``anchor_number`` (or ``anchor_num``), optional ``dir_args``.
    """

    CONFIG = without_fusion(Schema({**COMMON_KEYS, **{
        "voxel_size": SECOND.CONFIG.keys["voxel_size"],
        "lidar_range": COMMON_KEYS["lidar_range"],
        "mean_vfe": SECOND.CONFIG.keys["mean_vfe"],
        "backbone_3d": Key(dict, {}, "VoxelBackBone8x", schema=Schema({
            "num_features_out": Key(int, 128, "channels of the output volume (OpenCOOD: 128)"),
        })),
        "height_compression": Key(dict, {}, "z folded into channels", schema=Schema({
            "feature_num": Key(int, None, "BEV channels = backbone_3d.num_features_out x output z cells (checked)"),
        })),
        "base_bev_backbone": Key(dict, REQUIRED, "BEV backbone", schema=BaseBEVBackbone.CONFIG),
        "shrink_header": Key(dict, None, "optional DownsampleConv after the backbone",
                             schema=CLASSIC_TYPE.keys["shrink_header"].schema),
        "anchor_num": Key(int, None, "OpenCOOD's name of anchor_number"),
        "grid_size": Key(list, None, "derived (yaml loader): [nx, ny, nz] voxels; recomputed", length=3),
        "batch_size": Key(int, None, "OpenCOOD key; the batch size comes from the voxel coordinates"),
    }}), "second")

    def __init__(self, args):
        super().__init__(dict(args, anchor_number=args.get("anchor_number", args.get("anchor_num"))))

    @classmethod
    def module_attr(cls, stage, m):
        return CLASSIC_NAMES[stage]

    @classmethod
    def section_path(cls, m, section):
        return CLASSIC_SECTIONS[section]

    @classmethod
    def agent_type_configs(cls, cfg):
        """The one implicit type: the SECOND encoder section assembled from the flat keys."""
        encoder_args = {"voxel_size": cfg.voxel_size, "lidar_range": cfg.lidar_range,
                        "mean_vfe": cfg.mean_vfe or {},
                        "spconv": {"num_features_out": (cfg.backbone_3d or {}).get("num_features_out", 128)},
                        "map2bev": {"feature_num": (cfg.height_compression or {}).get("feature_num")}}
        return {ONLY_TYPE: {"core_method": "second", "sensor_type": "lidar", "encoder_args": encoder_args,
                            "backbone_args": cfg.base_bev_backbone, "shrink_header": cfg.shrink_header}}

    @classmethod
    def parse_agent_type(cls, m, section, source="config"):
        return CLASSIC_TYPE.parse(section, "model.args", source)

    def build_encoder(self, m, tcfg):
        """``mean_vfe``, ``backbone_3d``, ``height_compression`` as top-level modules (OpenCOOD's names)."""
        cfg = SECOND.CONFIG.parse(tcfg.encoder_args, "model.args", self.source)
        self.mean_vfe = MeanVFE(cfg.mean_vfe.num_point_features)
        self.backbone_3d = VoxelBackBone8x(cfg.mean_vfe.num_point_features, cfg.spconv.num_features_out,
                                           SECOND.sparse_grid(cfg))
        self.height_compression = HeightCompression()

    def run_encoder(self, data_dict, m):
        """Voxels of ``processed_lidar`` -> (B, C·Z', Y/8, X/8) BEV map, ``{}``."""
        if "processed_lidar" not in data_dict:
            raise DataError("batch: missing key 'processed_lidar'")
        voxels = data_dict["processed_lidar"]
        n_samples = int(data_dict["record_len"].sum().item())
        features = self.mean_vfe(voxels["voxel_features"], voxels["voxel_num_points"])  # (V, 4)
        if features.is_cuda:
            volume = self.backbone_3d(features, voxels["voxel_coords"], n_samples)  # (B, C, Z', Y/8, X/8)
        else:  # spconv's CPU kernels have no bf16: under CPU autocast the sparse part runs in fp32
            with torch.autocast("cpu", enabled=False):
                volume = self.backbone_3d(features.float(), voxels["voxel_coords"], n_samples)
        return self.height_compression(volume), {}  # (B, C*Z', Y/8, X/8)
