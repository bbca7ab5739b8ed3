"""A 3-class anchor head (vehicle, pedestrian, truck) trained on the tiny synthetic world through the real
dataset: trucks (synthetic ``obj_type: Truck``) reach the labels as class 2, and the loss falls."""
import os

import torch

DEMO_M1 = "opencood/hypes_yaml/demo/gencomm/stage1/m1_att.yaml"
CLASSES = [
    {"name": "vehicle", "l": 3.9, "w": 1.6, "h": 1.56, "z": -1.0, "r": [0, 90]},
    {"name": "pedestrian", "l": 0.8, "w": 0.6, "h": 1.73, "z": -0.6, "r": [0, 90],
     "pos_threshold": 0.5, "neg_threshold": 0.35},
    {"name": "truck", "l": 8.0, "w": 3.0, "h": 3.0, "z": -1.0, "r": [0, 90]},
]


def _three_class_config(make_tiny_config, tmp_path):
    from opencood.hypes_yaml.yaml_utils import read_config, save_yaml
    h = read_config(make_tiny_config(DEMO_M1, batch_size=2))
    anchor = h["postprocess"]["anchor_args"]
    for key in ("l", "w", "h", "r", "num"):
        anchor.pop(key, None)
    anchor["classes"] = CLASSES
    h["postprocess"]["max_box_extent"] = 100.0
    for key in ("anchor_number",):
        h["model"]["args"].pop(key, None)
    path = os.path.join(str(tmp_path), "three_class.yaml")
    save_yaml(h, path)
    return path


def test_three_class_head_on_the_synthetic_world(make_tiny_config, tmp_path):
    from opencood.data_utils.datasets import build_dataset
    from opencood.hypes_yaml.yaml_utils import load_yaml
    from opencood.tools import train_utils
    hypes = load_yaml(_three_class_config(make_tiny_config, tmp_path))
    assert hypes["model"]["args"]["anchor_number"] == 6  # derived: 3 classes x 2 yaws
    torch.manual_seed(0)
    dataset = build_dataset(hypes, visualize=False, train=True)
    model = train_utils.create_model(hypes)
    criterion = train_utils.create_loss(hypes)
    batches = [dataset.collate_batch_train([dataset[i], dataset[i + 1]]) for i in range(0, 4, 2)]
    classes = torch.cat([b["ego"]["object_bbx_class"][b["ego"]["object_bbx_mask"] > 0] for b in batches])
    assert int((classes == 2).sum()) > 0 and int((classes == 0).sum()) > 0  # trucks and cars in the GT
    pos = batches[0]["ego"]["label_dict"]["pos_equal_one"]  # (B, H', W', 6)
    assert pos.shape[-1] == 6 and pos[..., 4:6].sum() > 0  # truck anchors (slots 4, 5) get positives
    out = model(batches[0]["ego"])
    assert out["cls_preds"].shape[1] == 6 and out["reg_preds"].shape[1] == 42
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for step in range(12):
        total, _ = model.training_step(batches[step % 2], criterion)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    assert sum(losses[-2:]) < 0.7 * sum(losses[:2]), losses
