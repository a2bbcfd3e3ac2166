"""Where the driver-side training runs (`run.device`), and state that loads on any machine.

Workers choose their own device from runtime.gpus_per_worker (population/evaluator.py: pick_device);
`run.device` only places what trains in the driver process: the backprop-based trainers.
"""
from __future__ import annotations

import copy

import torch

from evoplat.platform.config import ConfigError


def driver_device(choice: str) -> torch.device:
    """`run.device` as a torch.device: auto is cuda when torch sees a CUDA device, else cpu."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("config error: run.device = 'cuda': torch sees no CUDA device on this machine "
                          "(use auto or cpu)")
    return torch.device("cuda")


def map_leaves(tree, fn):
    """`tree` rebuilt with `fn(leaf)` for every leaf, through dicts (copied, keeping their type and
    attributes, e.g. a state_dict's _metadata), lists and tuples."""
    if isinstance(tree, dict):
        out = copy.copy(tree)
        for key, value in tree.items():
            out[key] = map_leaves(value, fn)
        return out
    if isinstance(tree, list):
        return [map_leaves(v, fn) for v in tree]
    if type(tree) is tuple:
        return tuple(map_leaves(v, fn) for v in tree)
    return fn(tree)


def cpu_state(state):
    """`state` with every tensor on the CPU, so a checkpoint from a GPU run loads on a machine without one.

    CPU tensors are kept as they are, so a CPU run saves exactly the bytes it saved before.
    """
    return map_leaves(state, lambda v: v.cpu() if isinstance(v, torch.Tensor) else v)
