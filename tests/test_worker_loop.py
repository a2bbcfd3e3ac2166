"""`runtime.loop: workers`: the workers run the ES generations themselves, trading fitness values over a
gloo group. Same weights bit for bit as the driver loop for 1, 2 and 3 workers and both perturbation
kinds; a stop inside a span of generations checkpoints the state of the step it reports; a resumed run
continues exactly; a worker killed or hung mid-span breaks the group, which is rebuilt and the span run
again with the same result; a bug in the hosted code is raised at once, not retried, and the next call
starts from a fresh group. `runtime.loop: auto` picks the workers' loop on one node.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import torch

from conftest import run_in, synthetic_config
from evoplat.platform.config import ConfigError, build_config
from evoplat.platform.population.generation import worker_ranges
from evoplat.platform.population.worker_loop import ESLoopHost, ESWorkerLoop
from evoplat.platform.run.rundir import load_checkpoint
from evoplat.platform.runtime.pool import WorkerPool
from evoplat.platform.strategies import StrategyState
from test_faults_support import es_parts

# Workers cannot import test modules: ship this one by value with the factories.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

ES = {"popsize": 24, "generations": 6, "sigma": 0.05, "lr": 0.05, "batch_size": 128, "rank": 2}
# One evaluation and one checkpoint at the end: the workers may run generations 2-6 in one call.
RUN = {"eval_every": 6, "checkpoint_every": 6, "log_every": 100}


def _config(perturbation="lowrank", run=None, **runtime):
    return synthetic_config(es={**ES, "perturbation": perturbation}, runtime={"loop_span_s": 1e6, **runtime},
                            run={**RUN, **(run or {})})


def _last_checkpoint(run) -> dict:
    return load_checkpoint(sorted((run.path / "checkpoints").glob("*.pt"))[-1])


def _center(run) -> torch.Tensor:
    return StrategyState.from_dict(_last_checkpoint(run)["strategy"]).center


def test_worker_ranges_cover_the_population_in_chunk_aligned_shares():
    assert worker_ranges(256, 128, 2) == [(0, 128), (128, 256)]
    assert worker_ranges(100, 32, 3) == [(0, 64), (64, 100), (100, 100)]      # the last worker idles
    assert worker_ranges(24, 8, 1) == [(0, 24)]
    for pop, chunk, workers in ((24, 8, 2), (24, 8, 3), (1000, 32, 3), (5, 8, 4)):
        ranges = worker_ranges(pop, chunk, workers)
        assert ranges[0][0] == 0 and ranges[-1][1] == pop
        assert all(b == c for (_, b), (c, _) in zip(ranges, ranges[1:]))
        assert all(a % chunk == 0 for a, b in ranges if b > a)


@pytest.mark.parametrize("perturbation,counts", [("lowrank", (1, 2, 3, "local")), ("full", (2, 3, "gloo"))])
def test_worker_loop_gives_the_driver_loops_weights_bit_for_bit(ray_local, tmp_path, perturbation, counts):
    _, ref = run_in(_config(perturbation), tmp_path / "driver")
    for n in counts:
        # local: in the driver, alone; gloo: 2 workers that gather over gloo although they share a node
        runtime = {"backend": "local"} if n == "local" else \
            {"num_workers": 2, "shared_memory": False} if n == "gloo" else {"num_workers": n}
        summary, run = run_in(_config(perturbation, loop="workers", **runtime), tmp_path / f"workers{n}")
        assert summary["steps"] == ES["generations"]
        assert torch.equal(_center(run), _center(ref)), f"{n} workers"
        assert [r["fitness_mean"] for r in run.rows] == [r["fitness_mean"] for r in ref.rows]
        assert run.rows[-1]["test_acc"] == ref.rows[-1]["test_acc"]


def test_spans_queued_ahead_across_evaluations_give_the_driver_loops_rows(ray_local, tmp_path):
    """Evaluations and checkpoints every 2 generations: each span's successor is queued before the driver
    reads it, evaluates and checkpoints; the rows and weights are still the driver loop's."""
    every = {"eval_every": 2, "checkpoint_every": 2}
    _, ref = run_in(_config(run=every), tmp_path / "driver")
    _, run = run_in(_config(run=every, loop="workers"), tmp_path / "workers")
    assert torch.equal(_center(run), _center(ref))
    keys = ("generation", "fitness_mean", "fitness_max", "test_acc", "val_acc")
    assert [[r.get(k) for k in keys] for r in run.rows] == [[r.get(k) for k in keys] for r in ref.rows]


def test_a_queued_span_is_dropped_when_the_driver_moves_the_state(ray_local, tmp_path):
    """The driver goes back to the start (as loading a checkpoint does) while a span is queued: the
    workers, who ran it anyway, are sent the state itself and the result is still exact."""
    cfg = _config()
    _, ref = run_in(cfg, tmp_path / "driver")
    strategy, _, state = es_parts(cfg)
    pool = WorkerPool(functools.partial(ESLoopHost, cfg, None, "cpu"), num_workers=2)
    try:
        loop = ESWorkerLoop(pool, strategy, ESLoopHost(cfg, None, "cpu").evaluator.noise, span_s=1e6)
        loop.reset(state)
        loop.next_row(2, 4)               # generation 1 runs; generation 2 is queued behind it
        assert loop.pending is not None and loop.held
        loop.reset(state)
        assert loop.pending is None and not loop.held
        for g in range(ES["generations"]):
            loop.next_row(ES["generations"] - g)
        center = loop.current().center
    finally:
        pool.shutdown()
    assert torch.equal(center, _center(ref))


