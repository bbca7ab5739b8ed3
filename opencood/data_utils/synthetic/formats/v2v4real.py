"""V2V4Real: the synthetic world in V2V4Real's on-disk layout (two connected cars, per-car labels).

Tree under ``root``::

    V2V4Real/<split>/<scenario>/<cav_id>/<ts>.yaml, <ts>.pcd        cav_id = 0, 1
    modality_assign/v2v4real_4modality.json, modality_assign/v2v4real_4modality_in_order.json
    .opencood_synthetic.json

Written as the OPV2V world with two vehicles per scenario (``generator``), then turned into V2V4Real's
conventions: agent folders renamed ``0`` / ``1`` (string order of the actor ids, so the eval ego stays the
same car), no camera entries in the YAMLs (V2V4Real is LiDAR only), and every ``vehicles`` entry keyed by a
**per-car local id** (1, 2, ... in the order of the world ids within each car's folder) with
``obj_type`` (``Car`` or ``Truck``) and ``ass_id`` (the world id when both cars list the object in that frame,
else -1). The loader (``v2v4real_basedataset``) thus recovers the world's object identity only through
``ass_id``, as with the real labels.
"""
import os

from opencood.data_utils.synthetic import writers
from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
from opencood.data_utils.synthetic.generator import Layout, generate
from opencood.data_utils.datasets.basedataset.opv2v_basedataset import load_yaml_text

V2V4REAL_LAYOUT = Layout(dataset="V2V4Real", hetero=None, additional=False, modality_prefix="v2v4real")
NUM_CAVS = 2
CAMERA_KEYS = tuple(f"camera{i}" for i in range(4))


def _read(path):
    with open(path) as f:
        return load_yaml_text(f.read())


def _convert_scenario(scen_dir):
    """Rename the two agent folders to 0 / 1 and rewrite their YAMLs (local ids, obj_type, ass_id)."""
    world_ids = sorted((d for d in os.listdir(scen_dir) if os.path.isdir(os.path.join(scen_dir, d))), key=str)
    stamps = sorted(f[:-5] for f in os.listdir(os.path.join(scen_dir, world_ids[0])) if f.endswith(".yaml"))
    local = {}  # (cav index, world object id) -> local id, numbered per car in world-id order
    for k, cav in enumerate(world_ids):
        seen = sorted({o for ts in stamps for o in _read(os.path.join(scen_dir, cav, f"{ts}.yaml"))["vehicles"]})
        local.update({(k, o): i + 1 for i, o in enumerate(seen)})
    for ts in stamps:
        params = [_read(os.path.join(scen_dir, cav, f"{ts}.yaml")) for cav in world_ids]
        both = set(params[0]["vehicles"]) & set(params[1]["vehicles"])
        for k, (cav, p) in enumerate(zip(world_ids, params)):
            for key in CAMERA_KEYS:
                p.pop(key, None)
            p["vehicles"] = {local[(k, o)]: dict(entry, obj_type=entry.get("obj_type", "Car"),
                                                  ass_id=int(o) if o in both else -1)
                             for o, entry in p["vehicles"].items()}
            writers.write_yaml(os.path.join(scen_dir, cav, f"{ts}.yaml"), p)
    for k, cav in enumerate(world_ids):
        os.rename(os.path.join(scen_dir, cav), os.path.join(scen_dir, f"_{k}"))
    for k in range(len(world_ids)):
        os.rename(os.path.join(scen_dir, f"_{k}"), os.path.join(scen_dir, str(k)))


@SYNTHETIC_FORMATS.register("v2v4real")
def write(root, preset="tiny", seed=0, workers=1, progress=True, agents=None, infrastructure=None, **options):
    """Write the synthetic world as V2V4Real under ``root`` (arguments and summary as ``generator.generate``;
    always two cars and no infrastructure).

    Raises:
        ValueError: ``agents`` or ``infrastructure`` ask for anything else.
    """
    if agents is not None and tuple(agents if not isinstance(agents, int) else (agents,)) not in ((2,), (2, 2)):
        raise ValueError(f"V2V4Real has exactly {NUM_CAVS} agents per scenario, got agents={agents}")
    if infrastructure:
        raise ValueError("V2V4Real has no infrastructure agents")
    summary = generate(root, preset=preset, seed=seed, workers=workers, progress=progress, layout=V2V4REAL_LAYOUT,
                       agents=NUM_CAVS, **options)
    by_split = {}
    for split, names in summary["scenarios"].items():
        for name in names:
            _convert_scenario(os.path.join(root, V2V4REAL_LAYOUT.dataset, split, name))
        by_split[split] = {name: ["0", "1"] for name in names}
    assign = os.path.join(root, "modality_assign")
    writers.write_json(os.path.join(assign, "v2v4real_4modality.json"), writers.modality_assignment(by_split))
    writers.write_json(os.path.join(assign, "v2v4real_4modality_in_order.json"),
                       writers.modality_in_order(by_split["test"]))
    return summary
