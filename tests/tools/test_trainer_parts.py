"""The trainer's building blocks: loaders, train_step (shared with the benchmark), the forward through a DDP
wrapper, and the logging setup."""
import logging
import os
import socket
from collections import OrderedDict

import pytest
import torch
import torch.distributed as dist

from opencood.hypes_yaml.yaml_utils import load_yaml
from opencood.models.base_model import CooperativeModel
from opencood.tools import benchmark, loaders, trainer
from opencood.utils import log

PP = "opencood/hypes_yaml/demo/m1_pointpillar_attfuse.yaml"


class _Samples(torch.utils.data.Dataset):
    """Integers 0..n-1; the collates say which dataset and which collate built the batch."""

    def __init__(self, name, n=10):
        self.name, self.n = name, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i

    def collate_batch_train(self, batch):
        return {"by": (self.name, "train"), "idx": batch}

    def collate_batch_test(self, batch):
        return {"by": (self.name, "test"), "idx": batch}


def test_each_loader_collates_with_its_own_dataset():
    train, val = loaders.build_loaders(_Samples("train"), _Samples("val", 5), batch_size=2)
    batches = list(val)
    assert {b["by"] for b in batches} == {("val", "train")}  # the validation set's training collate
    assert [i for b in batches for i in b["idx"]] == list(range(5))  # in order, nothing dropped
    assert {b["by"] for b in train} == {("train", "train")}
    assert len(train) == 5 and train.drop_last
    test = loaders.build_loader(_Samples("test", 3), "test", batch_size=4)
    assert [b["idx"] for b in test] == [[0], [1], [2]] and next(iter(test))["by"] == ("test", "test")
    with pytest.raises(ValueError, match="unknown loader kind 'bench'"):
        loaders.build_loader(_Samples("x"), "bench")


def test_training_order_depends_only_on_seed_and_epoch():
    def order(epoch, seed=0, draws_before=0):
        loader = loaders.build_loader(_Samples("train"), "train", batch_size=1, seed=seed)
        torch.rand(draws_before)  # the global RNG does not matter
        loader.sampler.set_epoch(epoch)
        return [b["idx"][0] for b in loader]

    assert order(3) == order(3, draws_before=7)
    assert order(3) != order(4) and order(3) != order(3, seed=1)
    assert sorted(order(0)) == list(range(10))


def test_benchmark_times_the_trainers_train_step(make_tiny_config, monkeypatch):
    calls = []
    real = trainer.train_step

    def counting(ctx, batch):
        calls.append(ctx)
        return real(ctx, batch)

    monkeypatch.setattr(trainer, "train_step", counting)
    hypes = load_yaml(make_tiny_config(PP, batch_size=1))
    from opencood.data_utils.datasets import build_dataset
    res = benchmark.bench_train(hypes, build_dataset(hypes, visualize=False, train=True), torch.device("cpu"),
                                False, 1, 0, 1)
    assert len(calls) == 3 + 1 + 1 + 1  # warm-up, timed steps, the FLOP-counted step, steps through the loader
    assert isinstance(calls[0], trainer.TrainContext) and res["train_step_s_fp32"] > 0


class _Tiny(CooperativeModel):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def forward(self, data_dict):
        return {"y": self.lin(data_dict["x"])}


class _Criterion(torch.nn.Module):
    TB_NAMES = OrderedDict()

    def loss_and_terms(self, output, batch):
        total = output["y"].pow(2).mean()
        return total, OrderedDict(total_loss=total.detach())


class _OwnStep(_Tiny):
    def training_step(self, batch, criterion, forward=None):
        self.forward_used = forward
        return criterion.loss_and_terms((forward or self)(batch["ego"]), batch["ego"])


