"""Fault-injection helpers shared by test_faults.py, test_cluster_nodes.py and the fault benchmark.
(No tests here.) Nothing in evoplat is patched: the worker hosts a real `ESEvaluator` subclass that, on
one armed (generation, first member) work item, reports which actor and node picked it up and then
blocks or hangs, so the test can kill that actor / remove that node while the item is provably in
flight. Without that, "mid-generation" would be a matter of timing.
"""
from __future__ import annotations

import functools
import sys
import time

import ray
import torch

from evoplat.platform.data import load_dataset
from evoplat.platform.population.evaluator import ESEvaluator
from evoplat.platform.models import build_model
from evoplat.platform.population.noise import CounterNoise
from evoplat.platform.population.forward import ParamLayout
from evoplat.platform.strategies import build_strategy
from evoplat.platform.population.generation import ESGeneration

# Workers cannot import test modules: ship this one by value with the factory.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

GUARD_S = 300.0   # a hang guard (fail instead of waiting forever), never a performance assertion


@ray.remote(num_cpus=0)
class Gate:
    """Arms one work item. The first worker to reach it is recorded and told to block or hang."""

    def __init__(self):
        self.target, self.mode, self.victim, self.opened = None, None, None, False

    def arm(self, generation: int, start: int, mode: str) -> None:   # mode: "block" | "hang"
        self.target, self.mode, self.victim, self.opened = (generation, start), mode, None, False

    def disarm(self) -> None:
        self.target, self.opened = None, True

    def arrive(self, generation: int, start: int, actor_id: str, node_id: str) -> str:
        if self.victim is None and (generation, start) == self.target:
            self.victim = (actor_id, node_id)
            return self.mode
        return "pass"

    def victim_of(self):
        return self.victim

    def open(self) -> None:
        self.opened = True

    def is_open(self) -> bool:
        return self.opened


class GatedEvaluator(ESEvaluator):
    """An `ESEvaluator` whose armed work item blocks until the gate opens, or hangs for an hour."""

    def __init__(self, cfg, gate):
        super().__init__(cfg, None, "cpu")
        self.gate = gate

    def evaluate(self, pop, start, stop):
        ctx = ray.get_runtime_context()
        action = ray.get(self.gate.arrive.remote(pop.generation, start, ctx.get_actor_id(), ctx.get_node_id()))
        if action == "hang":
            time.sleep(3600)
        if action == "block":
            while not ray.get(self.gate.is_open.remote()):
                time.sleep(0.02)
        return super().evaluate(pop, start, stop)


def gated_factory(cfg, gate):
    return functools.partial(GatedEvaluator, cfg, gate)


def es_parts(cfg):
    """Strategy, noise and initial state of an ES run, built as the ES trainer builds them."""
    data = load_dataset(cfg.data, None)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    layout = ParamLayout(model)
    strategy = build_strategy(cfg.es)
    return strategy, CounterNoise(cfg.seed, layout.size), strategy.init(layout.flatten(model))


def run_generations(cfg, pool, generations: int, on_generation=None):
    """Run `generations` ES generations on `pool`; returns the final center and per-generation fitness."""
    strategy, noise, state = es_parts(cfg)
    loop = ESGeneration(pool, strategy, noise, cfg.runtime.chunk_size)
    fitness = []
    for _ in range(generations):
        if on_generation:
            on_generation(state.generation)
        state, _, fit = loop.step(state)
        fitness.append(fit.copy())
    return state.center.clone(), fitness


def wait_for_victim(gate) -> tuple[str, str]:
    """(actor id, node id) of the worker holding the armed item, once it has picked it up."""
    t0 = time.monotonic()
    while (victim := ray.get(gate.victim_of.remote())) is None:
        if time.monotonic() - t0 > GUARD_S:
            raise RuntimeError("no worker reached the armed work item")
        time.sleep(0.02)
    return victim


def actor_with_id(pool, actor_id: str):
    return next(a for a in pool.actors if a._actor_id.hex() == actor_id)


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def run_with_fault(cfg, pool, gate, fault, generations: int):
    """Run `generations` while `fault(actor_id, node_id)` runs on a thread as soon as a worker holds the
    armed item; the gate opens after the fault. Returns (center, fitness) like run_generations."""
    import threading
    errors = []

    def inject():
        try:
            fault(*wait_for_victim(gate))
        except Exception as err:   # surfaced below, in the test's thread
            errors.append(err)
        finally:
            gate.open.remote()

    thread = threading.Thread(target=inject, daemon=True)
    thread.start()
    try:
        result = run_generations(cfg, pool, generations)
    finally:
        thread.join()
    assert not errors, errors
    return result
