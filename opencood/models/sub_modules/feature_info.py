"""The channel/stride chain of a model: what each module hands to the next (OpenPCDet's ``model_info_dict``).

Every encoder, BEV backbone and shrink header has a classmethod ``feature_info(cfg, in_info, ...)`` that
computes its output :class:`FeatureInfo` from its config section (and its input's), without building
anything. A model walks its chain once (at load and again at construction), so the channel numbers the
YAML repeats by hand (``shrink_header.input_dim``, ``att.feat_dim``, ``in_head``, ...) are checked against
what the modules really produce, and the final cell size against the anchor grid.

Units: cells in metres along x (columns) and y (rows) of the agent's LiDAR frame; sizes in cells (H, W).
"""
from dataclasses import dataclass, replace

from opencood.utils.errors import ConfigError


@dataclass(frozen=True)
class FeatureInfo:
    """A BEV feature map as one module outputs it.

    Attributes:
        channels: C.
        cell: (metres along x, metres along y) of one cell.
        size: (H, W) cells (rows = y, columns = x).
        producer: attribute name of the module that outputs it (``backbone_m1``), for messages.
    """

    channels: int
    cell: tuple
    size: tuple
    producer: str = ""

    def by(self, producer):
        """The same map, named after the module that outputs it."""
        return replace(self, producer=producer)

    def strided(self, channels, stride, size):
        """The map after a stride-``stride`` layer with ``channels`` outputs and the given (H, W)."""
        return replace(self, channels=int(channels), cell=(self.cell[0] * stride, self.cell[1] * stride),
                       size=tuple(int(v) for v in size))

    @property
    def shape(self):
        """(C, H, W)."""
        return (self.channels,) + tuple(self.size)


def conv_out(n, kernel, stride, padding):
    """Output length of a convolution along one axis: floor((n + 2p - k) / s) + 1."""
    return (int(n) + 2 * int(padding) - int(kernel)) // int(stride) + 1


def check_channels(declared, produced, path, source="config"):
    """A hand-written channel number must equal what the chain produces.

    Args:
        declared: the YAML value (None: not written, nothing to check).
        produced: :class:`FeatureInfo` of the map that reaches the key's module.
        path: dotted key of the declared value (``model.args.m1.shrink_header.input_dim``).
        source: config file name for the message.

    Returns:
        ``produced.channels``.

    Raises:
        ConfigError: ``"<source>: <path> = 256 but backbone_m1 outputs 384 channels"``.
    """
    if declared is not None and int(declared) != produced.channels:
        raise ConfigError(f"{source}: {path} = {declared} but {produced.producer or 'the previous module'} "
                          f"outputs {produced.channels} channels")
    return produced.channels


def same_cell(a, b, tol=1e-6):
    """True when two (x, y) cell sizes in metres agree."""
    return all(abs(float(u) - float(v)) <= tol * max(1.0, abs(float(v))) for u, v in zip(a, b))


def format_cell(cell):
    return " x ".join(f"{float(c):g}" for c in cell) + " m"
