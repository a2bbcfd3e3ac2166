"""RSO trainer: metrics, checkpoint/resume mid-cycle, sharded rounds on real Ray workers."""
from __future__ import annotations

import shutil

import pytest
import torch

from evoplat.platform.config import build_config
from evoplat.platform.run.rundir import RunDirectory, load_checkpoint

from conftest import run_in

torch.set_num_threads(1)


def rso_config(**rso):
    return build_config({
        "algorithm": "rso", "seed": 11,
        "data": {"source": "synthetic", "synthetic_shape": [1, 8, 8], "val_size": 0,
                 "synthetic_train": 96, "synthetic_test": 32},
        "model": {"name": "rso_mnist"},
        "runtime": {"num_workers": 1, "cpus_per_worker": 1},
        "run": {"eval_every": 1, "checkpoint_every": 1, "keep_checkpoints": 100},
        "rso": {"batch_size": 32, "cycles": 2, "trials_per_tensor": 4, **rso}})


def run(cfg, path, resume_state=None):
    return run_in(cfg, path, resume_state)


def final_params(run_dir):
    return load_checkpoint(run_dir.checkpoints()[-1])["params"]


def test_metrics_rows_per_layer_sweep(tmp_path):
    summary, run_dir = run(rso_config(), tmp_path / "a")
    rows = run_dir.rows
    assert len(rows) == 2 * 7                               # FC + 6 blocks, two cycles
    assert [r["layer"] for r in rows[:7]] == ["fc", "block5", "block4", "block3", "block2", "block1", "block0"]
    best = 0.0
    for r in rows:
        assert 0.0 <= r["accepted_frac"] <= 1.0 and r["train_loss"] > 0
        best = max(best, r["test_acc"])
        assert r["best_test_acc"] == best                 # best so far, labelled apart from test_acc
    assert rows[1]["trials"] == 12 and "accepted_frac_bn_gamma" in rows[1]
    assert summary["best_test_acc"] == best and summary["test_acc"] == rows[-1]["test_acc"]
    assert rows[-1]["final"] is True


def test_resume_mid_cycle_equals_uninterrupted(tmp_path):
    cfg = rso_config()
    run(cfg, tmp_path / "whole")
    whole = RunDirectory.open_existing(tmp_path / "whole")
    shutil.copytree(tmp_path / "whole", tmp_path / "cut")
    cut = RunDirectory.open_existing(tmp_path / "cut")
    for ck in cut.checkpoints()[10:]:                       # keep steps 1..10: mid second cycle
        ck.unlink()
    state = cut.load_latest()
    assert state["cycle"] == 1 and state["tensor_index"] > 0
    _, resumed = run(cfg, tmp_path / "cut", state)
    for name, p in final_params(whole).items():
        assert torch.equal(p, final_params(resumed)[name]), name
    assert [r["test_acc"] for r in resumed.rows] == [r["test_acc"] for r in whole.rows]


def use_backend(cfg, backend, request):
    """'ray': real Ray actors (the ray_local fixture); 'local': the same pool interface in-process."""
    if backend == "ray":
        request.getfixturevalue("ray_local")
    cfg.runtime.backend = backend
    return cfg


@pytest.mark.parametrize("backend", ["ray", "local"])
def test_sharded_with_one_shard_equals_sequential(tmp_path, backend, request):
    run(rso_config(trials_per_tensor=10), tmp_path / "seq")
    run(use_backend(rso_config(trials_per_tensor=10, sharded=True, shards=1, shard_size=3), backend, request),
        tmp_path / "one")
    seq, one = (RunDirectory.open_existing(tmp_path / n) for n in ("seq", "one"))
    for name, p in final_params(seq).items():
        assert torch.equal(p, final_params(one)[name]), name


@pytest.mark.parametrize("backend", ["ray", "local"])
def test_sharded_result_does_not_depend_on_the_number_of_workers(tmp_path, backend, request):
    base = dict(trials_per_tensor=10, sharded=True, shards=2, shard_size=3, cycles=1)
    one = build_config({**rso_config(**base).model_dump(), "runtime": {"num_workers": 1}})
    two = build_config({**rso_config(**base).model_dump(), "runtime": {"num_workers": 2}})
    one, two = use_backend(one, backend, request), use_backend(two, backend, request)
    run(one, tmp_path / "w1")
    _, r2 = run(two, tmp_path / "w2")
    run(rso_config(trials_per_tensor=10, cycles=1), tmp_path / "seq")
    p1, p2, ps = (final_params(RunDirectory.open_existing(tmp_path / n)) for n in ("w1", "w2", "seq"))
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert any(not torch.equal(p1[k], ps[k]) for k in p1)   # two shards: a Jacobi step, not the sweep
    assert all(r["trials"] > 0 for r in r2.rows)


def test_non_rso_model_is_refused(tmp_path):
    cfg = build_config({**rso_config().model_dump(), "model": {"name": "mlp"}})
    with pytest.raises(ValueError, match="RSO network"):
        run(cfg, tmp_path / "x")
