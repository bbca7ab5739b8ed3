"""The shipped DAIR-V2X-C GenComm configs load and build; the tiny stage-1 config trains on the synthetic DAIR world."""
import glob
import os

import pytest
import torch

from opencood.hypes_yaml.yaml_utils import load_yaml, read_config, save_yaml
from opencood.tools import train_utils

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FULL = "opencood/hypes_yaml/dairv2x/GenComm_yamls/gencomm"
TINY_M1 = "opencood/hypes_yaml/dairv2x/GenComm_yamls/tiny/stage1/m1_att.yaml"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, FULL, "stage*", "*.yaml"))),
                         ids=os.path.basename)
def test_full_configs_load_and_build(path):
    hypes = load_yaml(path)
    assert hypes["fusion"]["dataset"] == "dairv2x" and hypes["train_params"]["max_cav"] == 2
    assert hypes["postprocess"]["gt_range"] == [-102.4, -51.2, -3.5, 102.4, 51.2, 1.5]
    assert not hypes["heter"].get("lidar_channels_dict")  # DAIR has no 32/16-beam clouds
    model = train_utils.create_model(hypes)
    assert hasattr(model, "encoder_m1" if "m1" in os.path.basename(path) else "encoder_m3")


def test_stage2_maps_the_infrastructure_to_m3():
    hypes = load_yaml(os.path.join(REPO, FULL, "stage2", "m1m3_att.yaml"))
    assert hypes["heter"]["mapping_dict"]["m1"] == "m1" and hypes["heter"]["mapping_dict"]["m2"] == "m3"
    assert hypes["heter"]["ego_modality"] == "m1"


@pytest.fixture(scope="module")
def dair_root(tmp_path_factory):
    from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
    root = str(tmp_path_factory.mktemp("dair_world"))
    SYNTHETIC_FORMATS.get("dairv2x")(root, preset="tiny", seed=0, progress=False)
    return root


def test_tiny_stage1_training_steps_lower_the_loss(dair_root, tmp_path):
    from opencood.data_utils.datasets import build_dataset
    h = read_config(os.path.join(REPO, TINY_M1))
    for key in ("data_dir", "root_dir", "validate_dir", "test_dir"):
        h[key] = h[key].replace("dataset", dair_root, 1)
    path = os.path.join(str(tmp_path), "config_src.yaml")
    save_yaml(h, path)
    hypes = load_yaml(path)
    torch.manual_seed(0)
    dataset = build_dataset(hypes, visualize=False, train=True)
    batch = dataset.collate_batch_train([dataset[0], dataset[1]])
    assert batch["ego"]["record_len"].tolist() == [2, 2] and batch["ego"]["object_bbx_mask"].sum() > 0
    model = train_utils.create_model(hypes)
    criterion = train_utils.create_loss(hypes)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for _ in range(7):
        total, _ = model.training_step(batch, criterion)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    assert losses[-1] < 0.8 * losses[0] and losses[-1] == min(losses), losses
