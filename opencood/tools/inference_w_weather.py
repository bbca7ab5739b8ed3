"""Robustness sweep of LiDAR in fog or snow (lidar_weather severity 0..5).

``inference_robustness.py`` with ``--sweep weather`` fixed; see there for the flags and the outputs."""
from opencood.tools.inference_robustness import main as sweep_main


def main(argv=None):
    return sweep_main(argv, sweep="weather")


if __name__ == "__main__":
    main()
