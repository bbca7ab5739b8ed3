"""Localisation (pose) noise for robustness experiments (spec data_eval §7).

Config section (top level of the experiment YAML)::

    noise_setting:
      add_noise: true          # master switch (default false: no noise)
      add_pose_noise: true     # optional, default true when add_noise is on
      args: {pos_std: 0.2, rot_std: 0.2, pos_mean: 0, rot_mean: 0, laplace: false}
      add_async_noise: false   # communication delay (opencood.utils.comm_delay; async_args there)

Noise is added to the LiDAR pose 6-vector ``[x, y, z, roll, yaw, pitch]`` (metres, degrees) of **every**
agent, ego included: x and y get N(pos_mean, pos_std) metres, yaw gets N(rot_mean, rot_std) degrees;
z, roll and pitch are untouched. ``laplace: true`` draws Laplace noise with scale b = the std values.
``style: v2v4real`` selects V2V4Real's own noise model instead (its ``wild_setting`` ``loc_err``, ``xyz_std``,
``ryp_std``): only the collaborators get noise (the ego's pose stays clean), x, y **and z** get
N(pos_mean, pos_std) metres and, of the rotation, only yaw gets N(rot_mean, rot_std) degrees (V2V4Real draws
roll/yaw/pitch noise but applies only the yaw draw).
Agents are :class:`~opencood.data_utils.datasets.basedataset.agent_frame.AgentFrame` records: the noise is
added to ``lidar_pose_clean`` and written to ``lidar_pose``; ``lidar_pose_clean`` (used for GT and camera
extrinsics) is never changed.
"""
import numpy as np

from opencood.utils.comm_delay import ASYNC_ARGS, check_async_args
from opencood.utils.config import Cfg, Key, Schema
from opencood.utils.errors import ConfigError

NOISE_STYLES = ("opencood", "v2v4real")  # whose pose-noise model (module docstring)

# The top-level ``noise_setting`` section.
NOISE_SETTING = Schema({
    "add_noise": Key(bool, False, "master switch of the localisation noise"),
    "add_pose_noise": Key(bool, True, "pose noise (when add_noise is true)"),
    "args": Key(dict, {}, "noise distribution", schema=Schema({
        "pos_std": Key(float, None, "std (Laplace: scale) of the x and y noise, metres (required with noise)"),
        "rot_std": Key(float, None, "std (Laplace: scale) of the yaw noise, degrees (required with noise)"),
        "pos_mean": Key(float, 0.0, "mean of the x and y noise, metres"),
        "rot_mean": Key(float, 0.0, "mean of the yaw noise, degrees"),
        "laplace": Key(bool, False, "Laplace instead of Gaussian noise"),
        "style": Key(str, "opencood", "opencood: every agent, x/y + yaw; v2v4real: collaborators only (ego clean), "
                     "x/y/z + yaw, as V2V4Real's own loader", choices=NOISE_STYLES),
    }, name="pose noise")),
    "add_async_noise": Key(bool, False, "communication delay of the collaborators (opencood.utils.comm_delay)"),
    "async_args": Key(dict, {}, "delay model (opencood.utils.comm_delay)", schema=ASYNC_ARGS),
}, name="localisation noise and communication delay")


def generate_noise(pos_std, rot_std, pos_mean=0.0, rot_mean=0.0, rng=None):
    """Gaussian pose noise.

    Args:
        pos_std: std of the x/y noise, metres.
        rot_std: std of the yaw noise, degrees.
        pos_mean: mean of the x/y noise, metres.
        rot_mean: mean of the yaw noise, degrees.
        rng: np.random.Generator; None uses the global ``np.random`` state.

    Returns:
        (6,) float64 noise ``[dx, dy, 0, 0, dyaw, 0]``.
    """
    gen = np.random if rng is None else rng
    xy = gen.normal(pos_mean, pos_std, size=2)
    yaw = gen.normal(rot_mean, rot_std)
    return np.array([xy[0], xy[1], 0.0, 0.0, yaw, 0.0])


def generate_noise_laplace(pos_b, rot_b, pos_mu=0.0, rot_mu=0.0, rng=None):
    """Laplace pose noise with scales ``pos_b`` (metres) and ``rot_b`` (degrees); see ``generate_noise``."""
    gen = np.random if rng is None else rng
    xy = gen.laplace(pos_mu, pos_b, size=2)
    yaw = gen.laplace(rot_mu, rot_b)
    return np.array([xy[0], xy[1], 0.0, 0.0, yaw, 0.0])


def parse_noise_setting(noise_setting, source="config"):
    """The ``noise_setting`` section with defaults filled in (None: no noise; a parsed section is checked only).

    Raises:
        ConfigError: a bad key, ``args.pos_std`` / ``args.rot_std`` missing or negative while pose noise is on,
            a negative delay setting while delay is on.
    """
    cfg = noise_setting if isinstance(noise_setting, Cfg) else \
        NOISE_SETTING.parse(noise_setting or {}, "noise_setting", source)
    if noise_enabled(cfg):
        for key in ("pos_std", "rot_std"):
            if cfg.args[key] is None:
                raise ConfigError(f"{source}: missing key 'noise_setting.args.{key}' (needed when add_noise is true)")
            if cfg.args[key] < 0:
                raise ConfigError(f"{source}: key 'noise_setting.args.{key}' must be >= 0, got {cfg.args[key]}")
    if delay_enabled(cfg):
        check_async_args(cfg.async_args, source)
    return cfg


def noise_enabled(noise_setting):
    """True when a parsed ``noise_setting`` asks for pose noise."""
    return bool(noise_setting.add_noise and noise_setting.add_pose_noise)


def delay_enabled(noise_setting):
    """True when a parsed ``noise_setting`` asks for communication delay (``add_noise`` and ``add_async_noise``)."""
    return bool(noise_setting.add_noise and noise_setting.add_async_noise)


def add_noise_data_dict(agents, noise_setting, rng=None):
    """Set each agent's ``lidar_pose`` to its clean pose plus, if enabled, one noise draw.

    The draws are made agent by agent in list order (x/y then yaw, see :func:`generate_noise`; with
    ``style: v2v4real`` the ego is skipped and each collaborator's z is drawn after its yaw).

    Args:
        agents: list of ``AgentFrame`` records (ego first); modified in place.
        noise_setting: the YAML ``noise_setting`` section (raw or :func:`parse_noise_setting` output) or None.
        rng: np.random.Generator for the draws; None uses the global ``np.random`` state.

    Returns:
        ``agents`` (same list).

    Raises:
        ConfigError: ``noise_setting.args`` misses ``pos_std`` / ``rot_std`` while noise is on.
    """
    cfg = parse_noise_setting(noise_setting)
    enabled = noise_enabled(cfg)
    if enabled:
        args = cfg.args
        draw = generate_noise_laplace if args.laplace else generate_noise
    for agent in agents:
        clean = np.asarray(agent.lidar_pose_clean, dtype=np.float64)
        if enabled and not (args.style == "v2v4real" and agent.is_ego):
            noise = draw(args.pos_std, args.rot_std, args.pos_mean, args.rot_mean, rng=rng)
            if args.style == "v2v4real":  # z too, drawn after x/y/yaw from the distribution of x/y
                gen = np.random if rng is None else rng
                noise[2] = (gen.laplace if args.laplace else gen.normal)(args.pos_mean, args.pos_std)
            agent.lidar_pose = clean + noise
        else:
            agent.lidar_pose = clean.copy()
    return agents
