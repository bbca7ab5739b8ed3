"""Robustness sweep of pose error (pos_std = rot_std 0..0.8 m / deg, optional Laplace), as the reference's tool.

``inference_robustness.py`` with ``--sweep noise`` fixed; see there for the flags and the outputs."""
from opencood.tools.inference_robustness import main as sweep_main


def main(argv=None):
    return sweep_main(argv, sweep="noise")


if __name__ == "__main__":
    main()
