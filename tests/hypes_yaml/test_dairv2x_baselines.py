"""DAIR-V2X-C baselines (reference ``dairv2x/GenComm_yamls/baselines``: stage-1 m1/m3 AttFuse and V2X-ViT bases,
BackAlign m1m3) and GenComm's V2X-ViT variants on shared bases: the full files load and build with the reference's
settings; the tiny CPU versions train on the synthetic DAIR world."""
import glob
import os

import pytest
import torch

from opencood.hypes_yaml.yaml_utils import load_yaml, read_config, save_yaml
from opencood.models.fuse_modules.v2xvit_fuse import V2XViTFusion
from opencood.tools import train_utils

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAIR = os.path.join(REPO, "opencood", "hypes_yaml", "dairv2x", "GenComm_yamls")
FULL = sorted(glob.glob(os.path.join(DAIR, "baselines", "stage*", "**", "*.yaml"), recursive=True))
V2XVIT = sorted(glob.glob(os.path.join(DAIR, "*", "stage*", "**", "*_v2xvit.yaml"), recursive=True))
DAIR_RANGE = [-102.4, -51.2, -3.5, 102.4, 51.2, 1.5]


def _rel(path):
    return os.path.relpath(path, DAIR)


def test_the_reference_baseline_set_is_shipped():
    assert sorted(_rel(p) for p in FULL) == [
        "baselines/stage1/m1_att.yaml", "baselines/stage1/m1_v2xvit.yaml", "baselines/stage1/m3_att.yaml",
        "baselines/stage1/m3_v2xvit.yaml", "baselines/stage2/BackAlign/m1m3_att.yaml",
        "baselines/stage2/BackAlign/m1m3_v2xvit.yaml"]
    assert sorted(_rel(p) for p in V2XVIT if "gencomm" in p) == [
        "gencomm/stage1/m1_v2xvit.yaml", "gencomm/stage1/m3_v2xvit.yaml", "gencomm/stage2/m1m3_v2xvit.yaml"]


@pytest.mark.parametrize("path", FULL, ids=_rel)
def test_baseline_configs_carry_the_reference_settings(path):
    h = load_yaml(path)
    assert h["fusion"]["dataset"] == "dairv2x" and h["train_params"]["max_cav"] == 2 and h["comm_range"] == 100
    assert h["postprocess"]["gt_range"] == DAIR_RANGE and h["heter"]["assignment_path"] is None
    assert not h["heter"].get("lidar_channels_dict")
    assert "message_extractor" not in h["model"]["args"] and h["loss"]["core_method"] == "point_pillar_depth_loss"
    if "stage1" in path:
        m = os.path.basename(path)[:2]
        assert h["model"]["core_method"] == "heter_model_baseline" and h["heter"]["ego_modality"] == m
        assert set(h["heter"]["mapping_dict"].values()) == {m}
        assert (h["train_params"]["batch_size"], h["train_params"]["epoches"]) == (4, 30)
        assert h["lr_scheduler"]["step_size"] == [10, 25] and h["optimizer"]["lr"] == 0.002
        assert h["loss"]["args"]["cls"]["weight"] == 1.0
    else:
        assert h["model"]["core_method"] == "heter_model_baseline_w_backalign"
        assert h["heter"]["mapping_dict"]["m1"] == "m1" and h["heter"]["mapping_dict"]["m2"] == "m3"
        assert (h["train_params"]["batch_size"], h["train_params"]["epoches"]) == (2, 10)
        assert h["optimizer"]["lr"] == 0.0005 and h["lr_scheduler"]["step_size"] == [5]


@pytest.mark.parametrize("path", FULL, ids=_rel)
def test_baseline_configs_build(path):
    model = train_utils.create_model(load_yaml(path))
    assert isinstance(model.fusion_net, V2XViTFusion) == ("v2xvit" in path)


