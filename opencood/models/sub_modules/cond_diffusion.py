"""GenComm spatial-aware feature generator: a message-conditioned diffusion model.

The receiver (ego) rebuilds each agent's BEV feature in its own semantic space. Starting from the ego's
own feature F_ego (ego frame), it adds noise for T steps and denoises with a UNet conditioned on the
agent's message M_k (the sender's frame; warping happens later, in fusion):

    x_T = sqrt(abar_{T-1}) F_ego + sqrt(1 - abar_{T-1}) eps
    for t = T-1 .. 1:  x0_hat = UNet([M_k, x_t], t);  x_{t-1} = c1_t x0_hat + c2_t x_t + sigma_t eps
    output = UNet([M_k, x_0], 0)

x0 parameterisation, no clipping, T UNet calls, identical in training (full back-propagation through
every step) and evaluation, batched over all agents.

Schedule ("linear" in the latent-diffusion sense): betas = linspace(sqrt(b0), sqrt(b1), T)^2, read from
the YAML (``diffusion.beta_start/beta_end/num_diffusion_timesteps``). The reference ignored the YAML and
hard-coded b0=5e-3, b1=5e-2; the shipped YAMLs set those values to reproduce it.
"""
import torch
from torch import nn

from opencood.models.sub_modules.diffusion_unet import DiffusionUNet
from opencood.utils.config import REQUIRED, Key, Schema
from opencood.utils.errors import ConfigError

BETA_SCHEDULES = ("linear",)


def make_beta_schedule(schedule, beta_start, beta_end, num_timesteps):
    """Noise variances beta_t.

    Args:
        schedule: ``"linear"``: betas = linspace(sqrt(beta_start), sqrt(beta_end), T)^2
            (latent-diffusion convention).
        beta_start: first beta (> 0).
        beta_end: last beta (>= beta_start, < 1).
        num_timesteps: T (>= 1).

    Returns:
        (T,) float64 tensor.

    Raises:
        ConfigError: unknown schedule or out-of-range values (one line naming the key).
    """
    key = "model.args.gencomm.diffusion"
    if schedule not in BETA_SCHEDULES:
        raise ConfigError(f"{key}.beta_schedule: unknown '{schedule}'; known: {', '.join(BETA_SCHEDULES)}")
    if int(num_timesteps) < 1:
        raise ConfigError(f"{key}.num_diffusion_timesteps: must be >= 1, got {num_timesteps}")
    if not 0.0 < float(beta_start) <= float(beta_end) < 1.0:
        raise ConfigError(f"{key}: need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return torch.linspace(float(beta_start) ** 0.5, float(beta_end) ** 0.5, int(num_timesteps),
                          dtype=torch.float64) ** 2


