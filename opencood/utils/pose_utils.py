"""Localisation (pose) noise for robustness experiments (spec data_eval §7).

Config section (top level of the experiment YAML)::

    noise_setting:
      add_noise: true          # master switch (default false: no noise)
      add_pose_noise: true     # optional, default true when add_noise is on
      args: {pos_std: 0.2, rot_std: 0.2, pos_mean: 0, rot_mean: 0, laplace: false}

Noise is added to the LiDAR pose 6-vector ``[x, y, z, roll, yaw, pitch]`` (metres, degrees) of **every**
agent, ego included: x and y get N(pos_mean, pos_std) metres, yaw gets N(rot_mean, rot_std) degrees;
z, roll and pitch are untouched. ``laplace: true`` draws Laplace noise with scale b = the std values.
The clean pose is kept as ``params['lidar_pose_clean']`` (used for GT and camera extrinsics).
"""
import numpy as np

from opencood.utils.errors import ConfigError


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


def noise_enabled(noise_setting):
    """True when ``noise_setting`` asks for pose noise."""
    if not noise_setting or not noise_setting.get("add_noise", False):
        return False
    return bool(noise_setting.get("add_pose_noise", True))


def add_noise_data_dict(data_dict, noise_setting, rng=None):
    """Copy each agent's pose to ``lidar_pose_clean`` and, if enabled, perturb ``lidar_pose``.

    Args:
        data_dict: OrderedDict cav_id -> base-data dict (``retrieve_base_data`` schema); modified in place.
        noise_setting: the YAML ``noise_setting`` section or None (no noise).
        rng: np.random.Generator for the draws; None uses the global ``np.random`` state.

    Returns:
        ``data_dict`` (same object).

    Raises:
        ConfigError: ``noise_setting.args`` misses ``pos_std`` / ``rot_std`` while noise is on.
    """
    enabled = noise_enabled(noise_setting)
    if enabled:
        args = noise_setting.get("args") or {}
        for key in ("pos_std", "rot_std"):
            if key not in args:
                raise ConfigError(f"config: missing key 'noise_setting.args.{key}' (needed when add_noise is true)")
        draw = generate_noise_laplace if args.get("laplace", False) else generate_noise
    for cav in data_dict.values():
        params = cav["params"]
        clean = np.asarray(params["lidar_pose"], dtype=np.float64)
        params["lidar_pose_clean"] = clean.tolist()
        if enabled:
            noise = draw(args["pos_std"], args["rot_std"], args.get("pos_mean", 0.0), args.get("rot_mean", 0.0),
                         rng=rng)
            params["lidar_pose"] = (clean + noise).tolist()
        else:
            params["lidar_pose"] = clean.tolist()
    return data_dict
