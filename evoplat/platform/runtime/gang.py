"""Calls that every worker of a pool runs at once, as one group that talks over `collective`.

A gang call is all or nothing: worker r runs `method(*shared, *per_rank[r])` while its peers run theirs,
and they exchange data among themselves (see collective.py). If any member is lost (killed, crashed,
out of memory, its node gone), breaks the group (a peer gone or silent past the timeout), or the whole
call runs past `units * task_timeout_s`, the result cannot be trusted in part: every worker is
replaced, the group formed anew and the same call run again, from the same arguments. The hosted
object's results depend only on those arguments (the pool's determinism contract), so a re-run
returns the same numbers. An exception from the hosted object's own code is not retried: re-raised.

Calls can be queued ahead (`submit`, then `collect` in order): a worker starts the next call the moment
it ends the current one, instead of waiting for the driver to read the result and send another. A call
submitted to a group that has since been rebuilt is submitted again when it is collected.
"""
from __future__ import annotations

import logging
import time

import ray
import ray.exceptions as rex

from evoplat.platform.runtime.collective import CollectiveError
from evoplat.platform.runtime.pool import LOST_ERRORS, PoolError

log = logging.getLogger("evoplat.pool")
SCALARS = (int, float, str, type(None))


class GroupBroken(Exception):
    pass


class GangCall:
    """One submitted gang call: its arguments (kept for a re-run) and, once sent, its result refs.

    `fresh_shared` may be a function returning the tuple: the state a call starts from is often known
    only once the call before it has been collected, and is only needed if the group is formed anew.
    """

    def __init__(self, method: str, per_rank: list[tuple], shared: tuple, units: int, fresh_shared):
        self.method, self.per_rank, self.shared = method, per_rank, shared
        self.units, self.fresh_shared = units, fresh_shared
        self.refs: list | None = None
        self.epoch = -1                   # the group (see Gang.epoch) it was sent to


