"""OPV2V / OPV2V-H: the world's native format (see :mod:`opencood.data_utils.synthetic.generator`)."""
from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
from opencood.data_utils.synthetic.generator import generate

SYNTHETIC_FORMATS.register("opv2v")(generate)
