"""The shipped GenComm YAMLs build working datasets on the synthetic tiny world (real on-disk formats)."""
import os

import pytest

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml

CONFIGS = "opencood/hypes_yaml/opv2v/GenComm_yamls/gencomm"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from opencood.data_utils.synthetic import generate
    root = str(tmp_path_factory.mktemp("synthetic_test_yaml"))
    generate(root, preset="tiny", progress=False)
    return root


def config(root, name):
    hypes = load_yaml(os.path.join(REPO, CONFIGS, name))
    for key in ("root_dir", "validate_dir", "test_dir"):
        hypes[key] = os.path.join(root, os.path.relpath(hypes[key], "dataset"))
    heter = hypes["heter"]
    heter["assignment_path"] = os.path.join(root, os.path.relpath(heter["assignment_path"], "dataset"))
    return hypes


@pytest.mark.slow
@pytest.mark.parametrize("name", ["stage2/m1m2_att.yaml", "stage2/m1m3_att.yaml"])
def test_stage2_configs_train_and_test(root, name):
    hypes = config(root, name)
    train = build_dataset(hypes, visualize=False, train=True)
    batch = train.collate_batch_train([train[0], train[1]])["ego"]
    n = int(batch["record_len"].sum())
    assert len(batch["agent_modality_list"]) == n == batch["lidar_pose"].shape[0]
    new_type = name.split("/")[1][2:4]
    start = 0
    for k in batch["record_len"].tolist():  # ego_diff_cav: ego m1, every collaborator the new type
        mods = batch["agent_modality_list"][start:start + k]
        assert mods[0] == "m1" and set(mods[1:]) <= {new_type}
        start += k
    assert batch["object_bbx_mask"].sum() > 0
    assert batch["label_dict"]["targets"].shape[-1] == 14

    hypes["validate_dir"] = hypes["test_dir"]
    test = build_dataset(hypes, visualize=True, train=False)
    out = test.collate_batch_test([test[0]])
    assert out["ego"]["origin_lidar"].shape[0] == 1
    assert test.generate_gt_bbx(out).shape[1:] == (8, 3)


@pytest.mark.slow
def test_in_order_inference_config(root):
    hypes = config(root, "stage2/m1m2m3m4_att_infer.yaml")
    heter = hypes["heter"]
    heter["assignment_path"] = heter["assignment_path"].replace(".json", "_in_order.json")
    heter["mapping_dict"] = {f"m{i}": f"m{i}" for i in range(1, 5)}
    heter["ego_modality"] = "m1"
    hypes.update({"comm_range": 180, "ego_diff_cav": False, "validate_dir": hypes["test_dir"]})
    hypes["fusion"]["core_method"] = "intermediateheterinfer"
    for use_cav in (1, 2):
        hypes["fusion"]["args"]["use_cav"] = use_cav
        ds = build_dataset(hypes, visualize=True, train=False)
        s = ds[0]["ego"]
        assert s["agent_modality_list"] == ["m1", "m2"][:use_cav]
        assert s["cav_num"] == use_cav
