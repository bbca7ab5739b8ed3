"""Every agent type's encoder (m1 PointPillars, m2 LSS-EfficientNet, m3 SECOND, m4 LSS-ResNet) trains on CUDA:
one forward/backward of the demo stage-1 GenComm model on the tiny world, fp32 and AMP."""
import pytest
import torch

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools import train_utils
from opencood.tools.trainer import _amp_dtype, forward_loss


@pytest.mark.gpu
@pytest.mark.parametrize("agent_type", ["m1", "m2", "m3", "m4"])
@pytest.mark.parametrize("amp", [False, True])
def test_stage1_step_on_cuda(make_tiny_config, agent_type, amp):
    h = load_yaml(make_tiny_config(f"opencood/hypes_yaml/demo/gencomm/stage1/{agent_type}_att.yaml"))
    device = torch.device("cuda")
    ds = build_dataset(h, visualize=False, train=True)
    batch = ds.device_preprocess(train_utils.to_device(ds.collate_batch_train([ds[0], ds[1]]), device))
    torch.manual_seed(0)
    model = train_utils.create_model(h).to(device).train()
    crit = train_utils.create_loss(h)
    with torch.autocast("cuda", dtype=_amp_dtype(device), enabled=amp):
        loss = forward_loss(model, crit, batch)[0]
    loss.backward()
    assert torch.isfinite(loss)
    encoder = getattr(model, f"encoder_{agent_type}")
    grads = [p.grad for p in encoder.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
