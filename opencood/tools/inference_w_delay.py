"""Robustness sweep of communication delay (async_overhead 0..500 ms: the collaborators' delayed clouds, cameras and poses).

``inference_robustness.py`` with ``--sweep delay`` fixed; see there for the flags and the outputs."""
from opencood.tools.inference_robustness import main as sweep_main


def main(argv=None):
    return sweep_main(argv, sweep="delay")


if __name__ == "__main__":
    main()
