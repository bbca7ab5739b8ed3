"""GenComm building blocks: DME, diffusion UNet, generator schedule/sampling, Channel Enhancer."""
import pytest
import torch

from opencood.models.sub_modules.cond_diffusion import GenCommGenerator, make_beta_schedule
from opencood.models.sub_modules.diffusion_unet import DiffusionUNet
from opencood.models.sub_modules.enhancer import Enhancer
from opencood.models.sub_modules.message_extractor import MessageExtractor
from opencood.utils.errors import ConfigError


def n_params(module):
    return sum(p.numel() for p in module.parameters())


GENCOMM_CFG = {
    "model": {"embed_dim": 130, "in_channels": 128, "out_ch": 128, "ch": 8, "ch_mult": [1, 1],
              "num_res_blocks": 2, "attn_resolutions": [16], "dropout": 0.0,
              "resamp_with_conv": True},
    "diffusion": {"beta_schedule": "linear", "beta_start": 0.005, "beta_end": 0.05,
                  "num_diffusion_timesteps": 3},
}


def test_dme_param_counts_and_message_shape():
    assert n_params(MessageExtractor(128, 2)) == 103_028
    assert n_params(MessageExtractor(256, 2)) == 197_492
    dme = MessageExtractor.from_config({"in_ch": 128, "out_ch": 2})
    with torch.no_grad():
        msg = dme(torch.rand(1, 128, 64, 128))  # full OPV2V-H geometry
    assert msg.shape == (1, 2, 64, 128)


def test_unet_param_counts_no_attention():
    unet = DiffusionUNet.from_config(GENCOMM_CFG["model"])
    assert n_params(unet) == 43_176
    assert not any("attn" in name for name, _ in unet.named_parameters())
    cfg256 = dict(GENCOMM_CFG["model"], in_channels=256, out_ch=256)
    assert n_params(DiffusionUNet.from_config(cfg256)) == 61_736


def test_unet_shapes_odd_grid_and_attention_option():
    unet = DiffusionUNet(16, 2, 16, attn_resolutions=[128])  # attention at the nominal top level
    assert any("attn" in name for name, _ in unet.named_parameters())
    out = unet(torch.randn(2, 18, 9, 15), torch.tensor([0, 2]))
    assert out.shape == (2, 16, 9, 15)


def test_enhancer_params_all_used():
    enh = Enhancer.from_config({"in_ch": 128})
    assert n_params(enh) == 144_256
    out = enh(torch.randn(2, 128, 6, 10))
    assert out.shape == (2, 128, 6, 10)
    out.square().sum().backward()
    assert all(p.grad is not None for p in enh.parameters())


def test_schedule_constants():
    gen = GenCommGenerator.from_config(GENCOMM_CFG)
    exp = {
        "betas": [0.005, 0.021656, 0.05],
        "alphas_cumprod": [0.995, 0.97345, 0.92478],
        "posterior_mean_coef1": [1.0, 0.8137, 0.6558],
        "posterior_mean_coef2": [0.0, 0.1863, 0.3440],
        "posterior_std": [0.0, 0.0639, 0.1328],
    }
    for name, values in exp.items():
        torch.testing.assert_close(getattr(gen, name), torch.tensor(values), atol=1e-4, rtol=0)
    torch.testing.assert_close(gen.sqrt_alphas_cumprod[2], torch.tensor(0.9617), atol=1e-4, rtol=0)
    torch.testing.assert_close(gen.sqrt_one_minus_alphas_cumprod[2], torch.tensor(0.2743),
                               atol=1e-4, rtol=0)
    # Schedule comes from the YAML, not from checkpoints.
    assert not any(k.endswith(("betas", "posterior_std")) for k in gen.state_dict())


def test_schedule_read_from_yaml_and_bad_values():
    betas = make_beta_schedule("linear", 5e-4, 2e-2, 4)
    torch.testing.assert_close(betas[[0, -1]], torch.tensor([5e-4, 2e-2], dtype=torch.float64))
    with pytest.raises(ConfigError, match="beta_schedule"):
        make_beta_schedule("cosine", 5e-3, 5e-2, 3)
    with pytest.raises(ConfigError, match="num_diffusion_timesteps"):
        GenCommGenerator.from_config({"model": {}, "diffusion": {"beta_start": 0.1, "beta_end": 0.2}})


def _tiny_generator(steps=3, seed=None):
    cfg = {"model": dict(GENCOMM_CFG["model"], in_channels=8, out_ch=8),
           "diffusion": dict(GENCOMM_CFG["diffusion"], num_diffusion_timesteps=steps)}
    return GenCommGenerator.from_config(cfg, cond_channels=2, eval_seed=seed)


def test_generator_shape_and_unet_calls():
    torch.manual_seed(0)
    gen = _tiny_generator()
    calls = []
    gen.model.register_forward_hook(lambda m, inp, out: calls.append(inp[1].tolist()))
    feats = torch.rand(3, 8, 8, 16)
    start = gen.ego_start(feats, torch.tensor([2, 1]))
    assert torch.equal(start[1], feats[0]) and torch.equal(start[2], feats[2])
    out = gen(torch.randn(3, 2, 8, 16), start)
    assert out.shape == (3, 8, 8, 16)
    assert calls == [[2, 2, 2], [1, 1, 1], [0, 0, 0]]  # T UNet calls, batched over all agents


def test_generator_eval_seed_deterministic():
    torch.manual_seed(0)
    gen = _tiny_generator(seed=7).eval()
    msg, start = torch.randn(2, 2, 8, 16), torch.rand(2, 8, 8, 16)
    with torch.no_grad():
        a, b = gen(msg, start), gen(msg, start)
    assert torch.equal(a, b)
    gen.eval_seed = None  # reference behaviour: stochastic
    with torch.no_grad():
        c, d = gen(msg, start), gen(msg, start)
    assert not torch.equal(c, d)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    with torch.no_grad():
        assert torch.equal(gen(msg, start, generator=g1), gen(msg, start, generator=g2))
