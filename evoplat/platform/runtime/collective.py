"""What workers that run a loop together use to talk to each other directly: a gloo process group, and
when every member runs on one node, a shared-memory segment for the all-gathers (shm_gather.py).

No Ray here: a worker joins the group it is told to (rank, world size, rank 0's address and port, its
node) and all-gathers small tensors. Without a group (one worker, or backend 'local') the gather is the
identity, so code written against it runs the same alone. A group on one node can also map buffers that
all its members read and write (`shared_buffer`).

Every failure of the group (a peer gone, a peer silent past the timeout, a port already taken) is
raised as `CollectiveError`, so the runtime can tell "the group broke: rebuild it and run the call
again" from an error in the caller's own code.
"""
from __future__ import annotations

import datetime
import os
import socket
import uuid

import numpy as np
import torch

from evoplat.platform.runtime import shm_gather


class CollectiveError(RuntimeError):
    pass


_segment = None                   # this member's ShmGather when the whole group is on its node
_timeout_s = 0.0
_store = None                     # the group's key-value store (rank 0 hosts it)
_joins = 0                        # groups this process joined: tells a stale shared buffer from a live one
_buffers: list = []               # this member's mappings of the group's shared buffers


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
    global _segment, _timeout_s, _store, _joins
    import torch.distributed as dist
    leave()
    _joins += 1
    try:
        store = dist.TCPStore(host, port, world, rank == 0, timeout=datetime.timedelta(seconds=timeout_s))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
        _segment, _timeout_s, _store = _shared_segment(store, rank, world, node), timeout_s, store
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
    seg = _made_by_rank0(store, "evoplat/shm", rank,
                         lambda path, create: shm_gather.ShmGather(path, rank, world, create))
    if not _everyone(seg is not None and seg.peers_seen()):
        if seg is not None:
            seg.close()
        return None
    return seg


def _made_by_rank0(store, key: str, rank: int, make):
    """What `make(path, create)` returns in this member, for a file under /dev/shm that rank 0 creates
    and the others open (None where it failed). The file is gone once every member has opened it."""
    import torch.distributed as dist
    made = None
    if rank == 0:
        path = f"/dev/shm/evoplat-{uuid.uuid4().hex}"
        try:
            made = make(path, True)
        except OSError:
            path = ""
        store.set(key, path)
    else:
        path = store.get(key).decode()
        try:
            made = make(path, False) if path else None
        except OSError:
            made = None
    try:
        dist.barrier()                # every member has opened it (or given up)
    finally:
        if rank == 0 and path:        # the mappings stay; no file is left behind, whatever happens next
            os.unlink(path)
    return made


def _everyone(ok: bool) -> bool:
    """Is `ok` true in every member?"""
    import torch.distributed as dist
    flag = torch.tensor([int(ok)])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def group_id() -> int:
    """Changes whenever this process joins a group: what it mapped from an earlier group is stale."""
    return _joins


def shared_buffer(nbytes: int) -> np.ndarray | None:
    """`nbytes` zero-filled bytes that every member of the group maps, as a uint8 array; None in every
    member when the group does not gather through shared memory or a member could not map them. A
    collective call: all members make it at the same point with the same size. Valid until the group is
    left (`group_id` changes)."""
    import torch.distributed as dist
    if _segment is None:              # the same in every member (_shared_segment agreed on it)
        return None
    key = f"evoplat/buffer/{len(_buffers)}"   # each group has a store of its own
    _buffers.append(None)             # every member counts every call, made or not
    mapped, agreed = None, False
    try:
        mapped = _made_by_rank0(_store, key, dist.get_rank(),
                                lambda path, create: shm_gather.map_file(path, nbytes, create))
        agreed = _everyone(mapped is not None)
    except Exception as err:          # a peer lost on the way: the group is broken, as in all_gather
        raise CollectiveError(f"shared buffer failed: {str(err).strip().splitlines()[0][:300]}") from None
    finally:
        if mapped is not None and not agreed:
            shm_gather.close_map(mapped)
    if not agreed:
        return None
    _buffers[-1] = mapped
    return np.frombuffer(mapped, dtype=np.uint8)


def leave() -> None:
    global _segment, _store
    import torch.distributed as dist
    if _segment is not None:
        _segment.close()
        _segment = None
    for mapped in _buffers:
        if mapped is not None:
            shm_gather.close_map(mapped)
    _buffers.clear()
    _store = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shared_memory() -> bool:
    """Does this member's group gather through shared memory?"""
    return _segment is not None


def gathers_in_shared_memory(nbytes: int) -> bool:
    """Would an all-gather of `nbytes` per member go through shared memory (not gloo)?"""
    return _segment is not None and _segment.fits(nbytes)


def world_size() -> int:
    import torch.distributed as dist
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather(mine: torch.Tensor) -> list[torch.Tensor]:
    """Every member's tensor (all of the same shape), in rank order."""
    import torch.distributed as dist
    if world_size() == 1:
        return [mine]
    try:
        if gathers_in_shared_memory(mine.numel() * mine.element_size()):
            return _segment.all_gather(mine, _timeout_s)
        parts = [torch.empty_like(mine) for _ in range(world_size())]
        dist.all_gather(parts, mine)
    except Exception as err:  # gloo reports a lost peer or a timeout as several error types
        raise CollectiveError(f"all-gather failed: {str(err).strip().splitlines()[0][:300]}") from None
    return parts
