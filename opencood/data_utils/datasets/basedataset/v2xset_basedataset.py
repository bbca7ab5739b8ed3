"""Base loader of V2XSet (spec data_eval §1.7): the OPV2V layout with road-side units.

Layout (``root_dir`` / ``validate_dir`` = ``dataset/V2XSET/<split>``)::

    V2XSET/{train,validate,test}/<scenario>/<agent_id>/<ts>.yaml, <ts>.pcd, <ts>_camera0..3.png

Agent folders are CARLA actor ids; road-side units (RSUs) have negative ids (``-1``). Files, keys and units are
those of OPV2V (``opv2v_basedataset``). Deltas from OPV2V:

* RSUs never lead: every negative id is moved behind the vehicles (the reference moves only a leading one,
  which is the same for its single-RSU scenarios), so a vehicle is the ego whenever one is present;
  ``AgentFrame.is_infrastructure`` marks them.
* Scenario ``2021_09_09_13_20_58`` (three cameras only) is dropped when cameras are read.
* No ``bev_visibility`` and no OPV2V-H companions ship with it (``V2XSET_Hetero`` is looked for only when a
  config asks for 32/16-beam clouds or depth).
"""
from opencood.data_utils.datasets.basedataset.dataset_tree import V2XSET_THREE_CAMERA_SCENARIO
from opencood.data_utils.datasets.basedataset.opv2v_basedataset import OPV2VBaseDataset
from opencood.utils.registry import BASE_DATASETS


@BASE_DATASETS.register("v2xset")
class V2XSetBaseDataset(OPV2VBaseDataset):
    """V2XSet splits (OPV2V loader with V2XSet's agent order and scenario filter; module docstring)."""

    def skip_scenarios(self, need):
        """The three-camera scenario when cameras are read."""
        return (V2XSET_THREE_CAMERA_SCENARIO,) if need["camera"] else ()

    @staticmethod
    def infrastructure_last(cavs):
        """Vehicles first (in the given order), then every RSU (negative id), in the given order."""
        return [c for c in cavs if not c.startswith("-")] + [c for c in cavs if c.startswith("-")]
