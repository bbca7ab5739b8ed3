"""Base loader of V2V4Real: real-world V2V recordings of two connected cars in the OPV2V layout.

Layout (``root_dir`` / ``validate_dir`` = ``dataset/V2V4Real/<split>``)::

    V2V4Real/{train,validate,test}/<scenario>/<cav_id>/<ts>.yaml, <ts>.pcd       cav_id = 0, 1

Agent YAMLs have OPV2V's keys (``lidar_pose`` metres/degrees, ``vehicles`` in the world frame, half extents);
each ``vehicles[id]`` entry may also carry

* ``obj_type``: ``Car`` when absent; ``Pedestrian`` entries are skipped (V2V4Real's benchmark is vehicles
  only); other types map to super-classes by ``opv2v_basedataset.OBJ_TYPE_CLASSES`` (``Truck``, ``Van``,
  ``Bus`` -> truck); an unknown type is a one-line ``DataError`` naming the file and key;
* ``ass_id``: the association of the object across the two cars' labels (both list the object under their
  own local ids with the same ``ass_id``; -1 or absent: labelled by this car only).

The GT id of an object is its ``ass_id`` when it has one (so the fused GT holds it once) and
``"<cav_id>/<local id>"`` otherwise. (The reference uses ``local id + 100 * cav_id``, which collides with
``ass_id`` values and with local ids >= 100; see docs/differences.md.)

Checked at start, all at once (with the missing-file check of ``dataset_tree.scan_split``): every scenario
has exactly two agent folders with integer names.
"""
from opencood.data_utils.datasets.basedataset.opv2v_basedataset import OPV2VBaseDataset, object_class
from opencood.utils.errors import DataError
from opencood.utils.registry import BASE_DATASETS

NUM_AGENTS = 2
SKIPPED_TYPES = ("Pedestrian",)
MAX_LISTED_PROBLEMS = 5


@BASE_DATASETS.register("v2v4real")
class V2V4RealBaseDataset(OPV2VBaseDataset):
    """V2V4Real splits (OPV2V loader with V2V4Real's object types and association ids; module docstring)."""

    def __init__(self, params, visualize=False, train=True, heterogeneous=False, order="hwl"):
        super().__init__(params, visualize, train, heterogeneous, order)
        problems = []
        for scen in self.scenario_database:
            cavs = sorted(scen["cavs"])
            if len(cavs) != NUM_AGENTS:
                problems.append(f"{scen['path']}: {len(cavs)} agent folders ({', '.join(cavs)}), expected "
                                f"{NUM_AGENTS}")
            problems += [f"{scen['path']}/{c}: agent folder name is not an integer id" for c in cavs
                         if not c.lstrip("-").isdigit()]
        if problems:
            shown = "; ".join(problems[:MAX_LISTED_PROBLEMS])
            more = f" (and {len(problems) - MAX_LISTED_PROBLEMS} more)" if len(problems) > MAX_LISTED_PROBLEMS else ""
            raise DataError(f"{self.split_dir}: {len(problems)} dataset problem{'s' * (len(problems) > 1)}: "
                            f"{shown}{more}")

    def agent_objects(self, vehicles, cav, path):
        """``vehicles`` without pedestrians, keyed by GT id (``ass_id``, else ``"<cav>/<local id>"``)."""
        objects = {}
        for local_id, entry in vehicles.items():
            if entry.get("obj_type", "Car") in SKIPPED_TYPES:
                continue
            object_class(entry.get("obj_type"), path, local_id)  # an unknown type is reported under its YAML key
            ass_id = entry.get("ass_id", -1)
            if not isinstance(ass_id, int) or isinstance(ass_id, bool):
                raise DataError(f"{path}: key 'vehicles.{local_id}.ass_id' must be an integer, got {ass_id!r}")
            gt_id = ass_id if ass_id != -1 else f"{cav}/{local_id}"
            if gt_id in objects:
                raise DataError(f"{path}: key 'vehicles.{local_id}.ass_id' = {ass_id} is used by two objects")
            objects[gt_id] = entry
        return objects
