import torch

from opencood.models.sub_modules.base_bev_backbone import BaseBEVBackbone
from opencood.models.sub_modules.downsample_conv import DownsampleConv

M1 = {"layer_nums": [3, 5, 8], "layer_strides": [2, 2, 2], "num_filters": [64, 128, 256],
      "upsample_strides": [1, 2, 4], "num_upsample_filter": [128, 128, 128]}


def _hand_count(cfg, c_in):
    total, prev = 0, c_in
    for n, f in zip(cfg["layer_nums"], cfg["num_filters"]):
        total += prev * f * 9 + 2 * f  # strided conv (no bias) + BN
        total += n * (f * f * 9 + 2 * f)  # n x (conv3x3 + BN)
        prev = f
    for f, s, u in zip(cfg["num_filters"], cfg["upsample_strides"], cfg["num_upsample_filter"]):
        total += f * u * s * s + 2 * u  # ConvTranspose (no bias) + BN
    return total


def test_m1_param_count():
    net = BaseBEVBackbone(M1, 64)
    n = sum(p.numel() for p in net.parameters())
    assert n == _hand_count(M1, 64) == 6_577_408
    assert net.get_output_feature_dim() == 384
    keys = net.state_dict()
    assert "blocks.0.1.weight" in keys and "blocks.2.26.running_var" in keys  # pad + 3 * (1 + 8) modules, last BN at 26
    assert "deblocks.2.0.weight" in keys


def test_shapes_and_layer_structure():
    cfg = {"layer_nums": [1, 1], "layer_strides": [2, 2], "num_filters": [8, 16],
           "upsample_strides": [1, 2], "num_upsample_filter": [8, 8]}
    net = BaseBEVBackbone(cfg, 4)
    assert isinstance(net.blocks[0][0], torch.nn.ZeroPad2d)
    assert net.blocks[0][1].stride == (2, 2) and net.blocks[0][1].padding == (0, 0)
    bn = net.blocks[0][2]
    assert bn.eps == 1e-3 and bn.momentum == 0.01
    assert isinstance(net.deblocks[1][0], torch.nn.ConvTranspose2d)
    out = net(torch.randn(2, 4, 16, 32))
    assert out.shape == (2, 16, 8, 16)


def test_downsample_conv():
    cfg = {"kernal_size": [3], "stride": [2], "padding": [1], "dim": [16], "input_dim": 24}
    net = DownsampleConv(cfg)
    out = net(torch.randn(2, 24, 16, 32))
    assert out.shape == (2, 16, 8, 16) and (out >= 0).all()
    assert sum(p.numel() for p in net.parameters()) == 24 * 16 * 9 + 16 + 16 * 16 * 9 + 16
    assert "layers.0.double_conv.2.weight" in net.state_dict()
