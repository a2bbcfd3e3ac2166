"""A pool of Ray actors, each hosting one core object (a model replica and its data), that runs work
items and survives failures.

Work items go to whichever actor is idle; results come back in item order, so the outcome never
depends on which actor did what. Shared arguments are put into the object store once per call: one
copy per node, read zero-copy by every actor there.

`together()` gives the other kind of call: every worker at once, joined in a group that exchanges data
directly, all or nothing, calls queued ahead (gang.py).

Failure handling (see docs/faults.md):
- an actor that dies (killed, crashed, out of memory, its node gone) fails its in-flight item with one
  of the `LOST_ERRORS`; the item goes back to the front of the queue and the actor is replaced;
- an item running longer than `task_timeout_s` counts as hung: its actor is killed (so it can never
  deliver a late result) and replaced, and the item re-queued;
- each item's result is stored once, by item index, from the one attempt still tracked, so an item is
  never lost and never counted twice; a retried item returns the same numbers because the hosted
  object's results depend only on the item (the core's determinism contract);
- an item that fails more than `max_task_retries` times, or a worker that cannot be started that
  often in a row, ends the call with a `PoolError` naming it. An exception raised by the hosted
  object itself (a bug, bad input) is not retried: it is re-raised at once.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import ray
import ray.exceptions as rex

log = logging.getLogger("evoplat.pool")

# Errors meaning "the worker (or what it returned) is gone", not "the work item is bad". Looked up by
# name because the set differs between Ray versions.
LOST_ERRORS: tuple = tuple(getattr(rex, name) for name in (
    "RayActorError",          # ActorDiedError, ActorUnavailableError: killed, crashed, node removed
    "WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError",
    "OutOfMemoryError",       # Ray's memory monitor killed the worker
    "ObjectLostError",        # a result stored on a node that has since died
) if hasattr(rex, name))


class PoolError(RuntimeError):
    pass


@ray.remote
class HostActor:
    """Holds `factory()` and calls its methods. Knows nothing about what it hosts."""

    def __init__(self, factory: Callable[[], Any], num_threads: int, import_paths: tuple = ()):
        import os
        import sys

        import torch
        torch.set_num_threads(max(1, num_threads))
        # User code named by import string ('mypkg.nets:make_net') is found where the driver found it:
        # its working directory, if that folder exists here too (a job's working_dir is on the path anyway).
        for path in import_paths:
            if os.path.isdir(path) and path not in sys.path:
                sys.path.insert(0, path)
        # A factory that raises (bad input: a corrupt dataset file) is reported by `ready()` as its own
        # exception: raised here, Ray would only say that the actor died, and the pool would retry it.
        self.obj, self.error = None, None
        try:
            self.obj = factory()
        except Exception as err:
            self.error = err

    def ready(self) -> str:
        if self.error is not None:
            raise self.error
        return ray.get_runtime_context().get_node_id()

    def call(self, method: str, *args, **kwargs):
        return getattr(self.obj, method)(*args, **kwargs)

    def group_address(self) -> tuple[str, int]:
        from evoplat.platform.runtime import collective
        return collective.group_address()

    def join_group(self, rank: int, world: int, host: str, port: int, timeout_s: float, shared: bool) -> None:
        from evoplat.platform.runtime import collective
        node = ray.get_runtime_context().get_node_id() if shared else None    # no node: gloo only
        collective.join(rank, world, host, port, timeout_s, node)


@dataclass
class PoolStats:
    retries: int = 0          # item attempts re-queued (lost worker or timeout)
    timeouts: int = 0         # items that ran past task_timeout_s
    replaced: int = 0         # actors replaced (lost, hung, or failed to start)
    lost: int = 0             # actors found dead (subset of `replaced`)
    item_nodes: list = field(default_factory=list)   # node id that produced each item's result (last run)
    events: list = field(default_factory=list)       # (monotonic time, kind, worker index, item index)


@dataclass
class _Attempt:
    """One dispatched item: which worker runs it, since when."""
    worker: int
    item: int
    started: float


class WorkerPool:
    def __init__(self, factory: Callable[[], Any], num_workers: int, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float = 0.0, task_timeout_s: float = 600.0, max_task_retries: int = 3,
                 spread: bool = True, placement_group=None, shared_memory: bool = True):
        self.factory = factory
        self.shared_memory = shared_memory  # may a group on one node gather through shared memory?
        self.num_workers = num_workers
        self.cpus, self.gpus = cpus_per_worker, gpus_per_worker
        self.timeout, self.max_retries = task_timeout_s, max_task_retries
        self.spread, self.placement_group = spread, placement_group
        self.stats = PoolStats()
        self.gang = None                  # workers joined into one group (together(), gang.py)
        self.actors: list = []
        self._ready: list = []            # per worker: the ref of its `ready()` call
        self.nodes: list = []             # per worker: node id once ready, else None
        self._start_failures: list = []   # per worker: failed starts in a row
        for i in range(num_workers):
            self._spawn(i)

    # -- workers ----------------------------------------------------------------------------------
    def _options(self, index: int) -> dict:
        # Ray must not restart actors or retry their tasks on its own: the pool re-runs lost items
        # itself, exactly once each, and a Ray-side retry could deliver a second result.
        opts = dict(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0, max_task_retries=0)
        # Inside a placement group (one given, or the one a Ray Tune trial runs in) workers take any
        # bundle with room (-1): the trial's own bundle is already used by the trial process.
        pg = self.placement_group or ray.util.get_current_placement_group()
        if pg is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                pg, placement_group_bundle_index=-1, placement_group_capture_child_tasks=True)
        elif self.spread:
            opts["scheduling_strategy"] = "SPREAD"
        return opts

    def _spawn(self, index: int) -> None:
        actor = HostActor.options(**self._options(index)).remote(self.factory, int(max(1, self.cpus)),
                                                                 (os.getcwd(),))
        ready = actor.ready.remote()
        if index < len(self.actors):
            self.actors[index], self._ready[index], self.nodes[index] = actor, ready, None
        else:
            self.actors.append(actor), self._ready.append(ready), self.nodes.append(None)
            self._start_failures.append(0)

    def replace(self, index: int) -> None:
        # Kill first even if it looks dead: a hung or unreachable actor must never deliver late work.
        try:
            ray.kill(self.actors[index], no_restart=True)
        except Exception:  # already gone
            pass
        self.stats.replaced += 1
        self._spawn(index)

    def _is_ready(self, a: int) -> bool:
        """Has worker `a` built its replica? Replaces it if it died while starting."""
        if self.nodes[a] is not None:
            return True
        done, _ = ray.wait([self._ready[a]], timeout=0)
        if not done:
            return False
        try:
            self.nodes[a] = ray.get(self._ready[a])
            self._start_failures[a] = 0
            return True
        except LOST_ERRORS as err:
            self._start_failures[a] += 1
            if self._start_failures[a] > self.max_retries:
                raise PoolError(f"worker {a} failed to start {self._start_failures[a]} times in a row; "
                                f"last error: {_first_line(err)}") from None
            log.warning("worker %d failed to start (%s); replacing it", a, type(err).__name__)
            self.record("start_failed", a, -1)
            self.replace(a)
            return False
        except rex.RayTaskError as err:
            # the hosted object could not be built: the same input fails on every worker, so no retry
            raise err.cause from err

    def wait_ready(self, timeout: Optional[float] = None) -> list[str]:
        """Block until every actor has built its replica (replacing any that die meanwhile); returns
        their node ids. After `timeout` the pool goes on with the workers that are up, if any."""
        limit = timeout or self.timeout
        t0 = time.monotonic()
        while not all(self._is_ready(a) for a in range(len(self.actors))):
            if time.monotonic() - t0 > limit:
                up = sum(n is not None for n in self.nodes)
                if up == 0:
                    raise PoolError(f"no worker became ready within {limit:.0f}s (are there enough "
                                    f"CPUs/GPUs for {self.num_workers} workers?)")
                log.warning("only %d of %d workers ready after %.0fs; going on with those",
                            up, self.num_workers, limit)
                break
            time.sleep(0.05)
        return [n for n in self.nodes if n is not None]

    def _wait_any_ready(self) -> None:
        t0 = time.monotonic()
        while not any(self._is_ready(a) for a in range(len(self.actors))):
            if time.monotonic() - t0 > self.timeout:
                raise PoolError(f"no worker became ready within {self.timeout:.0f}s "
                                f"(are there enough CPUs/GPUs for {self.num_workers} workers?)")
            time.sleep(0.05)

    # -- work -------------------------------------------------------------------------------------
    def run(self, method: str, items: list[tuple], shared: tuple = ()) -> list:
        """Call `method(*shared, *item)` once per item on the pool; results in item order."""
        shared_refs = [ray.put(s) for s in shared]
        results: list = [None] * len(items)
        have = [False] * len(items)       # result stored: a second result for an item is impossible
        attempts = [0] * len(items)
        pending = list(range(len(items)))
        inflight: dict = {}               # ref -> _Attempt
        busy: set = set()
        item_nodes: list = [None] * len(items)
        while not all(have):
            for a in range(len(self.actors)):
                if not pending:
                    break
                if a in busy or not self._is_ready(a):
                    continue
                item = pending.pop(0)
                ref = self.actors[a].call.remote(method, *shared_refs, *items[item])
                inflight[ref] = _Attempt(a, item, time.monotonic())
                busy.add(a)
            if not inflight:
                self._wait_any_ready()
                continue
            # With items still queued, wake for the first result (an idle worker gets the next item at
            # once); with none queued, wait for all in flight in one call: each wait is a round trip to
            # the core worker, a visible share of a 15 ms generation.
            first, _ = ray.wait(list(inflight), num_returns=1 if pending else len(inflight), timeout=1.0)
            rest = [r for r in inflight if r not in first]
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0) if first and rest and pending else ([], None)
            for ref in first + more:
                att = inflight.pop(ref)
                busy.discard(att.worker)
                try:
                    value = ray.get(ref)
                except LOST_ERRORS as err:
                    log.warning("worker %d lost (%s); re-running item %d", att.worker, type(err).__name__,
                                att.item)
                    self.stats.lost += 1
                    self.record("lost", att.worker, att.item)
                    self._retry(att.item, attempts, pending, err)
                    self.replace(att.worker)
                    continue
                assert not have[att.item], f"item {att.item} completed twice"
                results[att.item], have[att.item] = value, True
                item_nodes[att.item] = self.nodes[att.worker]
            self._time_out_hung(inflight, busy, attempts, pending)
        self.stats.item_nodes = item_nodes
        return results

    def together(self):
        """The workers as one group (gang.py): `submit` calls that every worker runs at once, exchanging
        data directly, `collect` their results in order."""
        if self.gang is None:
            from evoplat.platform.runtime.gang import Gang
            self.gang = Gang(self)
        return self.gang

    def _time_out_hung(self, inflight: dict, busy: set, attempts: list, pending: list) -> None:
        now = time.monotonic()
        for ref, att in list(inflight.items()):
            if now - att.started > self.timeout:
                log.warning("worker %d timed out on item %d after %.0fs; replacing it", att.worker, att.item,
                            now - att.started)
                inflight.pop(ref)         # its late result, if any, is never read
                busy.discard(att.worker)
                self.stats.timeouts += 1
                self.record("timeout", att.worker, att.item)
                self._retry(att.item, attempts, pending, TimeoutError(f"item {att.item} > {self.timeout}s"))
                self.replace(att.worker)

    def _retry(self, item: int, attempts: list, pending: list, err: Exception) -> None:
        attempts[item] += 1
        self.stats.retries += 1
        if attempts[item] > self.max_retries:
            raise PoolError(f"work item {item} failed {attempts[item]} times; last error: {_first_line(err)}")
        pending.insert(0, item)

    def record(self, kind: str, worker: int, item: int) -> None:
        self.stats.events.append((time.monotonic(), kind, worker, item))

    def shutdown(self) -> None:
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self.actors = []


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


class LocalPool:
    """The same interface, in the driver process, without Ray (backend 'local')."""

    def __init__(self, factory: Callable[[], Any], **_ignored):
        self.obj = factory()
        self.stats = PoolStats()
        self.gang = None

    def wait_ready(self, timeout=None) -> list[str]:
        return ["local"]

    def run(self, method: str, items: list[tuple], shared: tuple = ()) -> list:
        self.stats.item_nodes = ["local"] * len(items)
        return [getattr(self.obj, method)(*shared, *item) for item in items]

    def together(self):
        """A group of one (gang.py's LocalGang): each call runs when collected."""
        if self.gang is None:
            from evoplat.platform.runtime.gang import LocalGang
            self.gang = LocalGang(self.obj)
        return self.gang

    def shutdown(self) -> None:
        pass


def make_pool(factory: Callable[[], Any], runtime_cfg, placement_group=None):
    """The pool a `RuntimeConfig` asks for (connecting to Ray first when needed)."""
    if runtime_cfg.backend == "local":
        return LocalPool(factory)
    from evoplat.platform.runtime.cluster import check_resources, connect
    # a placement group (Tune's trial) has reserved the pool's bundles already
    workers = runtime_cfg.num_workers if placement_group is None else 1
    started = connect(runtime_cfg.address, runtime_cfg.local_num_cpus, workers * runtime_cfg.cpus_per_worker)
    check_resources(runtime_cfg.cpus_per_worker, runtime_cfg.gpus_per_worker, workers, started)
    return WorkerPool(factory, runtime_cfg.num_workers, runtime_cfg.cpus_per_worker,
                      runtime_cfg.gpus_per_worker, runtime_cfg.task_timeout_s, runtime_cfg.max_task_retries,
                      runtime_cfg.spread_nodes, placement_group, runtime_cfg.shared_memory)
