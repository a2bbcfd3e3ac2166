"""The generic Ray Tune trainable, on the hybrid trainer and synthetic data, with real Ray Tune."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import free_port
from evoplat.platform.config import build_config


def hybrid_raw(**hybrid) -> dict:
    hc = {"epochs": 3, "batch_size": 64, "lr": 0.05, "augment": False, "es_every": 1, "es_generations": 2,
          "es_popsize": 4, "sigma": 0.05}
    tune = {"scheduler": "fifo", "num_samples": 1, "search_space": {"hybrid.sigma": {"grid": [0.05]}},
            "max_failures": 0, **hybrid.pop("tune", {})}
    hc.update(hybrid)
    return {"algorithm": "hybrid", "seed": 5, "name": "t",
            "data": {"source": "synthetic", "val_size": 64, "synthetic_train": 384, "synthetic_test": 64},
            "model": {"name": "mlp", "hidden": [16]},
            "runtime": {"backend": "ray", "num_workers": 1, "chunk_size": 4, "task_timeout_s": 120},
            "run": {"log_every": 100}, "hybrid": hc, "tune": tune}


class FailOnce:
    """A trial logger that fails its trial once, at the row of step `at` (so the last checkpoint is
    step at-1), while `flag` exists: a fault injected from outside the platform."""

    def __init__(self, at: int, flag: str):
        self.at, self.flag = at, flag

    def __call__(self, row: dict) -> None:
        import os
        if row.get("step") == self.at and os.path.exists(self.flag):
            os.remove(self.flag)  # one-shot: the restored trial runs on
            raise RuntimeError(f"injected failure at step {self.at}")


def fail_once_logger(trial: dict):
    return FailOnce(int(trial.get("_fail_at_step", -1)), trial.get("_fail_flag", ""))


def trial_rows(grid) -> dict:
    """trial id -> that trial's metrics rows (one per report), from Tune's own records."""
    return {r.path: r.metrics_dataframe for r in grid}


def test_sweep_completes_and_reports(ray_local, tmp_path):
    from evoplat.platform.run.tune import run_tune
    raw = hybrid_raw(tune={"scheduler": "asha", "grace_period": 2, "num_samples": 1,
                           "search_space": {"hybrid.es_every": {"grid": [1, 2, 3]}}})
    out = run_tune(raw, storage=str(tmp_path), verbose=False)
    table = out["table"]
    assert len(table) == 3 and out["grid"].num_errors == 0
    assert sorted(table["config/hybrid.es_every"]) == [1, 2, 3]
    assert (tmp_path / "t" / "results.parquet").is_file()
    assert len(pd.read_parquet(tmp_path / "t" / "results.parquet")) == 3
    for df in trial_rows(out["grid"]).values():
        assert list(df["step"]) == list(range(1, len(df) + 1))  # one report per epoch
        assert df["val_acc"].notna().all() and (df["ckpt_fingerprint"] != "").all()
    assert out["best_config"]["hybrid.es_every"] in (1, 2, 3)
    import evoplat
    best = evoplat.load_model(out["best_run_dir"])         # the best trial's network
    assert sum(p.numel() for p in best.parameters()) > 0 and not best.training


def test_pbt_exploit_restores_donor_checkpoint(ray_local, tmp_path):
    """A bad trial (tiny lr) copies the good one's checkpoint: it must resume from exactly that state."""
    from ray import tune

    from evoplat.platform.run.rundir import load_checkpoint
    from evoplat.platform.run.tune import STATE_FILE, fingerprint, run_tune
    # train_loss separates the two lr unambiguously (ES phases can push both val_acc to 1 on easy data).
    raw = hybrid_raw(epochs=2, tune={"scheduler": "pbt", "perturbation_interval": 1, "quantile_fraction": 0.5,
                                     "pbt_synch": True, "metric": "train_loss", "mode": "min",
                                     "keep_checkpoints": 4,
                                     "search_space": {"hybrid.sigma": {"choice": [0.02, 0.05]}}})
    # In-process ES phases: synchronous PBT restarts every trial at every perturbation, and a trial with a
    # Ray pool starts a worker process beside its own each time (the sweep test covers trials with a pool).
    raw["runtime"] = {"backend": "local"}
    out = run_tune(raw, storage=str(tmp_path), verbose=False,
                   extra_space={"hybrid.lr": tune.grid_search([1e-5, 0.1])})
    assert len(out["table"]) == 2
    # Each trial's own rows (its run directory): Tune copies an older result file over a restarted
    # trial's newer one, so its metrics_dataframe can miss rows, even all of them.
    rows = {r.path: pd.read_parquet(Path(r.path) / "run" / "metrics.parquet") for r in out["grid"]}
    published = set()
    for path in tmp_path.rglob(STATE_FILE):
        state = load_checkpoint(path)
        published.add((int(state["step"]), fingerprint(state)))
    exploited = [df[df["restored_step"] >= 0] for df in rows.values()]
    exploited = [df for df in exploited if len(df)]
    assert exploited, "PBT never exploited; the test needs one exploit"
    for df in exploited:
        first = df.iloc[0]
        assert (int(first["restored_step"]), first["restored_fingerprint"]) in published
        assert int(first["step"]) == int(first["restored_step"]) + 1  # continues right after the donor's step


