"""What every base loader shares: the config keys, the random streams and the base-dataset API.

A base dataset reads one on-disk format and yields, per global frame index, the agents of that frame as
:class:`~opencood.data_utils.datasets.basedataset.agent_frame.AgentFrame` records (ego first). The fusion
datasets (early / intermediate / late / heter) use only this API:

* ``len(base)``; ``base.retrieve_base_data(idx, rng) -> list[AgentFrame]`` (ego first, at most ``max_cav``);
* ``base.objects_in_frame(agents, reference_pose) -> ObjectSet`` (the fused GT of some agents, in the frame
  of ``reference_pose``, de-duplicated by object id, first occurrence wins);
* ``base.sample_rng(idx)``, ``base.reinitialize()``, ``base.reseed(seed)``, ``base.sample_info(idx)``;
* ``base.load_agent_at(agent, frame_index)`` (optional; communication delay): the agent's record from an
  earlier frame of its scenario, GT objects kept from the current frame; loaders without history raise;
* attributes ``max_cav``, ``add_data_extension``, ``heter`` (a ``HeterAssigner`` or None), ``order``.

Randomness: the agent order (train) is drawn from the dataset's own ``np.random.Generator`` at construction
and in every ``reinitialize()``; per-sample draws (points shuffle, noise, agent types, augmentation) use
``sample_rng(idx)``, seeded by (seed, epoch, idx), so DataLoader workers never share a stream and a run is
reproducible. (seed, epoch) also live in a small shared-memory array: persistent DataLoader workers, which keep
their own copy of the dataset across epochs, replay the main process's ``reseed()`` / ``reinitialize()`` calls
before their next sample, so they draw exactly what a fresh worker (or ``num_workers=0``) would.
"""
import multiprocessing

import numpy as np
from torch.utils.data import Dataset

from opencood.data_utils.datasets.basedataset.agent_frame import ObjectSet
from opencood.hypes_yaml.schema import TRAIN_PARAMS
from opencood.utils.box_utils import transform_boxes
from opencood.utils.config import Key, Schema
from opencood.utils.errors import ConfigError
from opencood.utils.heter_utils import HeterAssigner
from opencood.utils.transformation_utils import x1_to_x2

INPUT_SOURCES = ("lidar", "camera", "depth")


def parse_declared(schema, node, path, source):
    """Parse the keys of the mapping ``node`` that ``schema`` declares; the others belong to other owners
    (the top level and ``train_params`` are shared by several components).

    Args:
        schema: the component's :class:`~opencood.utils.config.Schema`.
        node: the mapping (None: empty).
        path: dotted path of ``node`` ('' for the top level), for messages.
        source: config file name, for messages.

    Returns:
        a :class:`~opencood.utils.config.Cfg` with defaults filled in.
    """
    return schema.parse({k: v for k, v in (node or {}).items() if k in schema.keys}, path, source)


