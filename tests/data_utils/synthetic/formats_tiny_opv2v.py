"""A small OPV2V intermediate-fusion config for a synthetic ``<root>/OPV2V`` tree (realism tests)."""
import os

from opencood.hypes_yaml.yaml_utils import load_general_params

RANGE = [-51.2, -25.6, -3.0, 51.2, 25.6, 1.0]


def make_hypes(opv2v_root):
    """Config reading ``<opv2v_root>/train`` and ``<opv2v_root>/validate`` with LiDAR PointPillars settings."""
    hypes = {
        "_source": "tiny.yaml", "root_dir": os.path.join(opv2v_root, "train"),
        "validate_dir": os.path.join(opv2v_root, "validate"), "test_dir": os.path.join(opv2v_root, "validate"),
        "train_params": {"max_cav": 5, "batch_size": 2}, "comm_range": 70, "input_source": ["lidar"],
        "label_type": "lidar", "cav_lidar_range": list(RANGE),
        "fusion": {"core_method": "intermediate", "dataset": "opv2v", "args": {"proj_first": False}},
        "preprocess": {"core_method": "SpVoxelPreprocessor", "cav_lidar_range": list(RANGE),
                       "args": {"voxel_size": [0.4, 0.4, 4], "max_points_per_voxel": 8,
                                "max_voxel_train": 4000, "max_voxel_test": 4000}},
        "postprocess": {"core_method": "VoxelPostprocessor", "order": "hwl", "max_num": 150, "nms_thresh": 0.15,
                        "anchor_args": {"cav_lidar_range": list(RANGE), "l": 3.9, "w": 1.6, "h": 1.56,
                                        "r": [0, 90], "feature_stride": 4, "num": 2},
                        "target_args": {"pos_threshold": 0.6, "neg_threshold": 0.45, "score_threshold": 0.2},
                        "dir_args": {"dir_offset": 0.7853, "num_bins": 2, "anchor_yaw": [0, 90]}},
        "model": {"core_method": "heter_model_baseline", "args": {}},
    }
    return load_general_params(hypes)
