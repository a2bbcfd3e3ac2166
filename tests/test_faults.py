"""The pool survives a worker actor killed mid-generation and a hung worker, with final weights equal to
an undisturbed run's (same seed); evoplat's driver survives being killed (`--resume`).

Worker faults use one pool of gated evaluators (see test_faults_support.py) on the session's local
Ray: the undisturbed reference run goes through the same pool with the gate disarmed.
"""
from __future__ import annotations

import pytest
import ray

from conftest import synthetic_config
from evoplat.platform.runtime.pool import WorkerPool
from test_faults_support import (GUARD_S, Gate, actor_with_id, gated_factory, run_generations, run_with_fault,
                                 same_tensor)

GENERATIONS = 4
HANG_TIMEOUT_S = 20.0   # the pool's task timeout; a normal item takes milliseconds


@pytest.fixture(scope="module")
def gated():
    """(cfg, gate, pool, reference center, reference fitness): a 2-worker pool and its undisturbed run."""
    if not ray.is_initialized():   # same settings as conftest's ray_local (a module fixture cannot use it)
        ray.init(num_cpus=4, include_dashboard=False, configure_logging=False, log_to_driver=False)
    cfg = synthetic_config(runtime={"task_timeout_s": HANG_TIMEOUT_S, "max_task_retries": 2})
    gate = Gate.remote()
    pool = WorkerPool(gated_factory(cfg, gate), num_workers=2, cpus_per_worker=1,
                      task_timeout_s=HANG_TIMEOUT_S, max_task_retries=2)
    try:
        pool.wait_ready(timeout=GUARD_S)   # actors start slowly on a loaded machine
        center, fitness = run_generations(cfg, pool, GENERATIONS)
        assert pool.stats.retries == 0
        yield cfg, gate, pool, center, fitness
    finally:
        pool.shutdown()
        ray.kill(gate)


def _disturbed_run(gated, generation, start, mode, fault):
    """Arm (generation, start) in `mode`; `fault(victim_actor_id)` runs on a thread once a worker
    holds that item. Returns the run's center, fitness and the stats delta."""
    cfg, gate, pool, _, _ = gated
    before = dict(vars(pool.stats))
    ray.get(gate.arm.remote(generation, start, mode))
    try:
        center, fitness = run_with_fault(cfg, pool, gate, lambda actor_id, _node: fault(actor_id), GENERATIONS)
    finally:
        ray.get(gate.disarm.remote())
    delta = {k: getattr(pool.stats, k) - before[k] for k in ("retries", "timeouts", "replaced", "lost")}
    return center, fitness, delta


def test_worker_killed_mid_generation_gives_same_weights(gated):
    cfg, gate, pool, ref_center, ref_fitness = gated
    # Generation 2, members [8, 16): the kill lands while that range is being evaluated.
    center, fitness, delta = _disturbed_run(
        gated, 2, 8, "block", lambda actor_id: ray.kill(actor_with_id(pool, actor_id), no_restart=True))
    assert delta["lost"] == 1 and delta["retries"] >= 1 and delta["replaced"] >= 1
    assert all((a == b).all() for a, b in zip(fitness, ref_fitness)), "a member's fitness changed"
    assert same_tensor(center, ref_center)


def test_hung_worker_is_timed_out_and_its_work_reassigned(gated):
    cfg, gate, pool, ref_center, ref_fitness = gated
    # The worker that picks up generation 1, members [16, 24) sleeps for an hour; nobody kills it.
    center, fitness, delta = _disturbed_run(gated, 1, 16, "hang", lambda actor_id: None)
    assert delta["timeouts"] >= 1 and delta["replaced"] >= 1
    timed_out_items = [item for _, kind, _, item in pool.stats.events if kind == "timeout"]
    assert 2 in timed_out_items       # item 2 = members [16, 24)
    assert all((a == b).all() for a, b in zip(fitness, ref_fitness))
    assert same_tensor(center, ref_center)
