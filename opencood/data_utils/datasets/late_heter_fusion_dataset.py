"""Heterogeneous late / single-agent samples (``lateheter``; HEAL's backward alignment, spec baselines §C1).

:class:`LateFusionDataset` with each agent's input of its OWN type (``intermediateheter``'s per-type voxelisers
and camera inputs): training gives one random agent per sample in its own frame with its own labels; testing
one entry per agent in range (late fusion of the per-agent detections). Agents whose type is not in
``heter.modality_setting`` are dropped (a sample whose ego is dropped is skipped in evaluation).

Batch (``batch['ego']``, B samples = B agents): ``inputs_mX`` (the agents of type mX, rows in
``agent_modality_list`` order), ``agent_modality_list``, ``record_len`` ones, ``label_dict`` and
``label_dict_single`` = the same per-agent labels (so the pyramid loss's occupancy term applies), plus the
usual GT entries. Camera agents read no LiDAR cloud; the world augmentation (flip / rotation / scaling of
points and boxes) cannot move images, so it is refused when a camera type is configured. Each type's
voxeliser works on ``cav_lidar_range``, so the evaluation range (late fusion's ``agent_range``) must equal it.
"""
import numpy as np

from opencood.data_utils.datasets.intermediate_heter_fusion_dataset import HeterInputsMixin
from opencood.data_utils.datasets.late_fusion_dataset import LateFusionDataset
from opencood.utils.errors import ConfigError
from opencood.utils.registry import DATASETS


@DATASETS.register("lateheter", "lateheterfusion")
class LateheterFusionDataset(HeterInputsMixin, LateFusionDataset):
    """Per-agent samples with per-type inputs (see module docstring)."""

    heterogeneous = True

    def __init__(self, params, visualize=False, train=True):
        super().__init__(params, visualize, train)
        self.build_type_inputs(train)
        cameras = [m for m in self.heter.modalities if self.heter.sensor_type(m) != "lidar"]
        if cameras and params.get("data_augment"):
            raise ConfigError(f"{self.source}: key 'data_augment' moves points and boxes but not the images of "
                              f"camera type {cameras[0]} (lateheter); remove it")
        if list(self.agent_range) != list(self.cav_lidar_range):
            raise ConfigError(f"{self.source}: postprocess.gt_range reaches outside cav_lidar_range; lateheter "
                              f"evaluates each type on its own voxeliser's cav_lidar_range")

    def agents_of(self, idx, rng):
        """The agents whose type takes input (camera agents get an empty cloud); [] when the ego's type does
        not (evaluation skips the sample)."""
        agents = [a for a in super().agents_of(idx, rng) if self.keep_agent(a)]
        if not self.train and (not agents or not agents[0].is_ego):
            return []
        for a in agents:
            if a.points is None:
                a.points = np.zeros((0, 4), dtype=np.float32)
        return agents

    def agent_input(self, agent, points, rng):
        """``{'inputs_<type>': the agent's input of its type, 'agent_modality': type}``."""
        return {f"inputs_{agent.modality}": self.type_input(agent, points, rng), "agent_modality": agent.modality}

    def collate_sample_inputs(self, samples):
        """``inputs_mX`` per type (rows in sample order) and ``agent_modality_list``."""
        modality_list = [s["agent_modality"] for s in samples]
        out = {"agent_modality_list": modality_list}
        for m in self.heter.modalities:
            items = [s[f"inputs_{m}"] for s in samples if s["agent_modality"] == m]
            if items:
                out[f"inputs_{m}"] = self.collate_type(m, items)
        return out

    def collate_one_cloud_per_sample(self, samples):
        """The late collate + ``label_dict_single`` (= ``label_dict``: every sample is one agent)."""
        out = super().collate_one_cloud_per_sample(samples)
        out["label_dict_single"] = out["label_dict"]
        return out