class Gang:
    def __init__(self, pool):
        self.pool = pool
        self.formed = False
        self.stuck = False        # a member raised: its peers may still wait in a collective
        self.epoch = 0            # counts group formations: a call sent to an older group is void
        self.sent = 0             # calls sent to the current group
        self.queue: list[GangCall] = []   # submitted, not yet collected, in order

    def submit(self, method: str, per_rank: list[tuple], shared: tuple = (), units: int = 1,
               fresh_shared=None) -> GangCall:
        """Queue `method(*shared, *per_rank[r])` on every worker r (forming the group if needed); `collect`
        returns the results by rank. `fresh_shared`, if given, replaces `shared` when the call is the first
        of a group just formed (the first call, or after a rebuild): workers that have just started hold
        nothing from earlier calls."""
        if len(per_rank) != len(self.pool.actors):
            raise ValueError(f"a gang call needs one argument tuple per worker ({len(self.pool.actors)}), "
                             f"got {len(per_rank)}")
        call = GangCall(method, per_rank, shared, units, fresh_shared)
        self.queue.append(call)
        try:
            self._send_queued()
        except GroupBroken:
            pass                          # collect() rebuilds the group and sends it again
        except BaseException:
            self.queue.clear()
            raise
        return call

    def collect(self, call: GangCall) -> list:
        """The results of `call`, by rank; calls are collected in the order they were submitted."""
        if not self.queue or self.queue[0] is not call:
            raise ValueError("gang calls are collected in the order they were submitted")
        pool, failures = self.pool, 0
        while True:
            try:
                self._send_queued()
                results = self._collect(call.refs, call.units * pool.timeout)
                self.queue.pop(0)
                return results
            except GroupBroken as err:
                failures += 1
                pool.stats.retries += 1
                pool.record("group_broken", -1, -1)
                if failures > pool.max_retries:
                    self.queue.clear()
                    raise PoolError(f"the worker group failed {failures} times; last: {err}") from None
                log.warning("worker group broken (%s); replacing every worker and re-running the call", err)
                self.rebuild()
            except BaseException:
                self.queue.clear()        # the calls queued behind a failed one cannot go on from it
                raise

    def discard(self, call: GangCall) -> None:
        """Drop a queued call: it is never collected or sent again (workers may still run it)."""
        if call in self.queue:
            self.queue.remove(call)

    def _send_queued(self) -> None:
        """Send every queued call the current group has not got, in order: after a rebuild the first of
        them starts the new group (with its `fresh_shared`), the others follow it as before."""
        if self.stuck:
            self.rebuild()
        for call in self.queue:
            if call.refs is not None and call.epoch == self.epoch and self.formed:
                continue
            self._form()
            shared = call.shared
            if call.fresh_shared is not None and self.sent == 0:
                shared = call.fresh_shared() if callable(call.fresh_shared) else call.fresh_shared
            # One object-store entry per shared value, read by every worker; a scalar (the generation a
            # span goes on from) rides inside each task instead: an entry costs the raylet work on
            # every call, about a third of its CPU in a low-rank workers' loop
            refs = [s if isinstance(s, SCALARS) else ray.put(s) for s in shared]
            call.refs = [a.call.remote(call.method, *refs, *args)
                         for a, args in zip(self.pool.actors, call.per_rank)]
            call.epoch = self.epoch
            self.sent += 1

    def rebuild(self) -> None:
        for a in range(len(self.pool.actors)):
            self.pool.replace(a)
        self.formed = self.stuck = False

    def _form(self) -> None:
        """Start every worker and join them into one group (a single worker needs none)."""
        if self.formed:
            return
        pool = self.pool
        pool.wait_ready()
        if not all(node is not None for node in pool.nodes):
            raise PoolError(f"only {sum(n is not None for n in pool.nodes)} of {pool.num_workers} workers "
                            f"started; a worker loop needs all of them")
        world = len(pool.actors)
        if world > 1:
            host, port = self._collect([pool.actors[0].group_address.remote()], pool.timeout)[0]
            self._collect([a.join_group.remote(rank, world, host, port, pool.timeout, pool.shared_memory)
                           for rank, a in enumerate(pool.actors)], pool.timeout)
        self.formed = True
        self.epoch += 1
        self.sent = 0

    def _collect(self, refs: list, timeout_s: float) -> list:
        """Every ref's value in order; the first sign of a broken group raises `GroupBroken`."""
        pool = self.pool
        results, pending = [None] * len(refs), dict((ref, i) for i, ref in enumerate(refs))
        deadline = time.monotonic() + timeout_s
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                pool.stats.timeouts += 1
                raise GroupBroken(f"workers {sorted(pending.values())} not done within {timeout_s:.0f}s")
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=min(left, 1.0))
            for ref in done:
                rank = pending.pop(ref)
                try:
                    results[rank] = ray.get(ref)
                except LOST_ERRORS as err:
                    pool.stats.lost += 1
                    raise GroupBroken(f"worker {rank} lost ({type(err).__name__})") from None
                except rex.RayTaskError as err:
                    if isinstance(err.cause, CollectiveError):
                        raise GroupBroken(f"worker {rank}: {err.cause}") from None
                    self.stuck = True
                    raise err.cause from err
        return results


class LocalGang:
    """The same calls on the one core object in the driver's own process (backend 'local'): nothing runs
    ahead, a call runs when it is collected; the group of one is formed at the first."""

    def __init__(self, obj):
        self.obj, self.formed = obj, False

    def submit(self, method: str, per_rank: list[tuple], shared: tuple = (), units: int = 1,
               fresh_shared=None) -> tuple:
        return method, per_rank, shared, fresh_shared

    def collect(self, call: tuple) -> list:
        method, per_rank, shared, fresh_shared = call
        if fresh_shared is not None and not self.formed:
            shared = fresh_shared() if callable(fresh_shared) else fresh_shared
        self.formed = True
        return [getattr(self.obj, method)(*shared, *per_rank[0])]

    def discard(self, call: tuple) -> None:
        pass
