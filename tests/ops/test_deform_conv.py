import pytest
import torch
from torchvision.ops import deform_conv2d as tv

from opencood.ops.deform_conv import deform_conv2d, deform_conv2d_torch


@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (1, 3, 2, 6), (1, 3, 1, 6)])
def test_matches_torchvision_forward_and_backward(shape):
    g = torch.Generator().manual_seed(0)
    n, c, h, w = shape
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    # large offsets so that many taps fall outside the map or between pixels
    off = (3 * torch.randn(n, 18, h, w, generator=g, dtype=torch.float64)).requires_grad_()
    wt = torch.randn(4, c, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    ref = tv(x, off, wt, b, padding=1)
    out = deform_conv2d(x, off, wt, b, padding=1)
    assert torch.allclose(out, ref, atol=1e-10)
    gy = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    g_ref = torch.autograd.grad(ref, (x, wt, b), gy)
    g_out = torch.autograd.grad(out, (x, wt, b), gy)
    for a, r in zip(g_out, g_ref):
        assert torch.allclose(a, r, atol=1e-8)


def test_offset_gradient_matches_torchvision_away_from_grid_points():
    # bilinear weights are not differentiable exactly at integer positions; use fractional offsets
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 6, 6, generator=g, dtype=torch.float64)
    off = (torch.rand(1, 18, 6, 6, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    wt = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    gy = torch.randn(1, 3, 6, 6, generator=g, dtype=torch.float64)
    (a,) = torch.autograd.grad(deform_conv2d_torch(x, off, wt, None), off, gy)
    (r,) = torch.autograd.grad(tv(x, off, wt, None, padding=1), off, gy)
    assert torch.allclose(a, r, atol=1e-8)
