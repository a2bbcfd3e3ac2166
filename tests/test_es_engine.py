"""The distributed ES engine on real Ray: determinism across worker counts, run directory, resume."""
from __future__ import annotations

import functools

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from conftest import synthetic_config
from evoplat.cli import main
from evoplat.platform.population.evaluator import ESEvaluator, make_es_noise
from evoplat.platform.models import build_model
from evoplat.platform.population.noise import CounterNoise
from evoplat.platform.population.forward import ParamLayout
from evoplat.platform.run.rundir import load_checkpoint
from evoplat.platform.strategies import build_strategy
from evoplat.platform.population.generation import ESGeneration, member_ranges
from evoplat.platform.runtime.pool import WorkerPool


def _fitness_history(cfg, workers: int, generations: int = 3):
    model = build_model(cfg.model, tuple(cfg.data.synthetic_shape), cfg.data.synthetic_classes)
    layout = ParamLayout(model)
    strategy = build_strategy(cfg.es)
    state = strategy.init(layout.flatten(model))
    pool = WorkerPool(functools.partial(ESEvaluator, cfg), workers, cpus_per_worker=1)
    try:
        noise = make_es_noise(cfg, layout)
        loop = ESGeneration(pool, strategy, noise, cfg.runtime.chunk_size)
        history = []
        for _ in range(generations):
            state, _, fitness = loop.step(state)
            history.append(fitness)
        return np.stack(history), state.center.clone()
    finally:
        pool.shutdown()


def test_member_ranges_are_chunk_aligned():
    assert member_ranges(20, 8) == [(0, 8), (8, 16), (16, 20)]
    assert member_ranges(20, 8, chunks_per_item=2) == [(0, 16), (16, 20)]


@pytest.mark.parametrize("noise,perturbation,strategy", [
    ("counter", "full", "openai_es"), ("table", "full", "openai_es"), ("table", "lowrank", "openai_es"),
    ("counter", "lowrank", "openai_es"),
    ("table", "full", "pgpe"),             # a per-parameter sigma: members formed with a vector scale
    ("table", "lowrank", "pgpe")])          # and its sigma update as a product of squared factors
def test_bitwise_identical_for_1_2_3_workers(ray_local, noise, perturbation, strategy):
    cfg = synthetic_config(es={"noise": noise, "perturbation": perturbation, "rank": 2, "strategy": strategy})
    f1, w1 = _fitness_history(cfg, 1)
    for workers in (2, 3):
        f, w = _fitness_history(cfg, workers)
        assert np.array_equal(f1, f), f"fitness differs with {workers} workers"
        assert torch.equal(w1, w), f"weights differ with {workers} workers"


def _write(tmp_path, cfg, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def test_run_directory_contents(ray_local, tmp_path, capsys):
    cfg_path = _write(tmp_path, synthetic_config())
    run = tmp_path / "run"
    assert main(["run", str(cfg_path), "--run-dir", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "final test accuracy" in out and str(run.resolve()) in out
    assert f"evoplat.load_model({str(run.resolve())!r})" in out and (run / "model.pt").is_file()
    table = pq.read_table(run / "metrics.parquet").to_pandas()
    assert list(table["generation"]) == list(range(1, 7))
    for col in ("wall_time", "evals_per_s", "fitness_mean", "fitness_max", "fitness_min", "sigma",
                "bytes_broadcast", "nonfinite"):
        assert col in table and table[col].notna().all(), col
    assert table["test_acc"].notna().sum() == 2 and "train_loss" in table and "val_acc" in table
    assert yaml.safe_load((run / "config.yaml").read_text())["es"]["popsize"] == 24
    ckpt = load_checkpoint(sorted((run / "checkpoints").glob("*.pt"))[-1])
    assert ckpt["step"] == 6 and ckpt["algorithm"] == "es"
    # a second run into the same directory is refused, and the first is intact
    assert main(["run", str(cfg_path), "--run-dir", str(run), "--quiet"]) == 2
    assert len(pq.read_table(run / "metrics.parquet")) == 6
    assert main(["report", str(run)]) == 0
    assert (run / "accuracy.png").is_file() and (run / "fitness.png").is_file()


def test_resume_ends_with_the_same_weights(ray_local, tmp_path):
    cfg = synthetic_config(es={"generations": 6}, run={"checkpoint_every": 2, "eval_every": 2})
    full, part = tmp_path / "full", tmp_path / "part"
    path = _write(tmp_path, cfg)
    assert main(["run", str(path), "--run-dir", str(full), "--quiet"]) == 0
    # a run stopped after generation 4 (its last checkpoint), then resumed
    assert main(["run", str(path), "--run-dir", str(part), "--quiet", "--set", "es.generations=4"]) == 0
    cfg_file = part / "config.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("generations: 4", "generations: 6"))
    assert main(["run", "--resume", str(part), "--quiet"]) == 0
    a = load_checkpoint(sorted((full / "checkpoints").glob("*.pt"))[-1])["strategy"]
    b = load_checkpoint(sorted((part / "checkpoints").glob("*.pt"))[-1])["strategy"]
    assert torch.equal(a["center"], b["center"])
    assert b["generation"] == 6
    assert list(pq.read_table(part / "metrics.parquet").to_pandas()["generation"]) == list(range(1, 7))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    cfg = synthetic_config(runtime={"backend": "local"})
    run = tmp_path / "r"
    assert main(["run", str(_write(tmp_path, cfg)), "--run-dir", str(run), "--quiet"]) == 0
    last = sorted((run / "checkpoints").glob("*.pt"))[-1]
    last.write_bytes(b"not a checkpoint")
    assert main(["run", "--resume", str(run)]) == 2
    assert "checkpoint error" in capsys.readouterr().err
    assert last.read_bytes() == b"not a checkpoint"


def test_nan_fitness_is_counted_and_never_reaches_theta(tmp_path):
    """A member whose weights make the loss NaN ranks worst; the center stays finite."""
    from evoplat.platform.strategies import OpenAIES
    from evoplat.platform.strategies.optim import make_optimizer
    strat = OpenAIES(4, 0.1, make_optimizer("adam", 0.1))
    noise = CounterNoise(0, 5)
    state = strat.init(torch.zeros(5))
    state, _ = strat.tell(state, np.array([np.nan, 1.0, np.inf, 0.0]), noise, strat.ask(state))
    assert torch.isfinite(state.center).all()


@pytest.mark.parametrize("strategy", ["snes", "elitist", "pgpe"])
def test_other_strategies_run_end_to_end(tmp_path, strategy):
    cfg = synthetic_config(runtime={"backend": "local"}, es={"strategy": strategy, "popsize": 12,
                                                             "antithetic": strategy != "elitist"})
    run = tmp_path / strategy
    assert main(["run", str(_write(tmp_path, cfg)), "--run-dir", str(run), "--quiet"]) == 0
    table = pq.read_table(run / "metrics.parquet").to_pandas()
    assert len(table) == 6 and table["test_acc"].notna().any()
    if strategy == "elitist":
        assert set(table["accepted"].unique()) <= {0.0, 1.0} and (table["popsize"] == 13).all()
