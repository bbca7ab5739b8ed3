"""LiDAR in fog and snow: a seeded, physically motivated corruption of clear-weather point clouds.

Both models act on each return of a cloud in the sensor frame (metres; the LiDAR at the origin), i.e. on the
beams that hit something in clear weather (beams that hit nothing stay empty). Intensity ``I`` is the
clear-weather return strength in [0, 1]; ``noise_floor`` (tau) is the weakest return the sensor reports.

**Fog** (severity -> meteorological visibility V, :data:`FOG_VISIBILITY_M`):

* extinction coefficient alpha = 3.912 / V (1/m; Koschmieder's law at a 2 % contrast threshold);
* hard target: the pulse crosses the fog twice, so the received intensity is ``I * exp(-2 alpha R)`` at range
  R; a return is lost when that falls below tau (a return recorded in clear weather had at least tau:
  ``max(I, tau)`` is attenuated). Far and dark targets vanish first; the survivors are dimmer;
* back-scatter (soft target): the fog droplets close to the sensor reflect part of each pulse. A beam gets a
  back-scatter echo with probability ``min(1, alpha * scatter_length)``, at range ``r0 + Exp(mean 1 / (4
  alpha))`` (capped at the beam's own range; ``r0`` = ``min_range``, the transmitter/receiver overlap
  distance), with a weak intensity tau x U(1, 3). The sensor keeps the stronger echo of the beam (single
  return), so the back-scatter point replaces weak or lost hard returns: new points appear near the sensor.

**Snow** (severity -> snowfall rate S in mm/h, :data:`SNOW_RATE_MM_H`):

* visibility V = 1000 m x S^-0.7 (order of magnitude of published snowfall-visibility relations), and the
  same two-way extinction of hard returns as in fog;
* flakes: each beam meets a flake close enough to return an echo (flakes are small: their echo fades with
  range, so only those within ``flake_range`` count) with probability ``1 - exp(-lambda d)``, lambda =
  ``flake_density`` x S (1/m), d = min(R, flake_range); the flake lies uniformly on [r0, d] along the beam and,
  being the first echo, replaces the beam's hard return, with intensity U(0.02, 0.2).

Severity 0 is clear weather (the cloud is returned unchanged). Every draw comes from the generator passed in, so
the result is a function of (cloud, settings, seed). Config: the top-level ``lidar_weather`` section
(:data:`LIDAR_WEATHER`), applied at load time to every agent's LiDAR by the fusion datasets; ``make_synthetic
--weather fog,snow`` writes ``<ts>_fog.pcd`` / ``<ts>_snow.pcd`` beside each cloud. See docs/robustness.md.
"""
import numpy as np

from opencood.utils.config import Key, Schema
from opencood.utils.errors import ConfigError

WEATHER_TYPES = ("none", "fog", "snow")
FOG_VISIBILITY_M = (np.inf, 600.0, 300.0, 150.0, 80.0, 40.0)  # severity 0..5
SNOW_RATE_MM_H = (0.0, 0.5, 1.0, 2.5, 5.0, 10.0)  # severity 0..5
KOSCHMIEDER = 3.912  # -ln(0.02)

LIDAR_WEATHER = Schema({
    "type": Key(str, "none", "none | fog | snow", choices=WEATHER_TYPES),
    "severity": Key(int, 0, f"0 (clear) .. {len(FOG_VISIBILITY_M) - 1} (fog visibility "
                            f"{', '.join(f'{v:g}' for v in FOG_VISIBILITY_M[1:])} m; snowfall "
                            f"{', '.join(f'{s:g}' for s in SNOW_RATE_MM_H[1:])} mm/h)"),
    "noise_floor": Key(float, 0.05, "weakest intensity the sensor reports (tau, same units as the intensity)"),
    "min_range": Key(float, 1.0, "metres: transmitter/receiver overlap distance r0 (nearest echo)"),
    "scatter_length": Key(float, 5.0, "fog: metres; a beam's back-scatter probability is alpha x this"),
    "flake_density": Key(float, 0.01, "snow: flake echoes per metre of beam per mm/h of snowfall"),
    "flake_range": Key(float, 12.0, "snow: metres; farther flakes are too faint to echo"),
    "seed": Key(int, 0, "seed of the draws (the datasets combine it with the sample and agent)"),
}, name="lidar_weather")


def parse_weather(section, source="config"):
    """The ``lidar_weather`` section with defaults filled in and checked (None: clear weather).

    Raises:
        ConfigError: unknown type, severity outside 0..5, negative lengths (one line naming the key).
    """
    cfg = LIDAR_WEATHER.parse(section or {}, "lidar_weather", source)
    top = len(FOG_VISIBILITY_M) - 1
    if not 0 <= cfg.severity <= top:
        raise ConfigError(f"{source}: key 'lidar_weather.severity' must be in 0..{top}, got {cfg.severity}")
    for key in ("noise_floor", "min_range", "scatter_length", "flake_density", "flake_range"):
        if cfg[key] < 0:
            raise ConfigError(f"{source}: key 'lidar_weather.{key}' must be >= 0, got {cfg[key]}")
    return cfg