class BaseDataset(Dataset):
    """Shared part of every base loader (see the module docstring for the API a subclass implements).

    Args:
        params: experiment config (``load_yaml`` output).
        visualize: also load every agent's LiDAR (pictures / ``origin_lidar``).
        train: training split and behaviour (``root_dir``, random agent order) or evaluation (``validate_dir``).
        heterogeneous: read ``params['heter']`` and give every agent a ``modality``.
        order: box layout of the records' objects (``postprocess.order``: ``hwl`` or ``lwh``).

    Subclasses implement ``__len__``, ``retrieve_base_data``, ``sample_info`` and ``order_agents`` (the per-epoch
    agent order, drawn from ``self.rng``), and may override ``objects_in_frame`` and ``load_agent_at`` (frame
    history, for communication delay).
    """

    CONFIG = Schema({
        "root_dir": Key(str, None, "training split folder (required for training)"),
        "validate_dir": Key(str, None, "evaluation split folder (required for evaluation; inference.py sets it "
                                       "to test_dir)"),
        "test_dir": Key(str, None, "test split folder (read by the inference tools, which copy it to validate_dir)"),
        "seed": Key(int, 0, "seed of the dataset's random streams (agent order, agent types, noise, augmentation)"),
        "input_source": Key(list, ["lidar"], "what the loader reads: lidar, camera (4 RGB images), depth"),
        "add_data_extension": Key(list, [], "extra per-frame files <ts>_<name> (e.g. bev_visibility.png), loaded "
                                            "into AgentFrame.extensions"),
        "data_cache_dir": Key(str, None, "folder caching decoded clouds / agent YAMLs / images (None: no cache)"),
        "heter": Key(dict, None, "heterogeneous agent types (heter datasets)", schema=HeterAssigner.CONFIG),
        "ego_diff_cav": Key(bool, None, "non-ego agents never get an ego type, also at eval (GenComm stage 2); "
                                        "overrides heter.ego_diff_cav"),
    }, name="base dataset")
    TRAIN_PARAMS = Schema({"max_cav": TRAIN_PARAMS.keys["max_cav"]}, name="train_params")

    def __init__(self, params, visualize=False, train=True, heterogeneous=False, order="hwl"):
        self.params = params
        self.visualize = visualize
        self.train = train
        self.order = order
        self.source = params.get("_source", "config")
        self.cfg = cfg = parse_declared(self.CONFIG, params, "", self.source)
        split_key = "root_dir" if train else "validate_dir"
        if not cfg[split_key]:
            raise ConfigError(f"{self.source}: missing key '{split_key}'")
        self.split_dir = str(cfg[split_key])
        bad = [s for s in cfg.input_source if s not in INPUT_SOURCES]
        if bad:
            raise ConfigError(f"{self.source}: key 'input_source' has '{bad[0]}'; known: {', '.join(INPUT_SOURCES)}")
        self.input_source = list(cfg.input_source)
        self.add_data_extension = list(cfg.add_data_extension)
        self.max_cav = int(parse_declared(self.TRAIN_PARAMS, params.get("train_params"), "train_params",
                                          self.source).max_cav)
        self.seed = int(cfg.seed)
        self.rng = np.random.default_rng(self.seed)
        self.epoch = 0
        self._shared_epoch = multiprocessing.RawArray("q", [self.seed, self.epoch])  # (seed, epoch) for workers
        self.heter = None
        if heterogeneous:
            if cfg.heter is None:
                raise ConfigError(f"{self.source}: missing key 'heter' (needed by fusion.core_method "
                                  f"'{(params.get('fusion') or {}).get('core_method')}')")
            heter = params["heter"]
            ego_diff = cfg.ego_diff_cav if cfg.ego_diff_cav is not None else cfg.heter.ego_diff_cav
            self.heter = HeterAssigner(heter, ego_diff, self.source)

    # ------------------------------------------------------------------ API of a subclass
    def __len__(self):
        raise NotImplementedError

    def order_agents(self):
        """(Re)draw the agent order of every scenario for the current epoch (train: from ``self.rng``)."""
        raise NotImplementedError

    def retrieve_base_data(self, idx, rng=None):
        """The agents of sample ``idx`` as ``AgentFrame`` records, ego first (at most ``max_cav``)."""
        raise NotImplementedError

    def sample_info(self, idx):
        """(scenario name, timestamp) of sample ``idx`` (for logs and pictures)."""
        raise NotImplementedError

    def load_agent_at(self, agent, frame_index):
        """The record ``agent`` would have sent from the earlier frame ``frame_index`` of its scenario
        (communication delay, ``opencood.utils.comm_delay``): points, cameras and pose (``lidar_pose`` =
        ``lidar_pose_clean``) of that frame; ``objects`` (and the GT merging data) stay those of the current
        frame, expressed in the delayed frame's clean LiDAR frame; ``agent_id``, ``is_ego``, ``modality``,
        ``extensions`` kept; ``frame_index`` / ``timestamp`` = the delayed frame's.

        A loader that has the frame history overrides this (OPV2V and its subclasses do); the default says
        in one line that the format has none.

        Args:
            agent: ``AgentFrame`` of the current frame (written by this loader).
            frame_index: 0-based index of the earlier frame in the scenario (0 <= frame_index < agent.frame_index).

        Returns:
            a new ``AgentFrame``.
        """
        raise ConfigError(f"{self.source}: noise_setting.add_async_noise: the {type(self).__name__} loader has no "
                          f"frame history, so communication delay is not available for this dataset")

    @classmethod
    def supports_delay(cls):
        """True when the loader implements :meth:`load_agent_at`."""
        return cls.load_agent_at is not BaseDataset.load_agent_at

    def objects_in_frame(self, agents, reference_pose):
        """Fused GT of ``agents`` in the frame of ``reference_pose``.

        Default: each agent's own boxes (its clean LiDAR frame) moved by T_ref<-agent
        (``box_utils.transform_boxes``), de-duplicated by object id, first occurrence wins. A loader whose
        raw objects live elsewhere (OPV2V: world frame) or that merges differently (DAIR-V2X: by overlap)
        overrides this.

        Args:
            agents: list of ``AgentFrame``.
            reference_pose: (6,) LiDAR pose of the output frame in the world (metres, degrees).

        Returns:
            :class:`ObjectSet` with (M, 7) float32 boxes in ``self.order`` layout.
        """
        merged = {}
        for agent in agents:
            if not len(agent.objects):
                continue
            boxes = transform_boxes(agent.objects, x1_to_x2(agent.lidar_pose_clean, reference_pose), self.order)
            for i, obj_id in enumerate(agent.object_ids):
                merged.setdefault(obj_id, (boxes[i], agent.object_classes[i]))
        if not merged:
            return ObjectSet.empty()
        ids = list(merged)
        boxes = np.asarray([merged[i][0] for i in ids], dtype=np.float32).reshape(-1, 7)
        return ObjectSet(boxes, ids, [merged[i][1] for i in ids])

    # ------------------------------------------------------------------ epochs and random streams
    def reinitialize(self):
        """Start a new epoch: redraw the agent order (train) and change the per-sample random draws."""
        self.follow_main_process()
        self.epoch += 1
        self.order_agents()
        self._shared_epoch[1] = self.epoch

    def reseed(self, seed):
        """Restart the agent-order generator and the per-sample streams from ``seed``.

        The epoch counter restarts too, so ``reseed(f(epoch)); reinitialize()`` gives the same draws
        whether a run got to this epoch uninterrupted or by resuming.
        """
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.epoch = 0
        self._shared_epoch[0], self._shared_epoch[1] = self.seed, 0

    def __getstate__(self):
        """Pickle support: a worker being spawned keeps the shared (seed, epoch) memory; any other copy
        (``copy.deepcopy``, ``pickle.dumps``) gets its own array with the current values."""
        state = self.__dict__.copy()
        shared = state.pop("_shared_epoch")
        try:
            multiprocessing.context.assert_spawning(shared)
            state["_shared_epoch"] = shared
        except RuntimeError:  # not spawning a process
            state["_shared_epoch_values"] = [int(shared[0]), int(shared[1])]
        return state

    def __setstate__(self, state):
        values = state.pop("_shared_epoch_values", None)
        self.__dict__.update(state)
        if values is not None:
            self._shared_epoch = multiprocessing.RawArray("q", values)

    def follow_main_process(self):
        """In a persistent DataLoader worker: catch up with the main process's (seed, epoch) by replaying
        ``reseed(seed)`` and ``epoch`` x ``reinitialize()`` (the agent order depends on the whole sequence)."""
        seed, epoch = int(self._shared_epoch[0]), int(self._shared_epoch[1])
        if (seed, epoch) == (self.seed, self.epoch):
            return
        self.seed, self.rng, self.epoch = seed, np.random.default_rng(seed), 0
        for _ in range(epoch):
            self.epoch += 1
            self.order_agents()

    def sample_rng(self, idx):
        """Generator for the random draws of sample ``idx`` in the current epoch."""
        self.follow_main_process()
        return np.random.default_rng([self.seed, self.epoch, int(idx)])
