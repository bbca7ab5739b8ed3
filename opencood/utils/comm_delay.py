"""Communication delay of collaborators (spec data_eval §7; V2X-ViT's asynchronous setting).

Config (part of the top-level ``noise_setting`` section, declared in :data:`opencood.utils.pose_utils.NOISE_SETTING`)::

    noise_setting:
      add_async_noise: true
      async_args: {async_mode: sim, async_method: fixed, async_overhead: 200,
                   backbone_delay: 10, data_size: 1.06, transmission_speed: 27}

Delay of every non-ego agent, milliseconds (the ego is never delayed):

* ``sim`` + ``fixed``: ``async_overhead``;
* ``sim`` + ``random``: an integer drawn uniformly from [0, ``async_overhead``) plus 100 (the reference's rule);
* ``real``: U(0, ``async_overhead``) + ``data_size`` / ``transmission_speed`` x 1000 + ``backbone_delay``
  (data size in Mb, speed in Mbit/s, backbone delay in ms).

Frames of delay = ms // 100 (10 Hz data), then clamped so the delayed frame exists
(:func:`clamp_to_history`). A delayed collaborator's point cloud, cameras and pose all come from the delayed
frame; its GT objects stay those of the current frame (what is there now). The base loader implements the
reload (``BaseDataset.load_agent_at``); the fusion datasets call :func:`apply_delay` through
``BaseFusionDataset.agents_of``.
"""
import logging

from opencood.utils.config import Key, Schema
from opencood.utils.errors import ConfigError

logger = logging.getLogger("opencood.utils.comm_delay")

FRAME_MS = 100  # one frame at 10 Hz

ASYNC_ARGS = Schema({
    "async_mode": Key(str, "sim", "sim: the overhead is the delay; real: random overhead + transmission + backbone",
                      choices=("sim", "real")),
    "async_method": Key(str, "fixed", "sim mode: fixed = async_overhead; random = U_int[0, overhead) + 100 ms",
                        choices=("fixed", "random")),
    "async_overhead": Key(float, 100.0, "communication overhead, ms (sim: the delay; real: upper bound of U(0, .))"),
    "backbone_delay": Key(float, 0.0, "real mode: computation time of the collaborator's backbone, ms"),
    "data_size": Key(float, 0.0, "real mode: transmitted message size, Mb"),
    "transmission_speed": Key(float, 27.0, "real mode: link speed, Mbit/s"),
}, name="async_args")


def check_async_args(cfg, source="config"):
    """Reject negative times / sizes and a non-positive speed (one-line ConfigError naming the key)."""
    for key in ("async_overhead", "backbone_delay", "data_size"):
        if cfg[key] < 0:
            raise ConfigError(f"{source}: key 'noise_setting.async_args.{key}' must be >= 0, got {cfg[key]}")
    if cfg.transmission_speed <= 0:
        raise ConfigError(f"{source}: key 'noise_setting.async_args.transmission_speed' must be > 0, "
                          f"got {cfg.transmission_speed}")


def draw_delay_ms(cfg, rng):
    """One collaborator's delay in milliseconds.

    Args:
        cfg: parsed ``async_args`` (:data:`ASYNC_ARGS`).
        rng: np.random.Generator (the sample's generator).

    Returns:
        float, ms.
    """
    overhead = float(cfg.async_overhead)
    if cfg.async_mode == "real":
        return float(rng.uniform(0.0, overhead)) + cfg.data_size / cfg.transmission_speed * 1000.0 \
            + cfg.backbone_delay
    if cfg.async_method == "random":
        return float(rng.integers(0, max(int(overhead), 1))) + FRAME_MS
    return overhead


def delay_frames(ms):
    """Frames of delay of ``ms`` milliseconds at 10 Hz (floor)."""
    return int(ms // FRAME_MS)


class HistoryClamp:
    """Clamps delays to the frames a scenario has before the current one; logs one warning line per dataset."""

    def __init__(self):
        self.warned = False

    def __call__(self, frames, frame_index, where):
        """``min(frames, frame_index)``; the first clamp of the dataset logs one warning naming ``where``."""
        if frames <= frame_index:
            return frames
        if not self.warned:
            logger.warning(f"communication delay of {frames} frames exceeds the {frame_index} earlier frames of "
                           f"{where}; clamped to the available history (further clamps not reported)")
            self.warned = True
        return frame_index


def apply_delay(base, agents, cfg, rng, clamp):
    """Replace every non-ego agent by its record at the delayed frame and set ``time_delay``.

    Args:
        base: the base dataset (implements ``load_agent_at(agent, frame_index)``).
        agents: list of ``AgentFrame`` at the current frame (ego first).
        cfg: parsed ``async_args``.
        rng: the sample's generator (one draw per non-ego agent, in list order).
        clamp: a :class:`HistoryClamp`.

    Returns:
        new list of ``AgentFrame``; delayed agents have ``time_delay`` = frames and ``frame_index`` /
        ``timestamp`` of the frame their data come from.
    """
    out = []
    for agent in agents:
        if agent.is_ego:
            out.append(agent)
            continue
        frames = clamp(delay_frames(draw_delay_ms(cfg, rng)), agent.frame_index,
                       f"scenario {agent.scenario} (frame {agent.timestamp}, agent {agent.agent_id})")
        if frames > 0:
            agent = base.load_agent_at(agent, agent.frame_index - frames)
            agent.time_delay = frames
        out.append(agent)
    return out
