"""The GPU demo preset (`demo.py --device cuda --preset gpu`): its configs load, build and take one real training
step each on the tiny world on the CPU, so CI guards them although the GPU runs are not part of `make test`."""
import glob
import os
import time

import pytest
import torch

from opencood.data_utils.datasets import build_dataset
from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.tools import demo, loaders, train_utils, trainer

GPU_SET = os.path.join(demo.REPO, "opencood", "hypes_yaml", "demo", "gencomm_gpu")
STAGES = sorted(os.path.relpath(p, GPU_SET) for p in glob.glob(os.path.join(GPU_SET, "stage*", "*.yaml")))


def test_preset_defaults():
    opt = demo.parse_args(["--preset", "gpu"])
    assert (opt.configs, opt.workers, opt.parallel) == (GPU_SET, 8, 4) and opt.logs.endswith("demo_gpu")
    opt = demo.parse_args([])
    assert opt.configs == demo.DEMO_YAMLS and (opt.workers, opt.parallel) == (2, 1) and opt.device == "cpu"
    assert demo.step_env("cpu")["CUDA_VISIBLE_DEVICES"] == ""
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            demo.parse_args(["--device", "cuda"])


def test_steps_side_by_side_run_together_and_stop_on_failure(tmp_path):
    log = str(tmp_path / "demo.log")
    sleep = ["-c", "import time; time.sleep(1.0); print('slept')"]
    t0 = time.time()
    outs = demo.sh_many([sleep, sleep, sleep], log, None, parallel=3)
    assert time.time() - t0 < 2.5 and outs == ["slept\n"] * 3  # together, not one after another
    assert open(log).read().count("slept") == 3
    with pytest.raises(SystemExit, match="demo step failed"):
        demo.sh_many([["-c", "print('ok')"], ["-c", "raise SystemExit(3)"]], log, None, parallel=2)


def test_gpu_set_mirrors_the_cpu_set():
    cpu = sorted(os.path.relpath(p, demo.DEMO_YAMLS) for p in glob.glob(os.path.join(demo.DEMO_YAMLS, "stage*", "*.yaml")))
    assert STAGES == cpu and len(STAGES) == 8


@pytest.mark.parametrize("rel", [s for s in STAGES if not s.endswith("_infer.yaml")])
def test_gpu_config_takes_a_training_step(rel, make_tiny_config):
    hypes = load_yaml(make_tiny_config(os.path.join("opencood/hypes_yaml/demo/gencomm_gpu", rel), batch_size=1,
                                       max_cav=2))
    assert hypes["model"]["args"]["in_head"] == 128  # full feature width
    a = hypes["postprocess"]["anchor_args"]
    assert (a["W"], a["H"], a["feature_stride"]) == (256, 128, 2)  # 0.4 m voxels, 0.8 m feature cells
    model = train_utils.create_model(hypes)
    model.train()
    model.model_train_init()
    criterion = train_utils.create_loss(hypes)
    dataset = build_dataset(hypes, visualize=False, train=True)
    batch = next(iter(loaders.build_loader(dataset, "train", batch_size=1)))
    batch = dataset.device_preprocess(train_utils.to_device(batch, torch.device("cpu")))
    ctx = trainer.make_train_context(hypes, model, criterion, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
    total, _ = trainer.train_step(ctx, batch)
    assert torch.isfinite(total)
    changed = [k for k, v in model.state_dict().items() if k in before and not torch.equal(before[k], v)]
    assert changed  # the step updated the trainable part
