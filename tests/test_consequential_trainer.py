"""The `consequential` trainer on synthetic data: metrics rows, checkpoints, exact resume."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from evoplat.platform.config import build_config, load_config
from evoplat.methods.consequential.optimizer import ConsequentialOptimizer
from evoplat.platform.run.rundir import load_checkpoint
from evoplat.methods.consequential import trainer

from conftest import run_in


def small_config(**consequential):
    section = {"optimizer": "adam", "lr": 0.01, "epochs": 3, "batch_size": 64, "lr_schedule": "cosine",
               **consequential}
    return build_config({
        "algorithm": "consequential", "seed": 2,
        "data": {"source": "synthetic", "val_size": 64, "synthetic_train": 384, "synthetic_test": 128},
        "model": {"name": "mlp", "hidden": [16]},
        "run": {"checkpoint_every": 1, "keep_checkpoints": 5},
        "consequential": section})


def run(cfg, path, resume_state=None):
    return run_in(cfg, path, resume_state)


@pytest.mark.parametrize("extra", [{}, {"optimizer": "nag", "lr": 0.05, "mode": "emend"}, {"enabled": False}])
def test_short_run_writes_metrics_and_resumes_exactly(tmp_path, extra):
    cfg = small_config(**extra)
    full, full_dir = run(cfg, tmp_path / "full")
    rows = pq.read_table(full_dir.path / "metrics.parquet").to_pylist()
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["phase"] == "epoch" and 0.0 <= r["test_acc"] <= 1.0 and r["train_loss"] > 0
        assert r["best_test_acc"] >= r["test_acc"] and "val_acc" in r
    assert full["test_acc"] == rows[-1]["test_acc"] and full["consequential"] == cfg.consequential.enabled

    # interrupt after epoch 1: a fresh process resumes from that checkpoint and ends bit-identical
    ckpt = load_checkpoint(full_dir.checkpoints()[0])
    assert ckpt["algorithm"] == "consequential" and ckpt["epoch"] == 1
    part_dir = tmp_path / "part"
    part_dir.mkdir()
    (part_dir / "config.yaml").write_text("algorithm: consequential\n")
    resumed, resumed_dir = run(cfg, part_dir, resume_state=ckpt)
    assert resumed["test_acc"] == full["test_acc"] and resumed["best_test_acc"] == full["best_test_acc"]
    a = load_checkpoint(full_dir.checkpoints()[-1])
    b = load_checkpoint(resumed_dir.checkpoints()[-1])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k])
    assert a["optimizer"].keys() == b["optimizer"].keys()


def test_build_optimizer_follows_the_config():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    wrapped = trainer.build_optimizer(model, small_config(strength=0.5, mode="emend").consequential)
    assert isinstance(wrapped, ConsequentialOptimizer) and wrapped.strength == 0.5 and wrapped.mode == "emend"
    assert isinstance(wrapped.base, torch.optim.Adam)
    plain = trainer.build_optimizer(model, small_config(enabled=False, optimizer="nag").consequential)
    assert isinstance(plain, torch.optim.SGD) and plain.param_groups[0]["nesterov"]


@pytest.mark.parametrize("name", ["consequential_mnist", "consequential_cifar10"])
def test_experiment_files_validate(name):
    cfg = load_config(Path(__file__).resolve().parents[1] / "experiments" / f"{name}.yaml")
    assert cfg.algorithm == "consequential" and cfg.consequential.enabled


def test_cli_run_and_resume_after_a_lost_checkpoint(tmp_path):
    import json
    import shutil

    from evoplat.cli import main
    from evoplat.platform.config import to_yaml
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(to_yaml(small_config(optimizer="momentum", lr=0.05)))
    assert main(["run", str(cfg_path), "--run-dir", str(tmp_path / "a"), "--quiet"]) == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    sorted((tmp_path / "b" / "checkpoints").glob("step_*.pt"))[-1].unlink()   # as if killed in epoch 3
    (tmp_path / "b" / "summary.json").unlink()
    assert main(["run", "--resume", str(tmp_path / "b"), "--quiet"]) == 0
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert a == b
    assert pq.read_table(tmp_path / "b" / "metrics.parquet").column("step").to_pylist() == [1, 2, 3]
