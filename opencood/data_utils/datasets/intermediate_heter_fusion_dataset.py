"""Heterogeneous intermediate fusion (spec data_eval §3.3, §3.4; gencomm_method §2, §8).

Every agent has a type ``mX`` (``opencood.utils.heter_utils.HeterAssigner``); agents whose type is not a
key of ``heter.modality_setting`` are dropped. Inputs are grouped per type:

* LiDAR types: ``inputs_mX`` = voxel dicts from the type's own ``SpVoxelPreprocessor`` (e.g. m1 pillars
  0.4 x 0.4 x 4, P = 32; m3 SECOND 0.1^3, P = 5), the cloud chosen by ``lidar_channels_dict``
  (OPV2V_Hetero ``_32`` / ``_16``);
* camera types: ``inputs_mX`` = ``camera_utils.process_camera_data`` outputs (4 cameras, RGB [+ depth]);
* LiDAR + camera types (``sensor_type: lidar_camera``, one agent with both sensors): ``inputs_mX`` = the voxel
  keys and the camera keys of the same agents in one dict (the ``lidar_camera`` encoder reads both).

``agent_modality_list`` gives each agent's type in agent order; after collation the agents of type mX are
rows 0..N_mX-1 of ``inputs_mX`` (voxel coords are prefixed with that within-type index) in the order they
appear in ``agent_modality_list``, so the model restores the agent order by walking that list.
The GT is the fused LiDAR GT for every agent type (no per-agent labels are built).

``intermediateheterinfer`` (dynamic agent joining, ``inference_heter_in_order.py``) is the same dataset:
with ``fusion.args.use_cav: N`` the fused GT comes from every agent in range while only the first N
agents' inputs go to the model (``record_len = min(N, n)``), see ``IntermediateFusionDataset``.
"""
from opencood.data_utils.datasets.intermediate_fusion_dataset import IntermediateFusionDataset
from opencood.data_utils.pre_processor import build_preprocessor
from opencood.utils.camera_utils import collate_camera, parse_data_aug_conf, process_camera_data
from opencood.utils.errors import ConfigError
from opencood.utils.registry import DATASETS


class HeterInputsMixin:
    """Per-agent-type inputs shared by the heterogeneous datasets (``intermediateheter*``, ``lateheter``):
    each type's voxeliser / camera augmentation, one agent's input of its type, the per-type collate."""

    def build_type_inputs(self, train):
        """``self.heter`` = the base loader's assigner; voxelisers (LiDAR types) and camera augmentation
        (camera types) of every type of ``heter.modality_setting``."""
        self.heter = self.base.heter
        self.modality_pre_processors = {}
        self.camera_aug = {}  # mX -> parsed data_aug_conf
        for m in self.heter.modalities:
            setting = self.heter.modality_setting[m]
            where = f"heter.modality_setting.{m}"
            if self.heter.sensor_type(m) in ("lidar", "lidar_camera"):
                if setting.preprocess is None:
                    raise ConfigError(f"{self.source}: missing key '{where}.preprocess'")
                self.modality_pre_processors[m] = build_preprocessor(setting.preprocess, train, f"{where}.preprocess")
            if self.heter.sensor_type(m) == "lidar":
                continue
            for key in ("data_aug_conf", "grid_conf"):
                if setting[key] is None:
                    raise ConfigError(f"{self.source}: missing key '{where}.{key}'")
            self.camera_aug[m] = parse_data_aug_conf(setting.data_aug_conf, f"{where}.data_aug_conf", self.source)

    def preprocessor_for(self, key):
        """``inputs_mX`` entries come from the voxeliser of type mX."""
        if key.startswith("inputs_"):
            return self.modality_pre_processors.get(key[len("inputs_"):])
        return super().preprocessor_for(key)

    def keep_agent(self, agent):
        return agent.modality in self.heter.modality_setting

    def type_input(self, agent, points, rng):
        """One agent's input of its own type from its prepared cloud (P, 4): voxels, camera inputs, or (LiDAR +
        camera types) ``{'lidar': voxels, 'camera': camera inputs}``."""
        m = agent.modality
        sensor = self.heter.sensor_type(m)
        item = {}
        if sensor != "camera":
            item["lidar"] = self.modality_pre_processors[m].preprocess(points)
        if sensor != "lidar":
            item["camera"] = process_camera_data(agent.cameras, self.camera_aug[m],
                                                 self.heter.modality_setting[m].grid_conf, self.train, rng=rng)
        return item if sensor == "lidar_camera" else next(iter(item.values()))

    def collate_type(self, m, items):
        """Batch the inputs of the agents of type ``m`` (voxel coords prefixed 0..n_m-1 in item order)."""
        sensor = self.heter.sensor_type(m)
        if sensor == "lidar":
            return self.modality_pre_processors[m].collate_batch(items)
        if sensor == "camera":
            return collate_camera(items)
        return {**self.modality_pre_processors[m].collate_batch([d["lidar"] for d in items]),
                **collate_camera([d["camera"] for d in items])}


@DATASETS.register("intermediateheter", "intermediateheterfusion", "intermediateheterinfer", "intermediateheterv2xreal")
class IntermediateheterFusionDataset(HeterInputsMixin, IntermediateFusionDataset):
    """Heterogeneous intermediate-fusion samples (see module docstring)."""

    heterogeneous = True

    def __init__(self, params, visualize=False, train=True):
        super().__init__(params, visualize, train)
        self.build_type_inputs(train)

    def agent_inputs(self, agents, ego_pose, rng):
        """{'inputs_mX': [per-agent input of type mX, agent order], 'agent_modality_list': [types]}."""
        out = {f"inputs_{m}": [] for m in self.heter.modalities}
        for agent in agents:
            camera_only = self.heter.sensor_type(agent.modality) == "camera"
            points = None if camera_only else self.prepare_points(agent, ego_pose, rng)
            out[f"inputs_{agent.modality}"].append(self.type_input(agent, points, rng))
        out["agent_modality_list"] = [agent.modality for agent in agents]
        return out

    def collate_inputs(self, samples):
        """Per type: voxel dicts through that type's pre-processor, camera dicts through collate_camera (both,
        merged into one dict, for LiDAR + camera types)."""
        out = {"agent_modality_list": [m for s in samples for m in s["agent_modality_list"]]}
        for m in self.heter.modalities:
            items = [d for s in samples for d in s[f"inputs_{m}"]]
            if items:
                out[f"inputs_{m}"] = self.collate_type(m, items)
        return out
