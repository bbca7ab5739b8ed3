"""Robustness sweep of message degradation (one knob of model.args.comm_degradation: mask_ratio, noise_std or bits).

``inference_robustness.py`` with ``--sweep degradation`` fixed; see there for the flags and the outputs."""
from opencood.tools.inference_robustness import main as sweep_main


def main(argv=None):
    return sweep_main(argv, sweep="degradation")


if __name__ == "__main__":
    main()
