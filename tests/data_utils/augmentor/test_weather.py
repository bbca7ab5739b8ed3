"""LiDAR fog and snow (opencood.data_utils.augmentor.weather)."""
import os

import numpy as np
import pytest

from opencood.data_utils.augmentor.weather import (
    apply_weather, extinction, parse_weather, weather_rng, write_weather_variants)
from opencood.utils.errors import ConfigError
from opencood.utils.pcd_utils import pcd_to_np, write_pcd


def cloud(n=6000, seed=0):
    """Returns on a ring of ranges 2..80 m, intensities 0.3..1 (sensor frame)."""
    rng = np.random.default_rng(seed)
    r, az = rng.uniform(2, 80, n), rng.uniform(-np.pi, np.pi, n)
    return np.stack([r * np.cos(az), r * np.sin(az), rng.uniform(-1.5, 0.5, n), rng.uniform(0.3, 1.0, n)],
                    1).astype(np.float32)


def ranges(p):
    return np.linalg.norm(p[:, :3], axis=1)


def run(kind, severity, points, seed=0):
    cfg = parse_weather({"type": kind, "severity": severity, "seed": seed})
    return apply_weather(points, cfg, weather_rng(cfg, 7))


def test_fog_removes_far_returns_adds_near_ones_and_is_seeded():
    p = cloud()
    fogged = run("fog", 4, p)  # visibility 80 m
    assert (ranges(fogged) > 30).sum() < 0.5 * (ranges(p) > 30).sum()
    assert (ranges(fogged) < 5).sum() > (ranges(p) < 5).sum() + 50
    # the physics: a hard return survives iff max(I, tau) exp(-2 alpha R) >= tau (tau 0.05): beyond the farthest
    # possible one (I = 1) only weak back-scatter echoes (tau x U(1, 3)) remain
    alpha = extinction(80.0)
    beyond = ranges(fogged) > np.log(1.0 / 0.05) / (2 * alpha)
    assert np.all(fogged[beyond, 3] <= 0.15)
    assert np.array_equal(fogged, run("fog", 4, p))  # same seed, same cloud
    assert not np.array_equal(fogged, run("fog", 4, p, seed=1))
    counts = [(ranges(run("fog", s, p)) > 30).sum() for s in range(6)]
    assert counts == sorted(counts, reverse=True) and counts[0] == (ranges(p) > 30).sum()
    assert run("fog", 0, p) is p and run("none", 3, p) is p


def test_snow_adds_flakes_near_the_sensor_and_dims_far_returns():
    p = cloud()
    snowed = run("snow", 5, p)
    near = ranges(snowed) < 12
    assert near.sum() > (ranges(p) < 12).sum() + 300
    assert snowed.dtype == np.float32 and snowed.shape[1] == 4
    assert np.array_equal(snowed, run("snow", 5, p))
    flakes = run("snow", 5, p)[:, 3] <= 0.2
    assert flakes.sum() > 300


@pytest.mark.parametrize("section,key", [({"type": "rain"}, "type"), ({"type": "fog", "severity": 6}, "severity"),
                                         ({"type": "fog", "severity": -1}, "severity"),
                                         ({"type": "snow", "noise_floor": -1}, "noise_floor")])
def test_bad_settings_are_one_line_errors(section, key):
    with pytest.raises(ConfigError, match=f"lidar_weather.{key}") as e:
        parse_weather(section, "w.yaml")
    assert "\n" not in str(e.value)


def test_variants_written_beside_each_cloud(tmp_path):
    folder = tmp_path / "s" / "1"
    os.makedirs(folder)
    p = cloud(500)
    write_pcd(str(folder / "000000.pcd"), p)
    write_pcd(str(folder / "000000_32.pcd"), p[::2])  # beam variants are left alone
    assert write_weather_variants(str(tmp_path), ["fog", "snow"], 5, seed=2) == 2
    fog = pcd_to_np(str(folder / "000000_fog.pcd"))
    assert len(fog) != len(p) and os.path.exists(folder / "000000_snow.pcd")
    assert not os.path.exists(folder / "000000_32_fog.pcd")
    write_weather_variants(str(tmp_path), ["fog"], 5, seed=2)
    np.testing.assert_array_equal(pcd_to_np(str(folder / "000000_fog.pcd")), fog)  # deterministic per seed


def test_make_synthetic_rejects_unknown_weather_before_writing(tmp_path, capsys):
    from opencood.tools import make_synthetic
    assert make_synthetic.main(["--root", str(tmp_path / "w"), "--preset", "tiny", "--weather", "fog,rain"]) == 2
    assert "lidar_weather.type' = 'rain'" in capsys.readouterr().err and not os.path.exists(tmp_path / "w")
