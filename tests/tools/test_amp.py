"""Mixed precision: the loss under autocast stays close to the fp32 loss (CPU bf16; CUDA bf16/fp16)."""
import pytest
import torch

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools import train_utils
from opencood.tools.trainer import _amp_dtype, forward_loss

GENCOMM_M1 = "opencood/hypes_yaml/demo/gencomm/stage1/m1_att.yaml"


def _loss_pair(cfg, device):
    h = load_yaml(cfg)
    ds = build_dataset(h, visualize=False, train=True)
    batch = train_utils.to_device(ds.collate_batch_train([ds[0], ds[1]]), device)
    h["model"]["args"]["gencomm"]["eval_seed"] = 0  # same generation noise in both passes
    torch.manual_seed(0)
    model = train_utils.create_model(h).to(device).eval()  # eval: identical BN statistics in both passes
    crit = train_utils.create_loss(h)
    with torch.no_grad():
        fp32 = forward_loss(model, crit, batch)[0].float()
        with torch.autocast(device.type, dtype=_amp_dtype(device)):
            amp = forward_loss(model, crit, batch)[0].float()
    return fp32, amp


def _check(fp32, amp):
    assert torch.isfinite(amp)
    assert abs(float(amp) - float(fp32)) <= 0.05 * abs(float(fp32)) + 1e-3


def test_amp_loss_close_to_fp32_cpu(make_tiny_config):
    _check(*_loss_pair(make_tiny_config(GENCOMM_M1), torch.device("cpu")))


@pytest.mark.gpu
def test_amp_loss_close_to_fp32_cuda(make_tiny_config):
    _check(*_loss_pair(make_tiny_config(GENCOMM_M1), torch.device("cuda")))
