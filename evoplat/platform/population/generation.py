"""One ES generation on a pool: ask, broadcast once, evaluate member ranges, gather in order, tell.

The strategy does the math; this module only moves the population description out and the fitness
values back, and times it.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from evoplat.platform.population.shaping import sanitize


def member_ranges(popsize: int, chunk_size: int, chunks_per_item: int = 1) -> list[tuple[int, int]]:
    """Work items: member ranges whose boundaries are multiples of the chunk size."""
    step = chunk_size * chunks_per_item
    return [(a, min(a + step, popsize)) for a in range(0, popsize, step)]


def balanced_ranges(popsize: int, chunk_size: int, workers: int, items_per_worker: int = 2) -> list[tuple[int, int]]:
    """Chunk-aligned work items, about `items_per_worker` per worker: few items (each costs a round trip)
    but enough that a slow worker does not hold up the generation. Boundaries stay multiples of the
    chunk size, so results are the same for every worker count."""
    chunks = -(-popsize // chunk_size)
    return member_ranges(popsize, chunk_size, max(1, -(-chunks // max(1, workers * items_per_worker))))


def worker_ranges(popsize: int, chunk_size: int, workers: int) -> list[tuple[int, int]]:
    """One contiguous, chunk-aligned member range per worker (possibly empty), covering the population:
    for workers that each evaluate their own share every generation."""
    chunks = -(-popsize // chunk_size)
    per = -(-chunks // workers)
    return [(min(r * per * chunk_size, popsize), min((r + 1) * per * chunk_size, popsize)) for r in range(workers)]


def generation_info(fitness: np.ndarray, pop, eval_s: float, tell_s: float, noise_s: float,
                    peak_rss_mb: float, bytes_broadcast: int) -> dict:
    """The metrics row of one generation, whoever ran it (the driver or the workers themselves)."""
    clean, nonfinite = sanitize(fitness)
    finite = clean[np.isfinite(fitness)] if nonfinite < len(fitness) else clean
    return dict(
        fitness_mean=float(finite.mean()), fitness_max=float(finite.max()), fitness_min=float(finite.min()),
        nonfinite=nonfinite, evals_per_s=len(fitness) / eval_s, eval_s=eval_s, tell_s=tell_s,
        worker_noise_s=noise_s, bytes_broadcast=bytes_broadcast, popsize=pop.size, worker_peak_rss_mb=peak_rss_mb,
        sigma=float(np.mean(pop.scale)) if not np.isscalar(pop.scale) else float(pop.scale),
    )


def advance(strategy, state, fitness, noise, pop, merge_task_state=None, task_rows=None, owned=False):
    """The state after a generation: the strategy's update and, for a task with a running state
    (state.extra["task"]), that state merged with the rows its members sent back (in member order) by
    `merge_task_state(task_state, rows)`. The members acted under the task state of the generation before.

    `owned`: nothing but the caller holds `state`, and the caller drops it: a strategy that can
    (`updates_in_place`) then updates its tensors instead of copies (the same bits)."""
    if owned and getattr(strategy, "updates_in_place", False):
        new, info = strategy.tell(state, fitness, noise, pop, in_place=True)
    else:
        new, info = strategy.tell(state, fitness, noise, pop)
    if task_rows is not None:
        new = dataclasses.replace(new, extra={**new.extra, "task": merge_task_state(state.extra["task"], task_rows)})
    return new, info


class ESGeneration:
    """One generation on the pool per `step`; `merge_task_state` as in `advance` (None: the task keeps no
    running state)."""

    def __init__(self, pool, strategy, noise, chunk_size: int, merge_task_state=None):
        self.pool, self.strategy, self.noise = pool, strategy, noise
        self.chunk_size, self.merge_task_state = chunk_size, merge_task_state

    def step(self, state, owned: bool = False):
        """(next state, metrics row, fitness); `owned` as for `advance`."""
        pop = self.strategy.ask(state)
        task_state = state.extra.get("task") if self.merge_task_state else None
        t0 = time.perf_counter()
        items = balanced_ranges(pop.size, self.chunk_size, getattr(self.pool, "num_workers", 1))
        if task_state is not None:      # small (statistics), so it rides with each item
            items = [(a, b, task_state) for a, b in items]
        parts = self.pool.run("evaluate", items, shared=(pop,))
        t_eval = time.perf_counter() - t0
        fitness = np.concatenate([p["fitness"] for p in parts])
        rows = np.concatenate([p["task_rows"] for p in parts]) if task_state is not None else None
        t1 = time.perf_counter()
        state, info = advance(self.strategy, state, fitness, self.noise, pop, self.merge_task_state, rows, owned)
        info.update(generation_info(
            fitness, pop, t_eval, time.perf_counter() - t1, float(sum(p["noise_s"] for p in parts)),
            max(float(p.get("peak_rss_mb", 0.0)) for p in parts), pop.nbytes))
        return state, info, fitness