@pytest.mark.parametrize("path", V2XVIT, ids=_rel)
def test_v2xvit_files_equal_their_att_twins_but_the_fusion(path):
    h, twin = load_yaml(path), load_yaml(path.replace("_v2xvit", "_att"))
    vit = h["model"]["args"]["v2xvit"]["transformer"]["encoder"]
    assert vit["RTE_ratio"] == 0 and vit["sttf"]["voxel_size"] == [0.4, 0.4, 5]
    for x in (h, twin):
        for key in ("name", "_source"):
            x.pop(key, None)
        x["model"]["args"].pop("fusion_method"), x["model"]["args"].pop("v2xvit", None)
        x["model"]["args"].pop("att", None)
    if "gencomm/stage1" in path:  # the reference's V2X-ViT bases use batch size 2 (AttFuse: 4)
        assert (h["train_params"].pop("batch_size"), twin["train_params"].pop("batch_size")) == (2, 4)
    assert {k: v for k, v in h.items() if not k.startswith("_")} == \
        {k: v for k, v in twin.items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def dair_root(tmp_path_factory):
    from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
    root = str(tmp_path_factory.mktemp("dair_world"))
    SYNTHETIC_FORMATS.get("dairv2x")(root, preset="tiny", seed=0, progress=False)
    return root


def _tiny(rel, root, tmp_path):
    h = read_config(os.path.join(DAIR, rel))
    for key in ("data_dir", "root_dir", "validate_dir", "test_dir"):
        h[key] = h[key].replace("dataset", root, 1)
    path = os.path.join(str(tmp_path), "config_src.yaml")
    save_yaml(h, path)
    return load_yaml(path)


@pytest.mark.parametrize("rel", ["baselines/tiny/stage1/m1_att.yaml",  # SECOND (m3) steps take ~30 s on one core
                                 pytest.param("baselines/tiny/stage1/m3_att.yaml", marks=pytest.mark.slow),
                                 pytest.param("tiny/stage1/m3_att.yaml", marks=pytest.mark.slow)])
def test_tiny_stage1_configs_lower_the_loss(rel, dair_root, tmp_path):
    from opencood.data_utils.datasets import build_dataset
    hypes = _tiny(rel, dair_root, tmp_path)
    torch.manual_seed(0)
    dataset = build_dataset(hypes, visualize=False, train=True)
    batch = dataset.collate_batch_train([dataset[0], dataset[1]])
    assert batch["ego"]["record_len"].tolist() == [2, 2]
    model = train_utils.create_model(hypes)
    criterion = train_utils.create_loss(hypes)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for _ in range(8):
        total, _ = model.training_step(batch, criterion)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    assert losses[-1] < 0.9 * losses[0] and losses[-1] == min(losses), losses


@pytest.mark.parametrize("rel, trained", [
    ("baselines/tiny/stage2/BackAlign/m1m3_att.yaml", ("encoder_m3", "backbone_m3", "shrinker_m3")),
    ("tiny/stage2/m1m3_att.yaml", ("message_extractor_m3",))])
def test_tiny_stage2_configs_train_only_the_infrastructure_type(rel, trained, dair_root, tmp_path):
    hypes = _tiny(rel, dair_root, tmp_path)
    assert hypes["heter"]["mapping_dict"]["m2"] == "m3" and hypes["heter"]["ego_modality"] == "m1"
    model = train_utils.create_model(hypes)
    names = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert names == set(trained)


@pytest.mark.slow  # full geometry (512 x 256 pillars, 8 M parameters): ~100 s on one core
def test_lidar_attfuse_is_the_stride_2_heal_baseline_and_trains(dair_root, tmp_path):
    """``dairv2x/LiDAROnly/lidar_attfuse.yaml``: 256 channels at stride 2 (the stage-1 m1 base otherwise); one
    training step on the synthetic DAIR world gives a loss over the 256 x 128 anchor grid."""
    from opencood.data_utils.datasets import build_dataset
    rel = os.path.join("..", "LiDAROnly", "lidar_attfuse.yaml")
    hypes = _tiny(rel, dair_root, tmp_path)
    base = load_yaml(os.path.join(DAIR, "baselines", "stage1", "m1_att.yaml"))
    assert hypes["postprocess"]["anchor_args"]["feature_stride"] == 2 and hypes["model"]["args"]["in_head"] == 256
    assert base["postprocess"]["anchor_args"]["feature_stride"] == 4 and base["model"]["args"]["in_head"] == 128
    dataset = build_dataset(hypes, visualize=False, train=True)
    assert dataset.anchor_box.shape[:3] == (128, 256, 2)  # (H', W', A): 102.4 m / 0.4 m / 2
    batch = dataset.collate_batch_train([dataset[0]])
    model = train_utils.create_model(hypes)
    total, _ = model.training_step(batch, train_utils.create_loss(hypes))
    total.backward()
    assert torch.isfinite(total) and float(total) > 0
