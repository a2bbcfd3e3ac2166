"""ES generations that the workers run by themselves (`runtime.loop: workers`).

With the driver loop, every generation is a round trip: the driver ships the population, the workers
send fitness back, the driver updates. At small generations (low-rank P-ES: ~10 ms) that call costs
more than it carries. Here every worker holds the strategy too, as in Salimans et al. (2017), and one
call runs many generations: each worker evaluates its own chunk-aligned share of the members, the
workers all-gather the fitness values (a few KB) and each applies the same update, so all hold the
same state. Member fitness depends only on (center, seed, generation, member, chunk size), and the
update runs on one thread everywhere, so the result is bitwise that of the driver loop, for any
number of workers.

A task with a running state (observation statistics: state.extra["task"]) rides along: each worker's
members send back their rows with their fitness, the group gathers them in member order too, and every
worker merges them as the driver loop does.

The driver keeps the state at the start of each call and the fitness values (and task rows) of its
generations; if the run stops inside a call (wall clock, a target on a per-generation metric), it
replays the updates up to that generation, so what it evaluates and checkpoints is exactly the state
of the step it reports.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from evoplat.platform.device import map_leaves
from evoplat.platform.population.evaluator import ESEvaluator
from evoplat.platform.population.generation import advance, generation_info, worker_ranges
from evoplat.platform.population.lowrank import LowRankNoise, RecentFactors
from evoplat.platform.population.split_sums import update_noise
from evoplat.platform.population.task import RunningState
from evoplat.platform.runtime import collective
from evoplat.platform.strategies import StrategyState, build_strategy


class WireArray:
    """A tensor travelling as a numpy array: Ray moves arrays through its object store without pickling
    their bytes, about half the cost of a tensor for a P-ES state (center and Adam moments, 1.2 MB)."""

    def __init__(self, tensor: torch.Tensor):
        self.array = tensor.detach().cpu().numpy()


def to_wire(state: StrategyState) -> dict:
    """The state's fields with every tensor as a WireArray."""
    return map_leaves(dict(vars(state)), lambda v: WireArray(v) if torch.is_tensor(v) else v)


def from_wire(fields: dict) -> StrategyState:
    """The inverse of to_wire; tensors are copies (arrays out of the object store are read-only)."""
    return StrategyState(**map_leaves(fields, lambda v: torch.from_numpy(v.array.copy())
                                      if isinstance(v, WireArray) else v))


class ESLoopHost:
    """What each worker hosts: the evaluator and the strategy; it runs generations with its peers."""

    def __init__(self, cfg, data_root=None, device=None):
        self.evaluator = ESEvaluator(cfg, data_root, device)
        self.strategy = build_strategy(cfg.method)
        self.merge_task_state = RunningState(self.evaluator.task).merge
        self.chunk = cfg.runtime.chunk_size
        self.state = None                 # where the last call ended: the next call usually goes on from it
        self.sharing_group = None         # the group the update is set up for (_join_update)
        self.update_noise = None          # the noise as the update reads it: shared with the group

    def run(self, start, generations: int, rank: int) -> dict | None:
        """Run `generations` generations with the group from `start`: a state, or the generation number
        of the state this worker holds from its last call (then only a number travels). Rank 0 returns
        the final state, each generation's metrics row and (fitness values, task rows or None) (the other
        ranks hold the same and return None)."""
        state = self._start(start)
        self._join_update(state, rank)
        ranges = worker_ranges(self.strategy.popsize, self.chunk, collective.world_size())
        width = max(b - a for a, b in ranges)
        rows, seen = [], []
        for _ in range(generations):
            pop = self.strategy.ask(state)
            task_state = state.extra.get("task") if self.merge_task_state else None
            t0 = time.perf_counter()
            fitness, task_rows, noise_s, rss = self._gather(pop, task_state, ranges, rank, width)
            t1 = time.perf_counter()
            # The states this call made are this worker's alone; the one it started from is held elsewhere
            # too (the last call's result, or the driver's own in-process pool)
            state, info = advance(self.strategy, state, fitness, self.update_noise, pop, self.merge_task_state,
                                  task_rows, owned=bool(rows))
            # a center that came with the call counts once, on its first row
            shipped = pop.nbytes if not rows and not isinstance(start, int) else 0
            info.update(generation_info(fitness, pop, t1 - t0, time.perf_counter() - t1, noise_s, rss, shipped))
            rows.append(info)
            seen.append((fitness, task_rows))
        self.state = state
        return {"state": to_wire(state), "rows": rows, "seen": seen} if rank == 0 else None

    def _join_update(self, state, rank: int) -> None:
        """What the workers of a group on one machine share in the update. Low rank: the factor rows,
        kept where every worker reads them, so no worker's update draws the rows of the keys the others
        evaluated (RecentFactors). Full rank with a noise table: the noise sum, each worker summing its
        range of the parameters (SplitSums). Collective: every member of a newly joined group gets here
        in the same call."""
        if self.sharing_group == collective.group_id():
            return
        self.sharing_group = collective.group_id()
        noise, memory, num_keys, dim = self.evaluator.noise, None, 0, 0
        world = collective.world_size()
        self.update_noise = update_noise(noise, rank, world)
        if isinstance(noise, LowRankNoise) and world > 1:
            num_keys, dim = self.strategy.ask(state).num_keys, noise.base.dim
            if num_keys * dim * 4 <= RecentFactors.max_bytes:
                memory = collective.shared_buffer(RecentFactors.shared_bytes(num_keys, dim))
        RecentFactors.share(memory, num_keys, dim)

    def _start(self, start):
        if not isinstance(start, int):
            return from_wire(start)
        if self.state is None or self.state.generation != start:
            held = "none" if self.state is None else f"generation {self.state.generation}"
            raise RuntimeError(f"asked to go on from generation {start}, but this worker holds {held}")
        return self.state

    def _gather(self, pop, task_state, ranges, rank: int, width: int):
        """All members' fitness and task rows (None without a task state), plus the workers' summed
        noise time and largest peak memory."""
        a, b = ranges[rank]
        mine = torch.full((width + 3,), float("nan"), dtype=torch.float64)
        mine[width:] = 0.0
        out = None
        if b > a:
            out = self.evaluator.evaluate(pop, a, b, task_state)
            mine[: b - a] = torch.from_numpy(out["fitness"].astype(np.float64))
            mine[width], mine[width + 1] = out["noise_s"], out["peak_rss_mb"]
            if task_state is not None:
                mine[width + 2] = out["task_rows"].shape[1]
        parts = collective.all_gather(mine)
        fitness = np.concatenate([p[: hi - lo].numpy() for p, (lo, hi) in zip(parts, ranges)]).astype(np.float32)
        task_rows = None
        if task_state is not None:
            # a worker with no members does not know the rows' width: it learns it from the first gather
            block = torch.full((width, int(max(p[width + 2] for p in parts))), float("nan"), dtype=torch.float64)
            if out is not None:
                block[: b - a] = torch.from_numpy(out["task_rows"])
            blocks = collective.all_gather(block)
            task_rows = np.concatenate([p[: hi - lo].numpy() for p, (lo, hi) in zip(blocks, ranges)])
        return fitness, task_rows, float(sum(p[width] for p in parts)), float(max(p[width + 1] for p in parts))