class GenCommGenerator(nn.Module):
    """Conditional diffusion generator (parameters only in ``model``, the UNet).

    The schedule tensors are non-persistent buffers: they come from the YAML, never from a checkpoint.

    Args:
        unet: the x0-predicting denoiser, called as ``unet(cat([message, x_t], 1), t)``.
        beta_schedule: see :func:`make_beta_schedule`.
        beta_start: first beta.
        beta_end: last beta.
        num_timesteps: T.
        eval_seed: if not None, evaluation-mode sampling draws its noise from a fresh
            ``torch.Generator`` seeded with this value at every call (deterministic inference).
            None (default) = fresh global-RNG noise, stochastic like the reference.
    """

    def __init__(self, unet, beta_schedule="linear", beta_start=5e-3, beta_end=5e-2,
                 num_timesteps=3, eval_seed=None):
        super().__init__()
        self.model = unet
        self.num_timesteps = int(num_timesteps)
        self.eval_seed = None if eval_seed is None else int(eval_seed)

        betas = make_beta_schedule(beta_schedule, beta_start, beta_end, num_timesteps)  # (T,)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, 0)  # abar_t
        alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        # Posterior q(x_{t-1} | x_t, x0) = N(c1_t x0 + c2_t x_t, sigma_t^2).
        coef1 = betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod)
        coef2 = (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod)
        variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        for name, value in (("betas", betas), ("alphas_cumprod", alphas_cumprod),
                            ("sqrt_alphas_cumprod", alphas_cumprod.sqrt()),
                            ("sqrt_one_minus_alphas_cumprod", (1.0 - alphas_cumprod).sqrt()),
                            ("posterior_mean_coef1", coef1), ("posterior_mean_coef2", coef2),
                            ("posterior_std", variance.sqrt())):
            self.register_buffer(name, value.float(), persistent=False)

    CONFIG = Schema({
        "model": Key(dict, REQUIRED, "the denoising UNet", schema=DiffusionUNet.CONFIG),
        "diffusion": Key(dict, REQUIRED, "noise schedule", schema=Schema({
            "beta_schedule": Key(str, "linear", "betas = linspace(sqrt(beta_start), sqrt(beta_end), T)^2",
                                 choices=BETA_SCHEDULES),
            "beta_start": Key(float, REQUIRED, "first beta (> 0)"),
            "beta_end": Key(float, REQUIRED, "last beta (>= beta_start, < 1)"),
            "num_diffusion_timesteps": Key(int, REQUIRED, "T: UNet calls per generation"),
        }, name="gencomm.diffusion")),
        "eval_seed": Key(int, None, "seed of the eval-mode sampling noise (null: stochastic, as the reference)"),
    }, name="gencomm")

    @classmethod
    def from_config(cls, cfg, cond_channels=2, eval_seed=None):
        """Build from the YAML section ``gencomm`` (alias ``diffcomm``; see ``CONFIG``).

        Args:
            cfg: ``{model: {in_channels, out_ch, ch, ch_mult, num_res_blocks, attn_resolutions, dropout,
                resamp_with_conv}, diffusion: {beta_schedule, beta_start, beta_end,
                num_diffusion_timesteps}, eval_seed (optional)}``.
            cond_channels: message channels.
            eval_seed: overrides ``cfg['eval_seed']`` when given.
        """
        cfg = cls.CONFIG.parse(cfg, "model.args.gencomm")
        diff = cfg.diffusion
        return cls(DiffusionUNet.from_config(cfg.model, cond_channels=cond_channels),
                   beta_schedule=diff.beta_schedule, beta_start=diff.beta_start, beta_end=diff.beta_end,
                   num_timesteps=diff.num_diffusion_timesteps,
                   eval_seed=cfg.eval_seed if eval_seed is None else eval_seed)

    @staticmethod
    def ego_start(features, record_len):
        """Repeat each sample's ego feature (first agent of its ``record_len`` group) for its agents.

        Args:
            features: (N, C, H, W) agent features, samples concatenated in batch order.
            record_len: (B,) agents per sample (sum N).

        Returns:
            (N, C, H, W) where row k is the ego feature of the sample agent k belongs to.
        """
        record_len = record_len.to(features.device).long()
        first = torch.cumsum(record_len, 0) - record_len  # (B,) index of each ego
        return torch.repeat_interleave(features[first], record_len, dim=0,
                                       output_size=features.shape[0])  # output_size: no device-to-host sync

    @staticmethod
    def _noise(like, generator):
        if generator is None:
            return torch.randn_like(like)  # same values as randn(shape); traceable by torch.compile
        return _seeded_noise(like, generator)

    def forward(self, message, x_start, generator=None):
        """Generate features.

        Args:
            message: (N, M, H, W) per-agent messages (sender frame).
            x_start: (N, C, H, W) start features (see :meth:`ego_start`).
            generator: optional ``torch.Generator`` on the tensors' device for the noise; default
                the global RNG, or a generator seeded with ``eval_seed`` in eval mode.

        Returns:
            (N, C, H, W) generated features (the final x0 prediction).
        """
        if generator is None and not self.training and self.eval_seed is not None:
            generator = torch.Generator(device=x_start.device)
            generator.manual_seed(self.eval_seed)
        n = x_start.shape[0]
        last = self.num_timesteps - 1
        x_t = (self.sqrt_alphas_cumprod[last] * x_start
               + self.sqrt_one_minus_alphas_cumprod[last] * self._noise(x_start, generator))
        for t in range(last, 0, -1):
            steps = torch.full((n,), t, device=x_start.device, dtype=torch.long)
            x0_hat = self.model(torch.cat([message, x_t], dim=1), steps)  # (N, C, H, W)
            x_t = (self.posterior_mean_coef1[t] * x0_hat + self.posterior_mean_coef2[t] * x_t
                   + self.posterior_std[t] * self._noise(x_t, generator))
        steps = torch.zeros((n,), device=x_start.device, dtype=torch.long)
        return self.model(torch.cat([message, x_t], dim=1), steps)  # (N, C, H, W)


@torch.compiler.disable
def _seeded_noise(like, generator):
    """Noise from an explicit ``torch.Generator`` (eval_seed); run eagerly under torch.compile."""
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
