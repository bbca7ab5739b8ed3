"""GenComm with V2X-ViT fusion (paper Table 1 block B): every shipped *_v2xvit file loads and builds."""
from pathlib import Path

import pytest

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.models.fuse_modules.v2xvit_fuse import V2XViTFusion
from opencood.tools.train_utils import create_model

ROOT = Path(__file__).parents[2] / "opencood" / "hypes_yaml" / "opv2v" / "GenComm_yamls" / "gencomm"
FILES = sorted(ROOT.glob("stage*/*_v2xvit*.yaml"))
EXPECTED = {"m1_v2xvit", "m2_v2xvit", "m3_v2xvit", "m4_v2xvit", "m1m2_v2xvit", "m1m3_v2xvit", "m1m4_v2xvit",
            "m1m2m3m4_v2xvit_infer"}


def test_every_reference_v2xvit_file_is_shipped():
    assert {p.stem for p in FILES} == EXPECTED


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_v2xvit_config_builds_with_the_att_twin_otherwise_equal(path):
    hypes = load_yaml(str(path))
    model = create_model(hypes)
    assert isinstance(model.fusion_net, V2XViTFusion)
    assert sum(p.numel() for p in model.fusion_net.parameters()) == 2_488_569
    twin = load_yaml(str(path).replace("_v2xvit", "_att"))
    for h in (hypes, twin):
        for key in ("name", "_source"):
            h.pop(key, None)
    args, twin_args = hypes["model"]["args"], twin["model"]["args"]
    assert args.pop("fusion_method") == "v2xvit" and twin_args.pop("fusion_method") == "att"
    args.pop("v2xvit"), args.pop("att", None), twin_args.pop("att")
    assert {k: v for k, v in hypes.items() if not k.startswith("_")} == \
        {k: v for k, v in twin.items() if not k.startswith("_")}
