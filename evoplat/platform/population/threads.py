"""Torch thread counts for results that must not depend on them.

Reductions and element-wise kernels may split work (and so order floating-point sums, or pick
vectorised vs scalar code for an element) by thread count, so an update runs on a fixed count; work
inside it whose bits no count changes (a table's `embedding_bag` sums) may still use the count its
caller had.
"""
from __future__ import annotations

import contextlib
import threading

import torch

_outside = threading.local()       # .threads: the count around this thread's outermost fixed_threads block


@contextlib.contextmanager
def fixed_threads(n: int = 1):
    """Run a block on `n` torch threads, then restore the caller's count.

    Reductions and element-wise kernels may split work (and so order floating-point sums, or pick
    vectorised vs scalar code for an element) by thread count; on a fixed count the result is the same
    in every process, whatever that process's own setting. The count outside a thread's outermost block
    stays known (`caller_threads`) for work inside it whose bits no count changes.
    """
    before = torch.get_num_threads()
    outermost = getattr(_outside, "threads", None) is None
    if outermost:
        _outside.threads = before
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)
        if outermost:
            _outside.threads = None


def caller_threads() -> int:
    """The torch threads of the code around this thread's outermost `fixed_threads` block (or now): what a
    computation whose bits do not depend on the count may use inside an update."""
    return getattr(_outside, "threads", None) or torch.get_num_threads()
