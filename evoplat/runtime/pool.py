"""A pool of Ray actors, each hosting one core object (a model replica and its data), that runs work
items and survives failures.

Work items go to whichever actor is idle; results come back in item order, so the outcome never
depends on which actor did what. A lost actor (killed, or its node gone) or a task past its timeout is
replaced, and its item re-run on a live actor. Shared arguments are put into the object store once per
call: one copy per node, read zero-copy by every actor there.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError, WorkerCrashedError

try:  # Ray >= 2.x names node loss separately on some versions
    from ray.exceptions import ActorDiedError, NodeDiedError  # type: ignore
    _LOST = (RayActorError, WorkerCrashedError, ActorDiedError, NodeDiedError)
except ImportError:  # pragma: no cover
    _LOST = (RayActorError, WorkerCrashedError)

log = logging.getLogger("evoplat.pool")


class PoolError(RuntimeError):
    pass


@ray.remote
class HostActor:
    """Holds `factory()` and calls its methods. Knows nothing about what it hosts."""

    def __init__(self, factory: Callable[[], Any], num_threads: int):
        import torch
        torch.set_num_threads(max(1, num_threads))
        self.obj = factory()

    def ready(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def call(self, method: str, *args, **kwargs):
        return getattr(self.obj, method)(*args, **kwargs)


@dataclass
class PoolStats:
    retries: int = 0
    timeouts: int = 0
    replaced: int = 0
    item_nodes: list = field(default_factory=list)   # node id that produced each item's result


class WorkerPool:
    def __init__(self, factory: Callable[[], Any], num_workers: int, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float = 0.0, task_timeout_s: float = 600.0, max_task_retries: int = 3,
                 spread: bool = True, placement_group=None):
        self.factory = factory
        self.num_workers = num_workers
        self.cpus, self.gpus = cpus_per_worker, gpus_per_worker
        self.timeout, self.max_retries = task_timeout_s, max_task_retries
        self.spread, self.placement_group = spread, placement_group
        self.stats = PoolStats()
        self.actors: list = []
        self._ready: list = []
        self._nodes: list = []
        for i in range(num_workers):
            self._spawn(i)

    def _options(self, index: int) -> dict:
        opts = dict(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0, max_task_retries=0)
        if self.placement_group is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self.placement_group, placement_group_bundle_index=index % self.num_workers)
        elif self.spread:
            opts["scheduling_strategy"] = "SPREAD"
        return opts

    def _spawn(self, index: int) -> None:
        actor = HostActor.options(**self._options(index)).remote(self.factory, int(max(1, self.cpus)))
        ready = actor.ready.remote()
        if index < len(self.actors):
            self.actors[index], self._ready[index], self._nodes[index] = actor, ready, None
        else:
            self.actors.append(actor), self._ready.append(ready), self._nodes.append(None)

    def _replace(self, index: int) -> None:
        try:
            ray.kill(self.actors[index], no_restart=True)
        except Exception:  # already gone
            pass
        self.stats.replaced += 1
        self._spawn(index)

    def wait_ready(self, timeout: Optional[float] = None) -> list[str]:
        """Block until every actor has built its replica; returns their node ids."""
        nodes = ray.get(self._ready, timeout=timeout or self.timeout)
        self._nodes = list(nodes)
        return nodes

    def run(self, method: str, items: list[tuple], shared: tuple = ()) -> list:
        """Call `method(*shared, *item)` once per item on the pool; results in item order."""
        shared_refs = [ray.put(s) for s in shared]
        results: list = [None] * len(items)
        attempts = [0] * len(items)
        pending = list(range(len(items)))
        inflight: dict = {}            # ref -> (actor index, item index, start time)
        busy: set = set()
        item_nodes: list = [None] * len(items)
        done = 0
        while done < len(items):
            for a in range(len(self.actors)):
                if not pending:
                    break
                if a in busy or not self._is_ready(a):
                    continue
                item = pending.pop(0)
                ref = self.actors[a].call.remote(method, *shared_refs, *items[item])
                inflight[ref] = (a, item, time.monotonic())
                busy.add(a)
            if not inflight:
                self._wait_any_ready()
                continue
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                a, item, _ = inflight.pop(ref)
                busy.discard(a)
                try:
                    results[item] = ray.get(ref)
                    item_nodes[item] = self._nodes[a]
                    done += 1
                except _LOST as err:
                    log.warning("worker %d lost (%s); re-running item %d", a, type(err).__name__, item)
                    self._retry(item, attempts, pending, err)
                    self._replace(a)
                except RayTaskError:
                    raise
            now = time.monotonic()
            for ref, (a, item, t0) in list(inflight.items()):
                if now - t0 > self.timeout:
                    log.warning("worker %d timed out on item %d; replacing it", a, item)
                    inflight.pop(ref)
                    busy.discard(a)
                    self.stats.timeouts += 1
                    self._retry(item, attempts, pending, TimeoutError(f"item {item}"))
                    self._replace(a)
        self.stats.item_nodes = item_nodes
        return results

    def _retry(self, item: int, attempts: list, pending: list, err: Exception) -> None:
        attempts[item] += 1
        self.stats.retries += 1
        if attempts[item] > self.max_retries:
            raise PoolError(f"work item {item} failed {attempts[item]} times; last error: {err}")
        pending.insert(0, item)

    def _is_ready(self, a: int) -> bool:
        if self._nodes[a] is not None:
            return True
        done, _ = ray.wait([self._ready[a]], timeout=0)
        if not done:
            return False
        try:
            self._nodes[a] = ray.get(self._ready[a])
            return True
        except _LOST:
            self._replace(a)
            return False

    def _wait_any_ready(self) -> None:
        t0 = time.monotonic()
        while not any(self._is_ready(a) for a in range(len(self.actors))):
            if time.monotonic() - t0 > self.timeout:
                raise PoolError(f"no worker became ready within {self.timeout:.0f}s "
                                f"(are there enough CPUs/GPUs for {self.num_workers} workers?)")
            time.sleep(0.05)

    def shutdown(self) -> None:
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self.actors = []


class LocalPool:
    """The same interface, in the driver process, without Ray (backend 'local')."""

    def __init__(self, factory: Callable[[], Any], **_ignored):
        self.obj = factory()
        self.stats = PoolStats()

    def wait_ready(self, timeout=None) -> list[str]:
        return ["local"]

    def run(self, method: str, items: list[tuple], shared: tuple = ()) -> list:
        self.stats.item_nodes = ["local"] * len(items)
        return [getattr(self.obj, method)(*shared, *item) for item in items]

    def shutdown(self) -> None:
        pass


def make_pool(factory: Callable[[], Any], runtime_cfg, placement_group=None):
    """The pool a `RuntimeConfig` asks for (connecting to Ray first when needed)."""
    if runtime_cfg.backend == "local":
        return LocalPool(factory)
    from .cluster import connect
    connect(runtime_cfg.address, runtime_cfg.local_num_cpus)
    return WorkerPool(factory, runtime_cfg.num_workers, runtime_cfg.cpus_per_worker,
                      runtime_cfg.gpus_per_worker, runtime_cfg.task_timeout_s, runtime_cfg.max_task_retries,
                      runtime_cfg.spread_nodes, placement_group)
