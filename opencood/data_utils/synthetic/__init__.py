"""The embedded synthetic cooperative-driving world (OPV2V / OPV2V-H on-disk formats).

``generate(root, preset='tiny', seed=0, workers=1, **options) -> summary dict`` writes a dataset that the
regular OPV2V loaders read; see :mod:`opencood.data_utils.synthetic.generator`.
"""
from opencood.data_utils.synthetic.generator import PRESETS, generate

__all__ = ["PRESETS", "generate"]
