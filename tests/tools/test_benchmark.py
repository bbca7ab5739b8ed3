"""benchmark.py's roofline numbers (FLOPs of a step, the machine's matmul peak) and --data_root."""
import torch

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools import benchmark


def test_step_flops_counts_forward_and_backward():
    lin = torch.nn.Linear(16, 8, bias=False)
    x = torch.randn(4, 16)

    def step(b):
        lin(b).sum().backward()

    # forward 2*4*16*8; backward: grad of the weight only (x needs none) = the same again
    assert benchmark.step_flops(step, x) == 2 * (2 * 4 * 16 * 8)


def test_peak_on_cpu_is_a_positive_rate():
    r = benchmark.bench_peak(torch.device("cpu"), n=128, reps=2)
    assert list(r) == ["peak_tflops_fp32"] and r["peak_tflops_fp32"] > 0


def test_data_root_points_every_split_at_the_folder(tmp_path):
    over = benchmark.data_root_overrides(str(tmp_path))
    h = load_yaml("opencood/hypes_yaml/demo/m1_pointpillar_attfuse.yaml", overrides=over)
    assert (h["root_dir"], h["validate_dir"], h["test_dir"]) == tuple(str(tmp_path / s) for s in
                                                                      ("train", "validate", "test"))
    assert benchmark.data_root_overrides(None) == []


def test_train_part_reports_flops_and_achieved_rate(make_tiny_config):
    from opencood.data_utils.datasets import build_dataset
    hypes = load_yaml(make_tiny_config("opencood/hypes_yaml/demo/m1_pointpillar_attfuse.yaml", batch_size=1))
    res = benchmark.bench_train(hypes, build_dataset(hypes, visualize=False, train=True), torch.device("cpu"),
                                False, 1, 0, 1)
    assert res["train_step_tflop_fp32"] > 0
    assert abs(res["achieved_tflops_fp32"] - res["train_step_tflop_fp32"] / res["train_step_s_fp32"]) < 1e-9
