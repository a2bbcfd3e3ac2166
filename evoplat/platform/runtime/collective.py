"""What workers that run a loop together use to talk to each other directly: a gloo process group.

No Ray here: a worker joins the group it is told to (rank, world size, rank 0's address and port) and
all-gathers small tensors. Without a group (one worker, or backend 'local') the gather is the identity,
so code written against it runs the same alone.

Every failure of the group (a peer gone, a peer silent past the timeout, a port already taken) is
raised as `CollectiveError`, so the runtime can tell "the group broke: rebuild it and run the call
again" from an error in the caller's own code.
"""
from __future__ import annotations

import datetime
import socket

import torch


class CollectiveError(RuntimeError):
    pass


def group_address() -> tuple[str, int]:
    """This machine's address as Ray knows it and a port free on it now: where rank 0 hosts the group."""
    import ray  # only to learn the node's address; a worker calling this is a Ray actor
    host = ray.util.get_node_ip_address()
    with socket.socket() as s:
        s.bind((host, 0))
        return host, s.getsockname()[1]


def join(rank: int, world: int, host: str, port: int, timeout_s: float) -> None:
    """Join (or, for rank 0, host) the group; returns once all `world` members are in."""
    import torch.distributed as dist
    leave()
    try:
        store = dist.TCPStore(host, port, world, rank == 0, timeout=datetime.timedelta(seconds=timeout_s))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
    except Exception as err:
        raise CollectiveError(f"rank {rank} could not join the group at {host}:{port}: {err}") from None


def leave() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    import torch.distributed as dist
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather(mine: torch.Tensor) -> list[torch.Tensor]:
    """Every member's tensor (all of the same shape), in rank order."""
    import torch.distributed as dist
    if world_size() == 1:
        return [mine]
    parts = [torch.empty_like(mine) for _ in range(world_size())]
    try:
        dist.all_gather(parts, mine)
    except Exception as err:  # gloo reports a lost peer or a timeout as several error types
        raise CollectiveError(f"all-gather failed: {str(err).strip().splitlines()[0][:300]}") from None
    return parts
