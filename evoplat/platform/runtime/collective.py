"""What workers that run a loop together use to talk to each other directly: a gloo process group, and
when every member runs on one node, a shared-memory segment for the all-gathers (shm_gather.py).

No Ray here: a worker joins the group it is told to (rank, world size, rank 0's address and port, its
node) and all-gathers small tensors. Without a group (one worker, or backend 'local') the gather is the
identity, so code written against it runs the same alone.

Every failure of the group (a peer gone, a peer silent past the timeout, a port already taken) is
raised as `CollectiveError`, so the runtime can tell "the group broke: rebuild it and run the call
again" from an error in the caller's own code.
"""
from __future__ import annotations

import datetime
import os
import socket
import uuid

import torch

from evoplat.platform.runtime import shm_gather


class CollectiveError(RuntimeError):
    pass


_segment = None                   # this member's ShmGather when the whole group is on its node
_timeout_s = 0.0


def group_address() -> tuple[str, int]:
    """This machine's address as Ray knows it and a port free on it now: where rank 0 hosts the group."""
    import ray  # only to learn the node's address; a worker calling this is a Ray actor
    host = ray.util.get_node_ip_address()
    with socket.socket() as s:
        s.bind((host, 0))
        return host, s.getsockname()[1]


def join(rank: int, world: int, host: str, port: int, timeout_s: float, node: str | None = None) -> None:
    """Join (or, for rank 0, host) the group; returns once all `world` members are in. Members that all
    give the same `node` (and can map shared memory) gather through a shared segment."""
    global _segment, _timeout_s
    import torch.distributed as dist
    leave()
    try:
        store = dist.TCPStore(host, port, world, rank == 0, timeout=datetime.timedelta(seconds=timeout_s))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
        _segment, _timeout_s = _shared_segment(store, rank, world, node), timeout_s
    except Exception as err:
        raise CollectiveError(f"rank {rank} could not join the group at {host}:{port}: {err}") from None


def _shared_segment(store, rank: int, world: int, node: str | None):
    """The group's shared segment, or None (members on several nodes, or one that cannot map it). Every
    member comes to the same answer: each publishes what it has, and all agree before using it."""
    import torch.distributed as dist
    mine = f"{node}|{int(shm_gather.usable())}" if node else ""
    store.set(f"evoplat/node/{rank}", mine)
    if not mine.endswith("|1") or any(store.get(f"evoplat/node/{r}").decode() != mine for r in range(world)):
        return None
    seg = None
    if rank == 0:
        path = f"/dev/shm/evoplat-{uuid.uuid4().hex}"
        try:
            seg = shm_gather.ShmGather(path, rank, world, create=True)
        except OSError:
            path = ""
        store.set("evoplat/shm", path)
    else:
        path = store.get("evoplat/shm").decode()
        try:
            seg = shm_gather.ShmGather(path, rank, world, create=False) if path else None
        except OSError:
            seg = None
    try:
        dist.barrier()                # every member has opened it (or given up)
    finally:
        if rank == 0 and path:        # the mappings stay; no file is left behind, whatever happens next
            os.unlink(path)
    ok = torch.tensor([int(seg is not None and seg.peers_seen())])
    dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    if not ok.item():
        if seg is not None:
            seg.close()
        return None
    return seg


def leave() -> None:
    global _segment
    import torch.distributed as dist
    if _segment is not None:
        _segment.close()
        _segment = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shared_memory() -> bool:
    """Does this member's group gather through shared memory?"""
    return _segment is not None


def world_size() -> int:
    import torch.distributed as dist
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather(mine: torch.Tensor) -> list[torch.Tensor]:
    """Every member's tensor (all of the same shape), in rank order."""
    import torch.distributed as dist
    if world_size() == 1:
        return [mine]
    try:
        if _segment is not None and _segment.fits(mine):
            return _segment.all_gather(mine, _timeout_s)
        parts = [torch.empty_like(mine) for _ in range(world_size())]
        dist.all_gather(parts, mine)
    except Exception as err:  # gloo reports a lost peer or a timeout as several error types
        raise CollectiveError(f"all-gather failed: {str(err).strip().splitlines()[0][:300]}") from None
    return parts
