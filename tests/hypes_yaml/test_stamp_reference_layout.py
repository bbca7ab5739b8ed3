"""The reference's STAMP config layout (yaml_parsers, per-type pre/post-processing, heads and fusion keys, loss per
type + loss_adapter, fusion.stamp) loads: translated by hypes_yaml/stamp_layout.py, then validated and built. The
fixtures are written in that layout at the tiny demo geometry."""
import copy
import os

import pytest
import torch
import yaml

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.stamp_layout import from_stamp_layout
from opencood.hypes_yaml.yaml_utils import load_yaml, read_config
from opencood.tools import train_utils
from opencood.utils.errors import ConfigError

HERE = os.path.join(os.path.dirname(__file__), "stamp_reference_layout")


def test_stage2_layout_translates_to_one_grid_one_head_set():
    h = load_yaml(os.path.join(HERE, "m0m1_att.yaml"))
    assert h["yaml_parser"] == "load_general_params" and "yaml_parsers" not in h and "loss_adapter" not in h
    assert h["preprocess"]["args"]["voxel_size"] == [0.8, 0.8, 4]  # the ego m1's voxeliser = the anchor grid
    assert "voxel_size" not in h["postprocess"] and h["postprocess"]["anchor_args"]["H"] == 64
    assert all("postprocess" not in s for s in h["heter"]["modality_setting"].values())
    args = h["model"]["args"]
    assert (args["fusion_method"], args["att"], args["in_head"]) == ("att", {"feat_dim": 64}, 64)
    for m in ("m0", "m1"):
        assert not {"in_head", "anchor_number", "dir_args", "fusion_method", "att", "lidar_range",
                    "aligner_args"} & set(args[m])
    assert h["heter"]["cav_preference"] == {"m1": 1.0} and "stamp" not in h["fusion"]
    assert h["loss"]["core_method"] == "adapter_loss"
    assert h["loss"]["args"]["alpha_M2P"] == 10.0 and h["loss"]["args"]["cls"]["weight"] == 2.0
    model, loss = train_utils.create_model(h), train_utils.create_loss(h)
    assert model.stage == "train_adapter" and model.trainable_modules == ["adapter_m1", "reverter_m1"]
    assert type(loss).__name__ == "AdapterLoss"


def test_infer_layout_without_protocol_section_builds_with_the_reference_degradation():
    h = load_yaml(os.path.join(HERE, "m1m3_att_infer.yaml"))
    assert h["loss"]["core_method"] == "point_pillar_depth_loss"  # infer: the ego type's loss, no loss_adapter
    model = train_utils.create_model(h)
    assert model.stage == "infer" and model.trainable_parameter_count() == 0 and "encoder_m0" not in dict(
        model.named_children())
    assert model.degradation.active and model.degradation.mask_ratio == pytest.approx(0.2)


def test_translated_reference_config_trains_its_adapter(make_tiny_config):
    """The reference-layout file pointed at the tiny world: dataset, model, loss and two steps that lower it."""
    h = load_yaml(make_tiny_config(os.path.join(HERE, "m0m1_att.yaml")))
    torch.manual_seed(0)
    model, criterion = train_utils.create_model(h), train_utils.create_loss(h)
    ds = build_dataset(h, train=True)
    batch = ds.collate_batch_train([ds[0]])
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    losses = []
    for _ in range(3):
        total, _ = model.training_step(batch, criterion)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(total.detach()))
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("edit,match", [
    (lambda h: h["yaml_parsers"].update(m1="load_point_pillar_params"), "'yaml_parsers' should name one parser"),
    (lambda h: h["model"]["args"]["m1"].update(aligner_args={"core_method": "convnext"}),
     "model.args.m1.aligner_args: only 'identity'"),
    (lambda h: h["loss"].pop("m1"), "missing key 'loss.m1'"),
    (lambda h: h["heter"]["modality_setting"]["m1"].pop("postprocess"),
     "missing key 'heter.modality_setting.m1.postprocess'"),
])
def test_untranslatable_layouts_are_one_line_errors(edit, match):
    h = copy.deepcopy(read_config(os.path.join(HERE, "m0m1_att.yaml")))
    edit(h)
    with pytest.raises(ConfigError, match=match) as e:
        from_stamp_layout(h, "ref.yaml")
    assert str(e.value).startswith("ref.yaml: ") and "\n" not in str(e.value)


def test_fixtures_are_in_the_reference_layout():
    for name in ("m0m1_att.yaml", "m1m3_att_infer.yaml"):
        with open(os.path.join(HERE, name)) as f:
            raw = yaml.safe_load(f)
        assert "yaml_parsers" in raw and "preprocess" not in raw and "postprocess" not in raw
        assert "core_method" not in raw["loss"] and "loss_adapter" in raw


def test_inference_layout_with_yaml_parser_and_top_level_sections_is_translated(tmp_path):
    """The reference's infer files have yaml_parser, top-level pre/post-processing and a per-type loss."""
    h = read_config(os.path.join(HERE, "m1m3_att_infer.yaml"))
    parsers = h.pop("yaml_parsers")
    h["yaml_parser"] = parsers["m1"]
    h["preprocess"] = copy.deepcopy(h["heter"]["modality_setting"]["m1"]["preprocess"])
    h["postprocess"] = copy.deepcopy(h["heter"]["modality_setting"]["m1"].pop("postprocess"))
    h["postprocess"].pop("voxel_size")
    h["heter"]["modality_setting"]["m3"].pop("postprocess")
    path = tmp_path / "infer.yaml"
    path.write_text(yaml.safe_dump(h))
    loaded = load_yaml(str(path))
    assert loaded["loss"]["core_method"] == "point_pillar_depth_loss"
    assert "lidar_range" not in loaded["model"]["args"]["m1"]
    assert train_utils.create_model(loaded).stage == "infer"


def test_protocol_adapters_and_the_stamp_base_loader_name_are_translated():
    h = copy.deepcopy(read_config(os.path.join(HERE, "m0m1_att.yaml")))
    h["model"]["args"]["m0"]["adapter"] = copy.deepcopy(h["model"]["args"]["m1"]["adapter"])
    h["fusion"]["dataset"] = "opv2v4stamp"
    out = from_stamp_layout(h, "ref.yaml")
    assert "adapter" not in out["model"]["args"]["m0"] and out["fusion"]["dataset"] == "opv2v"
