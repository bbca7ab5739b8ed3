"""The CLI steps the recipe tests chain: a training run and a stage folder holding the next stage's config."""
import shutil

from opencood.tools import trainer


def train_cli(args):
    """``train.py ARGS --num_workers 0 --skip_test`` in-process; returns the run folder."""
    return trainer.run(trainer.build_parser().parse_args(args + ["--num_workers", "0", "--skip_test"]))


def stage_dir(tmp_path, name, config):
    """``tmp_path/name/`` holding ``config`` as its ``config.yaml`` (what merge_and_save writes into)."""
    d = tmp_path / name
    d.mkdir()
    shutil.copy(config, d / "config.yaml")
    return str(d)
