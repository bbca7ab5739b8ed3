"""STAMP's data (``intermediateheteradapter``, spec baselines §C2): heterogeneous intermediate-fusion samples in
which every agent's sensor data is ALSO given to the protocol type.

``heter.protocol_modality`` (m0) names the protocol type; its ``heter.modality_setting`` entry gives the
voxeliser. Besides ``inputs_mX`` of each agent's own type (as ``intermediateheter``), every agent's LiDAR cloud
(the same cloud its own type reads; camera agents: the 64-beam cloud, read for the protocol only) is voxelised
for the protocol type into ``inputs_m0``: row i = agent i in ``agent_modality_list`` order, so the STAMP model
compares F_M and F_P of the same agent and the same sensor data. The protocol type is never an agent's type
(rejected at start when ``ego_modality`` / ``cav_preference`` / ``mapping_dict`` could give it). The labels are
the usual fused ones (every type here hands its map on the one shared grid).
"""
from opencood.data_utils.datasets.intermediate_heter_fusion_dataset import IntermediateheterFusionDataset
from opencood.utils.errors import ConfigError, DataError
from opencood.utils.registry import DATASETS


@DATASETS.register("intermediateheteradapter")
class IntermediateheterAdapterFusionDataset(IntermediateheterFusionDataset):
    """Intermediate heterogeneous samples + every agent's input for the protocol type (module docstring)."""

    def __init__(self, params, visualize=False, train=True):
        super().__init__(params, visualize, train)
        p = self.heter.protocol_modality
        where = f"{self.source}: heter.protocol_modality"
        if p is None:
            raise ConfigError(f"{self.source}: missing key 'heter.protocol_modality' (fusion.core_method "
                              f"intermediateheteradapter feeds every agent's data to that type)")
        if p not in self.modality_pre_processors or self.heter.sensor_type(p) != "lidar":
            raise ConfigError(f"{where} '{p}' needs a LiDAR entry with a preprocess in heter.modality_setting")
        givers = {"heter.ego_modality": self.heter.ego_modality,
                  "heter.cav_preference": [m for m, w in self.heter.cav_preference.items() if w > 0],
                  "heter.mapping_dict": list(self.heter.mapping_dict.values())}
        for key, types in givers.items():
            if p in types:
                raise ConfigError(f"{where} '{p}' is an agent type through '{key}'; the protocol type only "
                                  f"receives the other agents' data")
        self.protocol = p

    def agent_inputs(self, agents, ego_pose, rng):
        """The agents' own-type inputs + ``inputs_<protocol>`` = every agent's cloud for the protocol type."""
        out = super().agent_inputs(agents, ego_pose, rng)
        pre = self.modality_pre_processors[self.protocol]
        rows = []
        for agent in agents:
            if agent.points is None:
                raise DataError(f"{agent.scenario}/{agent.agent_id}/{agent.timestamp}: no LiDAR cloud for the "
                                f"protocol type {self.protocol}")
            rows.append(pre.preprocess(self.prepare_points(agent, ego_pose, rng)))
        out[f"inputs_{self.protocol}"] = rows  # collated like any LiDAR type's inputs (rows 0..N-1)
        return out

