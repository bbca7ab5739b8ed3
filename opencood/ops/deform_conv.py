"""Deformable 2-D convolution (DCNv1, one offset group) with a fast pure-PyTorch CPU path.

``torchvision.ops.deform_conv2d`` is the reference implementation and is used on CUDA. Its CPU
kernel is slow for the backward pass (about 1 s for a 6×64×32×64 map on 2 cores), which dominated
GenComm training on CPUs. On CPU we instead sample the K kernel taps with ``F.grid_sample`` (bilinear,
zeros outside, ``align_corners=True`` — the same interpolation and border rule as torchvision) and
contract them with the weights, so autograd gives gradients for input, offsets, weight and bias.
"""
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d as tv_deform_conv2d


def deform_conv2d_torch(x, offset, weight, bias=None, padding=1, dilation=1):
    """Pure-torch deformable convolution, stride 1.

    Args:
        x: (N, C, H, W) input.
        offset: (N, 2*K, H, W) offsets, torchvision layout: channel 2k = Δy (rows), 2k+1 = Δx (cols)
            for kernel tap k in row-major order.
        weight: (O, C, kh, kw).
        bias: (O,) or None.
        padding, dilation: ints, as in torchvision.

    Returns:
        (N, O, H, W) for stride 1 and padding = dilation·(k−1)/2.
    """
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    k = kh * kw
    dev, dt = x.device, x.dtype
    ki = torch.arange(kh, device=dev, dtype=dt).repeat_interleave(kw) * dilation - padding  # (K,)
    kj = torch.arange(kw, device=dev, dtype=dt).repeat(kh) * dilation - padding  # (K,)
    off = offset.view(n, k, 2, h, w)
    py = torch.arange(h, device=dev, dtype=dt).view(1, 1, h, 1) + ki.view(1, k, 1, 1) + off[:, :, 0]  # (N,K,H,W)
    px = torch.arange(w, device=dev, dtype=dt).view(1, 1, 1, w) + kj.view(1, k, 1, 1) + off[:, :, 1]  # (N,K,H,W)
    grid = torch.stack((2.0 * px / max(w - 1, 1) - 1.0, 2.0 * py / max(h - 1, 1) - 1.0), dim=-1)  # (N,K,H,W,2)
    taps = F.grid_sample(x, grid.view(n, k * h, w, 2), mode="bilinear", padding_mode="zeros",
                         align_corners=True)  # (N, C, K*H, W)
    out = torch.einsum("nckhw,ock->nohw", taps.view(n, c, k, h, w), weight.view(o, c, k))  # (N, O, H, W)
    if bias is not None:
        out = out + bias.view(1, o, 1, 1)
    return out


def deform_conv2d(x, offset, weight, bias=None, padding=1, dilation=1):
    """torchvision's kernel on CUDA, the grid-sample formulation on CPU (same result)."""
    if x.is_cuda or min(x.shape[-2:]) < 2:  # grid_sample cannot address a 1-pixel axis with align_corners
        return tv_deform_conv2d(x, offset, weight, bias, padding=padding, dilation=dilation)
    return deform_conv2d_torch(x, offset, weight, bias, padding=padding, dilation=dilation)
