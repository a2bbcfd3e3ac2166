"""Grad-Instructor on the platform: episodes on Ray workers, the ENN artefact, deploy, resume, report."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from evoplat.platform.config import build_config
from evoplat.platform.run.report import report

from conftest import run_in


def gi_config(**gi):
    raw = {"algorithm": "grad_instructor", "seed": 2,
           "data": {"source": "synthetic", "val_size": 64, "synthetic_train": 320, "synthetic_test": 128},
           "model": {"name": "mlp", "hidden": [16]},
           "runtime": {"backend": "local", "num_workers": 2, "cpus_per_worker": 1},
           "run": {"checkpoint_every": 1, "log_every": 100},
           "grad_instructor": {"rl_updates": 1, "episodes_per_update": 2, "epochs": 1, "batch_size": 32,
                               "lr": 0.05, "guidance_weight": 5.0, "eval_center": False,
                               "final_deploy": False, **gi}}
    return raw


def run_trainer(tmp_path, name, raw, resume_state=None):
    summary, run = run_in(build_config(raw), tmp_path / name, resume_state)
    return run, summary


def test_two_episodes_run_in_parallel_on_ray_and_match_local(ray_local, tmp_path):
    raw = gi_config()
    raw["runtime"]["backend"] = "ray"
    ray_run, _ = run_trainer(tmp_path, "ray", raw)
    rows = pq.read_table(ray_run.path / "metrics.parquet").to_pylist()
    assert len(rows) == 1 and rows[0]["phase"] == "rl_update" and rows[0]["episodes"] == 2
    assert 0.0 <= rows[0]["reward_min"] <= rows[0]["reward_max"] <= 1.0
    assert (ray_run.path / "enn.pt").is_file() and ray_run.checkpoints()
    # Episodes depend only on (seed, update, pair): the same numbers without Ray
    local_run, _ = run_trainer(tmp_path, "local", gi_config())
    local = pq.read_table(local_run.path / "metrics.parquet").to_pylist()[0]
    for key in ("reward_mean", "reward_max", "reward_min", "pg_grad_norm", "phi_step"):
        assert rows[0][key] == pytest.approx(local[key], rel=1e-6)
    ckpt_ray, ckpt_local = ray_run.load_latest(), local_run.load_latest()
    torch.testing.assert_close(ckpt_ray["phi"], ckpt_local["phi"])


def test_resume_ends_where_an_uninterrupted_run_does(tmp_path):
    full, _ = run_trainer(tmp_path, "full", gi_config(rl_updates=2))
    half, _ = run_trainer(tmp_path, "half", gi_config(rl_updates=1))
    state = half.load_latest()
    resumed, _ = run_trainer(tmp_path, "half", gi_config(rl_updates=2), state)
    torch.testing.assert_close(resumed.load_latest()["phi"], full.load_latest()["phi"])
    assert [r["step"] for r in pq.read_table(resumed.path / "metrics.parquet").to_pylist()] == [1, 2]


def test_value_rule_and_activation_input_run(tmp_path):
    run, summary = run_trainer(tmp_path, "value", gi_config(rl_rule="value", enn_input="activations",
                                                           resize_factor=0.5, value_steps=3))
    row = pq.read_table(run.path / "metrics.parquet").to_pylist()[0]
    assert row["critic_mse"] > 0 and row["phi_step"] > 0


def test_trained_enn_is_reusable_in_deploy_and_report_writes_gradcam(tmp_path):
    enn_run, _ = run_trainer(tmp_path, "enn", gi_config(final_deploy=True))
    assert (enn_run.path / "enn.pt").is_file()
    raw = gi_config(mode="deploy", epochs=2, enn_checkpoint=str(enn_run.path))
    dep, summary = run_trainer(tmp_path, "deploy", raw)
    rows = pq.read_table(dep.path / "metrics.parquet").to_pylist()
    assert [r["epoch"] for r in rows] == [1, 2] and summary["guided"] is True
    assert "enn_grad_norm" in rows[-1] and "train_test_gap" in rows[-1]
    written = report(str(enn_run.path))
    png = enn_run.path / "gradcam.png"
    assert png in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
