"""All-gather through one shared-memory segment, for a group whose members all run on one machine.

Gloo over TCP costs ~1 ms per all-gather between two busy processes on one host, even for a few hundred
bytes (socket wakeups on cores that are evaluating); a worker loop gathers fitness values every
generation. Here each member writes its tensor into its own slot of a mapped file and bumps its
sequence counter; the others wait for the counter and copy the slots out: ~0.01 ms when idle.

Two slot buffers alternate, so a member can write round n+1 while a slower peer still reads round n;
it cannot reach round n+2 before every peer has posted n+1, which they do only after reading n. The
counter is written after the data: x86's store order makes the data visible first, which is why the
group uses this only on x86 (elsewhere, gloo). A waiting member checks that the peers it waits for
still run (their pids), so a killed peer breaks the group at once instead of after the timeout.
"""
from __future__ import annotations

import mmap
import os
import platform
import time

import numpy as np
import torch

HEADER = 64                    # bytes per member: its sequence counter, then its pid
SLOT_BYTES = 1 << 18           # the largest tensor gathered this way: a worker's fitness for 32,766 members


def usable() -> bool:
    """Can this process take part: x86 (see above) and a shared-memory file system?"""
    return platform.machine().lower() in ("x86_64", "amd64") and os.path.isdir("/dev/shm")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def map_file(path: str, size: int, create: bool) -> mmap.mmap:
    """`size` bytes of the file at `path`, mapped shared: made (zero-filled) when `create`, else opened."""
    fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
    try:
        if create:
            # the pages are taken now: a full /dev/shm fails here (the caller then does without), not as
            # a SIGBUS at some later write
            os.posix_fallocate(fd, 0, size)
        return mmap.mmap(fd, size)
    except OSError:
        if create:
            os.unlink(path)
        raise
    finally:
        os.close(fd)


def close_map(m: mmap.mmap) -> None:
    try:
        m.close()
    except BufferError:           # a view still alive somewhere: the mapping goes with the process
        pass


class ShmGather:
    """One member's view of the segment at `path` (rank 0 creates it before the others open it)."""

    def __init__(self, path: str, rank: int, world: int, create: bool):
        self.rank, self.world, self.round = rank, world, 0
        self.map = map_file(path, HEADER * world + 2 * world * SLOT_BYTES, create)
        head = np.frombuffer(self.map, dtype=np.int64, count=HEADER * world // 8).reshape(world, HEADER // 8)
        self.seq, self.pids = head[:, 0], head[:, 1]
        self.slots = np.frombuffer(self.map, dtype=np.uint8, offset=HEADER * world).reshape(2, world, SLOT_BYTES)
        self.pids[rank] = os.getpid()

    def peers_seen(self) -> bool:
        """Has every member written its pid, and does each run where this process can see it?"""
        return all(p > 0 and alive(int(p)) for p in self.pids)

    def fits(self, nbytes: int) -> bool:
        return nbytes <= SLOT_BYTES

    def all_gather(self, mine: torch.Tensor, timeout_s: float) -> list[torch.Tensor]:
        """Every member's `mine`, in rank order; ConnectionError if a peer is gone, TimeoutError if one
        stays silent for `timeout_s` (collective.py reports both as a broken group)."""
        self.round += 1
        n, buf = self.round, self.round % 2
        data = mine.detach().cpu().contiguous().numpy()
        nbytes = data.nbytes
        self.slots[buf, self.rank, :nbytes] = data.reshape(-1).view(np.uint8)
        self.seq[self.rank] = n
        start, checked = time.monotonic(), 0.0
        for r in range(self.world):
            spins = 0
            while self.seq[r] < n:
                spins += 1
                if spins < 2000:
                    continue              # the peer is usually a few microseconds away
                waited = time.monotonic() - start
                if waited - checked > 0.02:
                    checked = waited
                    if not alive(int(self.pids[r])):
                        raise ConnectionError(f"rank {r} (pid {int(self.pids[r])}) is gone")
                    if waited > timeout_s:
                        raise TimeoutError(f"rank {r} silent for {timeout_s:.0f}s")
                if spins < 4000:
                    os.sched_yield()
                else:                     # a peer far behind (a big share, a stuck peer): wake up rarely
                    time.sleep(5e-5 if waited < 0.01 else 1e-3)
        out = self.slots[buf, :, :nbytes].copy()
        return [torch.from_numpy(out[r].view(data.dtype).reshape(data.shape)) for r in range(self.world)]

    def close(self) -> None:
        self.seq = self.pids = self.slots = None
        close_map(self.map)