class ESWorkerLoop:
    """The driver's side: asks the workers for spans of generations and hands out one row per step.

    A span runs until `limit` (the last step before the driver needs the state: an evaluation, a
    checkpoint, the end) or for about `span_s` seconds, whichever is sooner, so progress lines and
    `run.max_wall_s` stay prompt. The span after it is queued at once (its start is known: where this
    one ends), so the workers go straight on while the driver reads the result, evaluates and
    checkpoints; it is dropped if the driver moves the state instead.
    """

    def __init__(self, pool, strategy, noise, span_s: float, merge_task_state=None):
        self.pool, self.strategy, self.noise, self.span_s = pool, strategy, noise, span_s
        self.merge_task_state = merge_task_state      # as in generation.advance
        self.gang = pool.together()
        self.generation_s = None          # measured wall time per generation of the last span
        self.pending = None               # (queued call, its generations, when queued): the next span
        self.reset(None)

    def reset(self, state) -> None:
        """Continue from `state` (the start, a checkpoint); forgets any generations run or queued ahead."""
        if self.pending is not None:
            self.gang.discard(self.pending[0])
            self.pending = None
        self.base = self.head = state
        self.rows, self.seen, self.taken = [], [], 0
        self.held = False                 # do the workers hold `head`? Not after the driver moved it
        self.last = None                  # when the last span's result arrived

    def current(self):
        """The state after the rows handed out so far (replaying the updates if workers ran further)."""
        if self.taken < len(self.rows):
            state = self.base
            for fitness, task_rows in self.seen[: self.taken]:
                state, _ = advance(self.strategy, state, fitness, self.noise, self.strategy.ask(state),
                                   self.merge_task_state, task_rows)
            self.reset(state)
        return self.head

    def next_row(self, limit: int, next_limit: int = 0) -> dict:
        """The next generation's metrics row, running a new span of at most `limit` generations if needed;
        `next_limit` bounds the span after a span of `limit` generations (0: none follows)."""
        if self.taken == len(self.rows):
            if self.pending is not None and self.pending[1] <= limit:
                (call, n, queued), self.pending = self.pending, None
            else:
                if self.pending is not None:          # longer than the driver now allows: the workers
                    self.gang.discard(self.pending[0])   # will end elsewhere than `head`
                    self.pending, self.held = None, False
                n, queued = self._span(limit), time.perf_counter()
                call = self._submit(n)
            after = limit - n if n < limit else next_limit
            if after > 0:
                m = self._span(after)
                self.pending = (self._submit(m, follows=n), m, time.perf_counter())
            try:
                out = self.gang.collect(call)[0]
            except BaseException:
                self.pending, self.held = None, False     # the pool dropped what was queued behind it
                raise
            # the span's own time: from when it was queued, or when the one before it ended if later
            t0 = max(queued, self.last or queued)
            self.last = time.perf_counter()
            self.generation_s = (self.last - t0) / n
            self.held = True
            self.base, self.head = self.head, from_wire(out["state"])
            self.rows, self.seen, self.taken = out["rows"], out["seen"], 0
        self.taken += 1
        return self.rows[self.taken - 1]

    def _span(self, limit: int) -> int:
        return max(1, min(limit, int(self.span_s / self.generation_s) if self.generation_s else 1))

    def _submit(self, n: int, follows: int = 0):
        """Queue a span of `n` generations from `head`, or (`follows` > 0) from where the span of `follows`
        generations queued just before it will end. Workers that hold their start get its generation
        number only; a group formed anew gets the state itself (for a following span: `head` by then)."""
        workers = getattr(self.pool, "num_workers", 1)
        per_rank = [(n, rank) for rank in range(workers)]
        if follows:
            return self.gang.submit("run", per_rank, shared=(self.head.generation + follows,),
                                    units=n, fresh_shared=lambda: (to_wire(self.head),))
        wire = to_wire(self.head)
        return self.gang.submit("run", per_rank, shared=(self.head.generation if self.held else wire,),
                                units=n, fresh_shared=(wire,))
