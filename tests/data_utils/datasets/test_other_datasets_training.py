"""A few training steps of the tiny LiDAR AttFuse config on each other dataset's synthetic twin lower the loss
(make_synthetic --format v2xset | v2v4real | v2xsim, then opencood/hypes_yaml/demo/datasets/<format>_lidar_att.yaml)."""
import os

import pytest
import torch

from opencood.data_utils.datasets import build_dataset
from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
from opencood.hypes_yaml.yaml_utils import load_yaml, read_config, save_yaml
from opencood.tools import train_utils

WORLD = dict(preset="tiny", seed=0, scenarios=(2, 0, 0), agents=2, frames=2, cameras=False, progress=False)


def _config(fmt, root, tmp_path):
    h = read_config(f"opencood/hypes_yaml/demo/datasets/{fmt}_lidar_att.yaml")
    for key in ("root_dir", "validate_dir", "test_dir"):
        h[key] = h[key].replace("dataset", root, 1)
    if h["heter"].get("assignment_path"):
        h["heter"]["assignment_path"] = h["heter"]["assignment_path"].replace("dataset", root, 1)
    h["train_params"]["batch_size"] = 2
    path = os.path.join(str(tmp_path), f"{fmt}.yaml")
    save_yaml(h, path)
    return load_yaml(path)


@pytest.mark.parametrize("fmt", ["v2xset", "v2v4real", "v2xsim"])
def test_training_steps_lower_the_loss(fmt, tmp_path):
    root = str(tmp_path / "data")
    SYNTHETIC_FORMATS.get(fmt)(root, **WORLD)
    hypes = _config(fmt, root, tmp_path)
    torch.manual_seed(0)
    dataset = build_dataset(hypes, visualize=False, train=True)
    assert len(dataset) == 4
    batches = [dataset.collate_batch_train([dataset[i], dataset[i + 1]]) for i in (0, 2)]
    assert all(int(b["ego"]["object_bbx_mask"].sum()) > 0 for b in batches)
    model = train_utils.create_model(hypes)
    criterion = train_utils.create_loss(hypes)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for step in range(10):
        total, _ = model.training_step(batches[step % 2], criterion)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    assert sum(losses[-2:]) < 0.7 * sum(losses[:2]), losses
