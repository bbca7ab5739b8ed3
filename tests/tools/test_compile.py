"""``--compile`` (torch.compile of the dense parts) and the sync-free per-step loss log of the trainer."""
import copy
import functools

import pytest
import torch

from opencood.tools import train_utils, trainer
from opencood.utils.errors import ConfigError
from opencood.utils.registry import LOSSES
from tests.models.test_gencomm_model import LOSS_ARGS, build, make_batch


def _loss_and_grads(model, batch, seed=0):
    crit = LOSSES.get("point_pillar_gencomm_loss")(dict(LOSS_ARGS, generate_weight=1.0))
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = crit(model(batch), batch["label_dict"])
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_compiled_model_same_names_outputs_and_gradients():
    eager = build()
    compiled = copy.deepcopy(eager)
    names = train_utils.compile_model(compiled, backend="aot_eager")
    assert not any(n.startswith("encoder_") for n in names)
    assert {"backbone_m1", "message_extractor_m2", "gencomm", "enhancer", "fusion_net", "cls_head"} <= set(names)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints unchanged

    batch = make_batch()
    loss_e, grad_e = _loss_and_grads(eager, batch)
    loss_c, grad_c = _loss_and_grads(compiled, batch)
    assert loss_c == pytest.approx(loss_e, rel=1e-4)
    for n in grad_e:
        assert torch.allclose(grad_c[n], grad_e[n], rtol=1e-3, atol=1e-5), n


def test_unknown_compile_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown mode 'fastest'"):
        train_utils.compile_model(build(), "fastest")


@pytest.mark.slow
def test_train_cli_with_compile(make_tiny_config, tmp_path, monkeypatch):
    # CPU inductor would build C++ kernels for minutes; the eager backend (dynamo tracing only) runs the same path
    monkeypatch.setattr(train_utils, "compile_model",
                        functools.partial(train_utils.compile_model, backend="eager"))
    cfg = make_tiny_config("opencood/hypes_yaml/demo/gencomm/stage1/m1_att.yaml", epoches=1, batch_size=2)
    run_dir = trainer.run(trainer.build_parser().parse_args(
        ["-y", cfg, "--log_root", str(tmp_path), "--num_workers", "0", "--skip_test", "--compile",
         "--compile_modules", "gencomm,enhancer"]))
    sd = torch.load(f"{run_dir}/net_epoch1.pth", map_location="cpu", weights_only=True)
    assert not any("_orig_mod" in k for k in sd)


@pytest.mark.gpu
def test_inductor_compile_matches_eager_cuda():
    # inductor draws its own random numbers in training mode; eval mode with eval_seed takes the generation
    # noise from an explicit generator outside the compiled graph, so both models see the same noise
    eager = build().cuda().eval()
    eager.gencomm.eval_seed = 0
    compiled = copy.deepcopy(eager)
    train_utils.compile_model(compiled)
    batch = train_utils.to_device(make_batch(), torch.device("cuda"))
    loss_e, grad_e = _loss_and_grads(eager, batch)
    loss_c, grad_c = _loss_and_grads(compiled, batch)
    assert loss_c == pytest.approx(loss_e, rel=1e-2)  # TF32 convolutions on both sides
    for name in ("cls_head.weight", "backbone_m1.blocks.0.1.weight"):
        cos = torch.nn.functional.cosine_similarity(grad_c[name].flatten(), grad_e[name].flatten(), dim=0)
        assert cos > 0.999, name


class _Writer:
    def __init__(self):
        self.rows = []

    def add_scalar(self, name, value, step):
        self.rows.append((name, value, step))


class _Bar:
    postfix = None

    def set_postfix(self, **kw):
        self.postfix = kw


def test_loss_log_writes_every_step_with_few_host_copies():
    writer, bar = _Writer(), _Bar()
    names = trainer.tensorboard_names(LOSSES.get("point_pillar_gencomm_loss")(dict(LOSS_ARGS)))
    log = trainer._LossLog(writer, bar, names, every=4)
    values = {}
    for step in range(10):
        t = {"total_loss": torch.tensor(1.0 + step), "cls_loss": torch.tensor(0.5 * step)}
        values[step] = t
        log.add(step, t)
        if step == 5:
            assert len(writer.rows) == 2 * 4  # one flush so far
    log.flush()
    assert len(writer.rows) == 2 * 10
    assert ("Total_loss", 10.0, 9) in writer.rows and ("Confidence_loss", 4.5, 9) in writer.rows
    assert bar.postfix == {"loss": "10.000"}
    log.add(10, {"total_loss": torch.tensor(3.0)})  # a different set of terms flushes on its own
    log.add(11, {"total_loss": torch.tensor(4.0), "gen_loss": torch.tensor(1.0)})
    log.flush()
    assert ("Total_loss", 3.0, 10) in writer.rows and ("Gen_loss", 1.0, 11) in writer.rows


def test_compile_only_named_children():
    model = build()
    assert train_utils.compile_model(model, backend="eager", only=["gencomm"]) == ["gencomm"]
    with pytest.raises(ConfigError, match="no module 'unet'"):
        train_utils.compile_model(build(), only=["unet"])