def test_a_stop_inside_a_span_checkpoints_the_state_of_the_step_it_reports(ray_local, tmp_path):
    """A target on a per-generation metric, reached at generation 4 while the workers ran to 6."""
    _, full = run_in(_config(), tmp_path / "full")
    target = full.rows[3]["fitness_max"]
    first = next(r["generation"] for r in full.rows if r["fitness_max"] >= target)
    stop = {"target_metric": "fitness_max", "target_value": target}
    _, ref = run_in(_config(run=stop), tmp_path / "driver")
    summary, run = run_in(_config(run=stop, loop="workers"), tmp_path / "workers")
    assert summary["stopped"] == "target" and summary["steps"] == first < ES["generations"]
    assert _last_checkpoint(run)["step"] == first
    assert torch.equal(_center(run), _center(ref))
    assert run.rows[-1]["test_acc"] == ref.rows[-1]["test_acc"]


def test_a_resumed_worker_loop_run_ends_with_the_uninterrupted_weights(ray_local, tmp_path):
    _, whole = run_in(_config(loop="workers"), tmp_path / "whole")
    summary, _ = run_in(_config(run={"max_steps": 4}, loop="workers"), tmp_path / "split")
    assert summary["stopped"] == "max_steps"
    import evoplat
    evoplat.run(_config(loop="workers"), resume=tmp_path / "split")
    from evoplat.platform.run.rundir import RunDirectory
    assert torch.equal(_center(RunDirectory.open_existing(tmp_path / "split")), _center(whole))


def test_auto_runs_the_workers_loop_on_one_node_and_the_driver_loop_in_process(ray_local, tmp_path):
    summary, run = run_in(_config(), tmp_path / "auto")           # runtime.loop left at its default
    assert summary["loop"] == "workers"
    assert run_in(_config(backend="local"), tmp_path / "local")[0]["loop"] == "driver"
    assert run_in(_config(loop="driver"), tmp_path / "driver")[0]["loop"] == "driver"
    assert build_config({"algorithm": "rso"}).runtime.loop == "auto"   # other methods: the driver's steps


def test_auto_asks_nothing_of_ray_before_the_local_instance_is_started():
    # no Ray yet and no address: the pool will start a local instance, one node; nothing connects early
    code = ("import ray; from evoplat.platform.config import build_config; "
            "from evoplat.platform.runtime.cluster import worker_nodes; "
            "print(worker_nodes(build_config({}).runtime), ray.is_initialized())")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False"]


def test_worker_loop_is_for_es_only():
    with pytest.raises(ConfigError, match="runtime.loop = 'workers': algorithm rso"):
        build_config({"algorithm": "rso", "runtime": {"loop": "workers"}})


# -- faults: a real worker process dies or hangs inside a span ------------------------------------------

class FaultyLoopHost(ESLoopHost):
    """Rank 1, on reaching `generation` the first time (a marker file remembers), exits, hangs or raises."""

    def __init__(self, cfg, marker: str, generation: int, mode: str):
        super().__init__(cfg, None, "cpu")
        self.marker, self.generation, self.mode = marker, generation, mode

    def _gather(self, pop, task_state, ranges, rank, width):
        if rank == 1 and pop.generation == self.generation and not os.path.exists(self.marker):
            Path(self.marker).touch()
            if self.mode == "exit":
                os._exit(1)
            if self.mode == "hang":
                time.sleep(3600)
            raise ValueError("a bug in the hosted code")
        return super()._gather(pop, task_state, ranges, rank, width)


def span_center(cfg, pool, generations: int) -> torch.Tensor:
    """The center after `generations`, run by `pool`'s workers: a first generation, the next queued with
    it before its time was known (another single generation), then the rest in one span."""
    strategy, _, state = es_parts(cfg)
    host = ESLoopHost(cfg, None, "cpu")     # the driver's copy of the keyed noise, built as workers build it
    loop = ESWorkerLoop(pool, strategy, host.evaluator.noise, span_s=1e6)
    loop.reset(state)
    for g in range(generations):
        loop.next_row(generations - g)
    return loop.current().center


@pytest.mark.parametrize("mode,at", [("exit", 3), ("hang", 3), ("exit", 1)])
def test_a_worker_lost_inside_a_span_rebuilds_the_group_with_the_same_result(ray_local, tmp_path, mode, at):
    """At generation 3 the last span breaks; at generation 1 the second, with the rest queued behind it:
    both are sent again to the new group, the first with its start state, the other after it."""
    cfg = _config(task_timeout_s=15.0, max_task_retries=2)
    _, ref = run_in(_config(), tmp_path / "driver")
    pool = WorkerPool(functools.partial(FaultyLoopHost, cfg, str(tmp_path / "marker"), at, mode), num_workers=2,
                      task_timeout_s=15.0, max_task_retries=2)
    try:
        center = span_center(cfg, pool, ES["generations"])
    finally:
        pool.shutdown()
    assert (tmp_path / "marker").exists(), "the fault never fired"
    # the first sign may be the dead worker or its peer's broken all-gather: either rebuilds the group
    assert pool.stats.retries == 1 and pool.stats.replaced >= 2
    assert torch.equal(center, _center(ref))


def test_an_error_in_the_hosted_code_is_raised_not_retried(ray_local, tmp_path):
    cfg = _config(task_timeout_s=15.0)
    pool = WorkerPool(functools.partial(FaultyLoopHost, cfg, str(tmp_path / "marker"), 2, "raise"),
                      num_workers=2, task_timeout_s=15.0)
    try:
        with pytest.raises(ValueError, match="a bug in the hosted code"):
            span_center(cfg, pool, 4)
        assert pool.stats.retries == 0
        # rank 0 was left waiting in the all-gather: the next call starts from a fresh group
        center = span_center(cfg, pool, 4)
    finally:
        pool.shutdown()
    _, ref = run_in(_config(run={"max_steps": 4}), tmp_path / "driver")
    assert torch.equal(center, _center(ref))
