"""Voxelising after collation (on the model's device) gives exactly the batch of worker-side voxelisation."""
import copy

import torch

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml

M1M3 = "opencood/hypes_yaml/demo/gencomm/stage2/m1m3_att.yaml"


def _batch(hypes, on_device):
    h = copy.deepcopy(hypes)
    if on_device:
        for m in h["heter"]["modality_setting"].values():
            if "preprocess" in m:
                m["preprocess"]["args"]["on_device"] = True
    ds = build_dataset(h, visualize=False, train=False)
    batch = ds.collate_batch_train([ds[0], ds[1]])
    return ds, batch


def test_on_device_voxelization_matches_worker_voxelization(make_tiny_config):
    h = load_yaml(make_tiny_config(M1M3))
    _, ref = _batch(h, False)
    ds, raw = _batch(h, True)
    keys = [k for k in raw["ego"] if k.startswith("inputs_") and "points" in raw["ego"][k]]
    assert keys, "no point-cloud input was deferred"
    out = ds.device_preprocess(raw)
    for k in keys:
        for name in ("voxel_features", "voxel_coords", "voxel_num_points"):
            assert torch.equal(out["ego"][k][name], ref["ego"][k][name]), (k, name)
