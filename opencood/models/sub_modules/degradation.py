"""Degradation of the transmitted message at inference, the same knobs for every intermediate method.

What a collaborator transmits is degraded on the way to the ego, in this order:

1. **quantisation** (sender): each message is quantised uniformly to ``bits`` bits between its own minimum and
   maximum (2^bits levels; the receiver gets the codes plus the two float32 bounds and de-quantises).
   ``bits: 32`` (default) sends the float32 values as they are: lossless. Fewer bits shrink the message
   (``opencood.utils.comm_volume`` counts ``bits`` per value + 8 bytes of bounds);
2. **loss** (channel): each value (``mask_unit: element``) or each BEV cell with all its channels
   (``mask_unit: cell``) is zeroed with probability ``mask_ratio``;
3. **noise** (channel): additive Gaussian noise of std ``noise_std`` (the message's units) on every value.

Only non-ego agents are degraded (the ego's own map never crosses a link) and only in eval mode. The
transmitted tensor is what the method sends: the BEV feature map fused by intermediate methods
(``HeterModelBaseline``), GenComm's 2-channel message. Draws come from a ``torch.Generator`` seeded with
``seed`` at the first degraded forward, so a test run is reproducible.

Config: ``model.args.comm_degradation`` (:data:`DEGRADATION`). The reference's ``missing_message: true`` flags
map onto it: GenComm -> ``{mask_ratio: missing_message_ratio, mask_unit: cell}`` (stage 1 0.4, stage 2 0.1);
BackAlign / CodeFilling / MPDA -> ``{mask_ratio: 0.05, noise_std: 3.0}``; STAMP -> ``{mask_ratio: 0.2}``.
"""
import torch

from opencood.utils.config import Key, Schema
from opencood.utils.errors import ConfigError

LOSSLESS_BITS = 32

DEGRADATION = Schema({
    "mask_ratio": Key(float, 0.0, "probability that a transmitted value (or cell) is lost (zeroed), in [0, 1]"),
    "mask_unit": Key(str, "element", "what one loss zeroes: one value (element) or one BEV cell, all channels "
                                     "(cell)", choices=("element", "cell")),
    "noise_std": Key(float, 0.0, "std of additive Gaussian noise on the received values (message units)"),
    "bits": Key(int, LOSSLESS_BITS, "bits per transmitted value: 32 = float32 as is (lossless), 1..31 = uniform "
                                    "quantisation between the message's min and max"),
    "seed": Key(int, 0, "seed of the loss and noise draws"),
}, name="comm_degradation")


def quantize(x, bits):
    """Uniform quantisation of each row of ``x`` to ``bits`` bits between the row's min and max, de-quantised.

    Args:
        x: (N, ...) float tensor, one message per row.
        bits: 1..32 (32: returned unchanged).

    Returns:
        tensor like ``x`` holding at most 2^bits distinct values per row.
    """
    if bits >= LOSSLESS_BITS:
        return x
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    step = (hi - lo).clamp_min(torch.finfo(x.dtype).tiny) / (2 ** bits - 1)
    codes = torch.round((flat - lo) / step)  # integers 0 .. 2^bits - 1
    return (codes * step + lo).reshape(x.shape)


class MessageDegradation:
    """The degradation of one model (see the module docstring).

    Args:
        cfg: parsed :data:`DEGRADATION` section.
        source: config file name, for messages.
    """

    def __init__(self, cfg, source="config"):
        where = f"{source}: key 'model.args.comm_degradation"
        if not 0.0 <= cfg.mask_ratio <= 1.0:
            raise ConfigError(f"{where}.mask_ratio' must be in [0, 1], got {cfg.mask_ratio}")
        if cfg.noise_std < 0:
            raise ConfigError(f"{where}.noise_std' must be >= 0, got {cfg.noise_std}")
        if not 1 <= cfg.bits <= LOSSLESS_BITS:
            raise ConfigError(f"{where}.bits' must be in 1..{LOSSLESS_BITS}, got {cfg.bits}")
        self.mask_ratio, self.mask_unit = float(cfg.mask_ratio), cfg.mask_unit
        self.noise_std, self.bits, self.seed = float(cfg.noise_std), int(cfg.bits), int(cfg.seed)
        self.generator = None

    @classmethod
    def from_args(cls, section, source="config"):
        """From a raw ``comm_degradation`` mapping (None: nothing degraded)."""
        return cls(DEGRADATION.parse(section or {}, "model.args.comm_degradation", source), source)

    @property
    def active(self):
        """False when the settings leave every message as sent."""
        return self.mask_ratio > 0 or self.noise_std > 0 or self.bits < LOSSLESS_BITS

    @property
    def message_bits(self):
        """Bits per transmitted value (what ``comm_volume`` counts), or None for the tensor's own dtype."""
        return self.bits if self.bits < LOSSLESS_BITS else None

    def _draws(self, device):
        if self.generator is None or self.generator.device != torch.device(device):
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(self.seed)
        return self.generator

    def __call__(self, message, is_ego):
        """Degrade the non-ego rows of ``message``.

        Args:
            message: (N, C, H, W) transmitted tensors in batch order.
            is_ego: (N,) bool, True at each sample's ego.

        Returns:
            (N, C, H, W): ego rows unchanged, the others quantised, masked and noised.
        """
        if not self.active:
            return message
        out = quantize(message, self.bits)
        gen = self._draws(message.device)
        n, c, h, w = message.shape
        if self.mask_ratio > 0:
            shape = (n, c, h, w) if self.mask_unit == "element" else (n, 1, h, w)
            keep = torch.rand(shape, generator=gen, device=message.device) >= self.mask_ratio
            out = out * keep.to(out.dtype)
        if self.noise_std > 0:
            noise = torch.randn(message.shape, generator=gen, device=message.device)
            out = out + self.noise_std * noise.to(out.dtype)
        return torch.where(is_ego.view(n, 1, 1, 1), message, out)
