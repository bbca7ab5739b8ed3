"""Every tiny zoo config (opencood/hypes_yaml/demo/zoo/*.yaml) loads through its base and builds model and loss."""
from pathlib import Path

import pytest

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools.train_utils import create_loss, create_model

ZOO = sorted((Path(__file__).parents[2] / "opencood" / "hypes_yaml" / "demo" / "zoo").glob("*.yaml"))


def test_zoo_folder_has_configs():
    assert {"lidar_att.yaml", "lidar_fcooper.yaml"} <= {p.name for p in ZOO}


@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_zoo_config_builds(path):
    hypes = load_yaml(str(path))
    assert hypes["name"] == "zoo_" + path.stem
    model = create_model(hypes)
    create_loss(hypes)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0


def test_att_zoo_config_is_the_demo_foundation_config():
    """The base plus lidar_att.yaml resolves to exactly the foundation demo's AttFuse config."""
    demo = load_yaml("opencood/hypes_yaml/demo/m1_pointpillar_attfuse.yaml")
    zoo = load_yaml("opencood/hypes_yaml/demo/zoo/lidar_att.yaml")
    for h in (demo, zoo):
        h.pop("name"), h.pop("_source", None)
    assert zoo == demo
