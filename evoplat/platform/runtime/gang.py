"""Calls that every worker of a pool runs at once, as one group that talks over `collective`.

A gang call is all or nothing: worker r runs `method(*shared, *per_rank[r])` while its peers run theirs,
and they exchange data among themselves (see collective.py). If any member is lost (killed, crashed,
out of memory, its node gone), breaks the group (a peer gone or silent past the timeout), or the whole
call runs past `units * task_timeout_s`, the result cannot be trusted in part: every worker is
replaced, the group formed anew and the same call run again, from the same arguments. The hosted
object's results depend only on those arguments (the pool's determinism contract), so a re-run
returns the same numbers. An exception from the hosted object's own code is not retried: re-raised.
"""
from __future__ import annotations

import logging
import time

import ray
import ray.exceptions as rex

from evoplat.platform.runtime.collective import CollectiveError
from evoplat.platform.runtime.pool import LOST_ERRORS, PoolError

log = logging.getLogger("evoplat.pool")


class GroupBroken(Exception):
    pass


class Gang:
    def __init__(self, pool):
        self.pool = pool
        self.formed = False
        self.stuck = False        # a member raised: its peers may still wait in a collective

    def run(self, method: str, per_rank: list[tuple], shared: tuple = (), units: int = 1,
            fresh_shared: tuple | None = None) -> list:
        """`fresh_shared`, if given, replaces `shared` whenever the group is formed for this call (the
        first call, or after a rebuild): workers that have just started hold nothing from earlier calls."""
        pool = self.pool
        if len(per_rank) != len(pool.actors):
            raise ValueError(f"a gang call needs one argument tuple per worker ({len(pool.actors)}), "
                             f"got {len(per_rank)}")
        refs_of: dict = {}                # fresh group or not -> the shared arguments' refs, put once
        failures = 0
        if self.stuck:
            self.rebuild()
        while True:
            try:
                fresh = fresh_shared is not None and not self.formed
                self._form()
                if fresh not in refs_of:
                    refs_of[fresh] = [ray.put(s) for s in (fresh_shared if fresh else shared)]
                shared_refs = refs_of[fresh]
                refs = [a.call.remote(method, *shared_refs, *args) for a, args in zip(pool.actors, per_rank)]
                return self._collect(refs, units * pool.timeout)
            except GroupBroken as err:
                failures += 1
                pool.stats.retries += 1
                pool.record("group_broken", -1, -1)
                if failures > pool.max_retries:
                    raise PoolError(f"the worker group failed {failures} times; last: {err}") from None
                log.warning("worker group broken (%s); replacing every worker and re-running the call", err)
                self.rebuild()

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
            self._collect([a.join_group.remote(rank, world, host, port, pool.timeout)
                           for rank, a in enumerate(pool.actors)], pool.timeout)
        self.formed = True

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
