"""The workers' group (collective.py) between real processes: shared memory on one node, gloo across nodes.

Members are spawned processes that join a real gloo group on 127.0.0.1 (no Ray: collective.py has
none); the node name each member gives decides whether they share a segment.
"""
from __future__ import annotations

import multiprocessing
import os
import time

import pytest
import torch

from conftest import free_port
from evoplat.platform.runtime import shm_gather

pytestmark = pytest.mark.skipif(not shm_gather.usable(), reason="shared-memory gathers need x86 and /dev/shm")


def _member(rank: int, world: int, port: int, node: str | None, exit_after: int, results) -> None:
    from evoplat.platform.runtime import collective
    torch.set_num_threads(1)
    collective.join(rank, world, "127.0.0.1", port, 60.0, node)
    out = {"shared": collective.shared_memory(), "rounds": []}
    for i in range(40):                                 # both slot buffers, many times over
        parts = collective.all_gather(torch.arange(7, dtype=torch.float64) + 100 * rank + i)
        out["rounds"].append([p.tolist() for p in parts])
    big = collective.all_gather(torch.full((400_000,), float(rank)))      # past a slot: through gloo
    out["big"] = [float(p[0]) for p in big] + [float(p[-1]) for p in big]
    memory = collective.shared_buffer(4096)            # every member writes its byte, reads all of them
    if memory is not None:
        memory[rank] = rank + 1
        collective.all_gather(torch.zeros(1))
    out["memory"] = None if memory is None else memory[:world].tolist()
    if exit_after and rank == world - 1:
        os._exit(0)                                     # gone without a word, inside the run
    if exit_after:
        t0 = time.monotonic()
        try:
            collective.all_gather(torch.zeros(3))
            out["after_exit"] = "no error"
        except collective.CollectiveError as err:
            out["after_exit"] = (str(err), time.monotonic() - t0)
    results.put((rank, out))
    collective.leave()


def _run_group(nodes: list[str], exit_after: int = 0) -> dict:
    ctx = multiprocessing.get_context("spawn")
    results, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_member, args=(r, len(nodes), port, n, exit_after, results))
             for r, n in enumerate(nodes)]
    for p in procs:
        p.start()
    expected = len(nodes) - (1 if exit_after else 0)
    got = dict(results.get(timeout=120) for _ in range(expected))
    for p in procs:
        p.join(timeout=60)
    return got


def _segments() -> set:
    return {f for f in os.listdir("/dev/shm") if f.startswith("evoplat-")}


@pytest.mark.parametrize("nodes, shared", [(["a", "a", "a"], True), (["a", "b", "a"], False),
                                           ([None, None], False)])      # no node given: gloo only
def test_members_gather_every_round_in_rank_order(nodes, shared):
    before = _segments()
    got = _run_group(nodes)
    world = len(nodes)
    for rank in range(world):
        assert got[rank]["shared"] is shared
        for i, parts in enumerate(got[rank]["rounds"]):
            assert parts == [[100 * r + i + k for k in range(7)] for r in range(world)]
        assert got[rank]["big"] == [float(r) for r in range(world)] * 2
        assert got[rank]["memory"] == (list(range(1, world + 1)) if shared else None)
    assert _segments() == before                     # the files are gone once every member has them open


@pytest.mark.parametrize("nodes", [["a", "a"], ["a", "b"]])
def test_a_member_that_exits_breaks_the_gather_of_the_others_at_once(nodes):
    got = _run_group(nodes, exit_after=1)
    message, waited = got[0]["after_exit"]
    assert "all-gather failed" in message
    assert waited < 30                               # the lost peer is noticed, not timed out (60 s)