def extinction(visibility_m):
    """Extinction coefficient alpha (1/m) of a visibility in metres (Koschmieder); 0 for infinite visibility."""
    return 0.0 if not np.isfinite(visibility_m) else KOSCHMIEDER / float(visibility_m)


def snow_visibility(rate_mm_h):
    """Visibility (m) in snowfall of ``rate_mm_h`` mm/h: 1000 x S^-0.7 (infinite without snow)."""
    return np.inf if rate_mm_h <= 0 else 1000.0 * float(rate_mm_h) ** -0.7


def _attenuate(points, ranges, alpha, tau):
    """Two-way extinction of hard returns: (kept (P,) bool, attenuated intensity (P,))."""
    strength = np.maximum(points[:, 3], tau) * np.exp(-2.0 * alpha * ranges)
    return strength >= tau, strength


def _on_beam(points, ranges, new_ranges):
    """Points on the rays of ``points`` at ``new_ranges`` (metres) from the sensor origin, xyz only."""
    return points[:, :3] * (new_ranges / np.maximum(ranges, 1e-6))[:, None]


def fog(points, severity, cfg, rng):
    """Fog of ``severity`` (see the module docstring). points (P, 4) sensor frame -> (P', 4) float32."""
    alpha = extinction(FOG_VISIBILITY_M[severity])
    ranges = np.linalg.norm(points[:, :3], axis=1)
    kept, strength = _attenuate(points, ranges, alpha, cfg.noise_floor)
    out = points.copy()
    out[:, 3] = strength
    scatter = rng.random(len(points)) < min(1.0, alpha * cfg.scatter_length)
    r_s = np.minimum(cfg.min_range + rng.exponential(1.0 / (4.0 * alpha), len(points)), ranges)
    i_s = cfg.noise_floor * rng.uniform(1.0, 3.0, len(points))
    wins = scatter & ((~kept) | (i_s > strength))  # the stronger echo of the beam is reported
    out[wins, :3] = _on_beam(points[wins], ranges[wins], r_s[wins])
    out[wins, 3] = i_s[wins]
    return out[kept | wins].astype(np.float32)


def snow(points, severity, cfg, rng):
    """Snowfall of ``severity`` (see the module docstring). points (P, 4) sensor frame -> (P', 4) float32."""
    rate = SNOW_RATE_MM_H[severity]
    alpha = extinction(snow_visibility(rate))
    ranges = np.linalg.norm(points[:, :3], axis=1)
    kept, strength = _attenuate(points, ranges, alpha, cfg.noise_floor)
    out = points.copy()
    out[:, 3] = strength
    reach = np.clip(np.minimum(ranges, cfg.flake_range) - cfg.min_range, 0.0, None)  # beam length with echoes
    hit = rng.random(len(points)) < 1.0 - np.exp(-cfg.flake_density * rate * reach)
    r_f = cfg.min_range + rng.random(len(points)) * reach
    out[hit, :3] = _on_beam(points[hit], ranges[hit], r_f[hit])
    out[hit, 3] = rng.uniform(0.02, 0.2, len(points))[hit]
    return out[kept | hit].astype(np.float32)


def apply_weather(points, cfg, rng):
    """Corrupt one cloud.

    Args:
        points: (P, 4) float32 ``[x, y, z, intensity]`` in the sensor frame (metres).
        cfg: parsed ``lidar_weather`` (:func:`parse_weather`).
        rng: np.random.Generator.

    Returns:
        (P', 4) float32 (the input itself for type none or severity 0).
    """
    if cfg.type == "none" or cfg.severity == 0 or points is None or not len(points):
        return points
    return (fog if cfg.type == "fog" else snow)(np.asarray(points, dtype=np.float32), cfg.severity, cfg, rng)


def weather_rng(cfg, *keys):
    """Generator of one cloud: seeded by ``lidar_weather.seed`` and integer ``keys`` (sample, agent, ...)."""
    return np.random.default_rng([int(cfg.seed)] + [int(k) for k in keys])


def write_weather_variants(root, types, severity, seed=0):
    """Post-pass over a written dataset: beside every clear-weather cloud ``<ts>.pcd`` (6-digit frame name)
    under ``root`` write ``<ts>_<type>.pcd`` (ASCII PCD) for each weather type.

    Args:
        root: dataset folder.
        types: weather types (``fog``, ``snow``).
        severity: 1..5.
        seed: seed; each cloud's generator also gets the CRC-32 of its path relative to ``root``.

    Returns:
        number of files written.

    Raises:
        ConfigError: unknown type or severity (one line).
    """
    import os
    import re
    import zlib

    from opencood.utils.pcd_utils import pcd_to_np, write_pcd
    cfgs = [parse_weather({"type": t, "severity": severity, "seed": seed}, "make_synthetic --weather") for t in types]
    written = 0
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(f for f in files if re.fullmatch(r"\d{6}\.pcd", f)):
            path = os.path.join(folder, name)
            points = pcd_to_np(path)
            key = zlib.crc32(os.path.relpath(path, root).encode())
            for cfg in cfgs:
                write_pcd(path[:-4] + f"_{cfg.type}.pcd", apply_weather(points, cfg, weather_rng(cfg, key)))
                written += 1
    return written