def test_interrupted_experiment_resumes_exactly(ray_local, tmp_path):
    """Trial 0 dies after checkpointing epoch 2; the restored experiment finishes it with the state an uninterrupted
    twin (trial 1, same config) reaches."""
    from ray import tune

    from evoplat.platform.run.tune import run_tune
    flag = tmp_path / "fail.flag"
    flag.write_text("x")
    raw = hybrid_raw(epochs=4)
    import sys

    from ray import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # trials run where tests/ is not importable
    space = {"_fail_at_step": tune.grid_search([3, -1]), "_fail_flag": str(flag)}
    first = run_tune(raw, storage=str(tmp_path), verbose=False, extra_space=space, loggers=(fail_once_logger,))
    assert first["grid"].num_errors == 1 and not flag.exists()
    resumed = run_tune(raw, storage=str(tmp_path), verbose=False, resume=True, loggers=(fail_once_logger,))
    grid = resumed["grid"]
    assert grid.num_errors == 0
    finals = {r.config["_fail_at_step"]: r.metrics for r in grid}
    assert finals[3]["restored_step"] == 2 and finals[3]["step"] == 4
    assert finals[3]["ckpt_fingerprint"] == finals[-1]["ckpt_fingerprint"]
    assert finals[3]["test_acc"] == finals[-1]["test_acc"]


def test_trial_resources_reserve_the_es_pool():
    from evoplat.platform.run.tune import trial_resources, tune_section
    cfg = build_config(hybrid_raw(tune={"trial_cpus": 1}) | {"runtime": {"num_workers": 3, "cpus_per_worker": 2}})
    pgf = trial_resources(cfg, tune_section(cfg))
    assert pgf.bundles == [{"CPU": 1}, {"CPU": 2}, {"CPU": 2}, {"CPU": 2}]
    local = build_config(hybrid_raw() | {"runtime": {"backend": "local"}})
    assert trial_resources(local, tune_section(local)).bundles == [{"CPU": 1}]


def test_trials_use_a_gpu_only_when_they_reserve_one(tmp_path):
    from evoplat.platform.config import ConfigError
    from evoplat.platform.run.tune import run_tune, trial_config, trial_resources, tune_section
    raw = hybrid_raw()
    assert trial_config(raw, {}).run.device == "cpu"                 # auto, nothing reserved: the CPU
    with_gpu = hybrid_raw(tune={"trial_gpus": 1})
    assert trial_config(with_gpu, {}).run.device == "auto"
    assert trial_resources(build_config(with_gpu), tune_section(build_config(with_gpu))).bundles[0] == \
        {"CPU": 1, "GPU": 1}
    raw["run"]["device"] = "cuda"                                     # asked for, not reserved: one line
    with pytest.raises(ConfigError, match="tune.trial_gpus"):
        run_tune(raw, storage=str(tmp_path / "tune"))
    assert not (tmp_path / "tune").exists()


def test_tune_section_is_generic():
    from evoplat.platform.run.tune import trial_config, tune_section
    es_raw = {k: v for k, v in hybrid_raw().items() if k != "hybrid"} | {"algorithm": "es"}
    cfg = trial_config(es_raw, {"es.popsize": 16, "_fail_flag": "x"})
    assert cfg.algorithm == "es" and cfg.es.popsize == 16 and cfg.run.checkpoint_every == 1 == cfg.run.eval_every
    assert tune_section(cfg) is cfg.tune
    from evoplat.methods.hybrid.trainer import DEFAULT_SPACE
    assert tune_section(build_config(hybrid_raw(tune={"search_space": {}}))).search_space == DEFAULT_SPACE
    from evoplat.platform.config import ConfigError
    with pytest.raises(ConfigError, match="hybrid.sigma"):
        build_config(hybrid_raw(tune={"search_space": {"hybrid.sigma": {"normal": [0, 1]}}}))


def test_trials_take_the_data_fallback(ray_local, tmp_path, monkeypatch):
    """MNIST cannot be had (no mirror answers) and data.fallback says digits: the trials train on digits."""

    from torchvision.datasets import MNIST

    from evoplat.platform.run.tune import run_tune
    port = free_port()                      # nothing listens there
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{port}/"])
    raw = hybrid_raw(epochs=1)
    raw["data"] = {"source": "mnist", "root": str(tmp_path / "data"), "fallback": "digits"}
    out = run_tune(raw, storage=str(tmp_path / "tune"), verbose=False)
    assert out["grid"].num_errors == 0
    (result,) = list(out["grid"])
    assert result.metrics["test_acc"] > 0.2      # 10 classes of 8x8 digits, learned a little in one epoch
    assert not (tmp_path / "data" / "MNIST" / "processed").exists()
