"""V2XSet: the synthetic world in V2XSet's on-disk layout (spec data_eval §1.7).

Tree under ``root``::

    V2XSET/<split>/<scenario>/data_protocol.yaml
    V2XSET/<split>/<scenario>/<agent_id>/<ts>.pcd, <ts>.yaml, <ts>_camera0..3.png    RSUs: agent ids -1, -2, ...
    modality_assign/v2xset_4modality.json, modality_assign/v2xset_4modality_in_order.json
    .opencood_synthetic.json

Files are the OPV2V ones (``generator``), with one road-side unit per scenario unless ``infrastructure`` says
otherwise; no OPV2V-H companions and no ``bev_visibility`` (V2XSet has neither).
"""
from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
from opencood.data_utils.synthetic.generator import Layout, generate

V2XSET_LAYOUT = Layout(dataset="V2XSET", hetero=None, additional=False, modality_prefix="v2xset")
DEFAULT_INFRASTRUCTURE = 1


@SYNTHETIC_FORMATS.register("v2xset")
def write(root, preset="tiny", seed=0, workers=1, progress=True, infrastructure=None, **options):
    """Write the synthetic world as V2XSet under ``root`` (arguments and summary as ``generator.generate``;
    ``infrastructure`` default :data:`DEFAULT_INFRASTRUCTURE`)."""
    if infrastructure is None:
        infrastructure = DEFAULT_INFRASTRUCTURE
    return generate(root, preset=preset, seed=seed, workers=workers, progress=progress, layout=V2XSET_LAYOUT,
                    infrastructure=infrastructure, **options)