@pytest.fixture
def one_rank_group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_train_step_forward_goes_through_the_ddp_wrapper(one_rank_group, monkeypatch):
    batch = {"ego": {"x": torch.ones(4, 2)}}
    ddp_forwards = []
    real_forward = torch.nn.parallel.DistributedDataParallel.forward
    monkeypatch.setattr(torch.nn.parallel.DistributedDataParallel, "forward",
                        lambda self, *a, **k: ddp_forwards.append(1) or real_forward(self, *a, **k))
    for cls in (_Tiny, _OwnStep):
        model = cls()
        net = torch.nn.parallel.DistributedDataParallel(model)
        ctx = trainer.TrainContext(net, _Criterion(), torch.optim.SGD(model.parameters(), lr=0.1),
                                   torch.amp.GradScaler("cuda", enabled=False))
        before = model.lin.weight.detach().clone()
        loss, terms = trainer.train_step(ctx, batch)
        assert not loss.requires_grad and list(terms) == ["total_loss"]
        assert not torch.equal(before, model.lin.weight)  # the optimizer stepped
    assert len(ddp_forwards) == 2  # both the default path and the model's own training_step
    assert model.forward_used is net
    assert trainer.forward_loss(model, _Criterion(), batch)[0].requires_grad  # unwrapped: its own forward
    assert model.forward_used is model  # unwrapped: forward = the model itself


def test_setup_logging_is_idempotent_and_moves_the_file(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        log.setup_logging(str(tmp_path / "a"), "train.log")
        log.setup_logging(str(tmp_path / "a"), "train.log")
        logger = logging.getLogger("opencood.tools.x")
        logger.info("first")
        logger.info("file only", extra=log.FILE_ONLY)
        log.setup_logging(str(tmp_path / "b"), "inference.log")
        logger.info("second")
        logger.error("bad")
        assert len(log.logger.handlers) == 2
    finally:
        log.close_log_file()
    out, err = capsys.readouterr()
    assert out.splitlines() == ["first", "second"] and err.strip() == "bad"
    a = open(tmp_path / "a" / "train.log").read()
    assert a.count("first") == 1 and "file only" in a and "second" not in a
    assert os.path.isfile(tmp_path / "b" / "inference.log") and "second" in open(tmp_path / "b" / "inference.log").read()
    assert len(log.logger.handlers) == 1


def test_model_config_error_comes_before_the_datasets(make_tiny_config, tmp_path, capsys):
    import yaml
    h = yaml.safe_load(open(make_tiny_config(PP)))
    h["model"]["core_method"] = "no_such_model"
    h["root_dir"] = str(tmp_path / "missing")  # would fail too, but only once the datasets are built
    bad = tmp_path / "bad.yaml"
    yaml.safe_dump(h, open(bad, "w"))
    with pytest.raises(SystemExit):
        trainer.main(["-y", str(bad), "--log_root", str(tmp_path / "logs"), "--skip_test"])
    assert "unknown model.core_method 'no_such_model'" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def test_a_copied_thin_yaml_becomes_a_flat_run_config(tmp_path):
    """HEAL's recipe copies a shipped YAML into the run folder; training there flattens it (self-contained)."""
    import argparse
    import shutil

    from opencood.hypes_yaml.yaml_utils import load_yaml, read_yaml_file
    src = os.path.join(os.path.dirname(__file__), "..", "..", "opencood/hypes_yaml/demo/gencomm/stage2/m1m3_att.yaml")
    shutil.copy(src, tmp_path / "config.yaml")
    opt = argparse.Namespace(model_dir=str(tmp_path))
    hypes = load_yaml("None", opt)
    trainer.flatten_run_config(str(tmp_path), hypes)
    assert "_base_" not in read_yaml_file(str(tmp_path / "config.yaml"))
    assert "_base_" in read_yaml_file(str(tmp_path / "config_src.yaml"))
    again = load_yaml("None", opt)
    for h in (hypes, again):
        h.pop("_source")
    assert again == hypes
    before = (tmp_path / "config.yaml").read_text()
    trainer.flatten_run_config(str(tmp_path), again)  # already flat, no override: left alone
    assert (tmp_path / "config.yaml").read_text() == before


def test_script_loggers_are_under_the_opencood_logger():
    """A tool run as a script has ``__name__ == '__main__'``: a ``getLogger(__name__)`` logger there is not a
    child of ``opencood`` and its lines (the benchmark table, the demo summary) would vanish."""
    import glob
    import re
    tools = os.path.join(os.path.dirname(__file__), "..", "..", "opencood", "tools")
    for path in glob.glob(os.path.join(tools, "*.py")):
        text = open(path).read()
        for name in re.findall(r"logging\.getLogger\(([^)]*)\)", text):
            assert name.startswith('"opencood'), f"{path}: logging.getLogger({name})"
