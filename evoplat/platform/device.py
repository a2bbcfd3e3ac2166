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


def cpu_state(state):
    """`state` with every tensor on the CPU, so a checkpoint from a GPU run loads on a machine without one.

    Containers are copied (keeping their type and attributes, e.g. a state_dict's _metadata) and CPU
    tensors are kept as they are, so a CPU run saves exactly the bytes it saved before.
    """
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        out = copy.copy(state)
        for key, value in state.items():
            out[key] = cpu_state(value)
        return out
    if isinstance(state, list):
        return [cpu_state(v) for v in state]
    if type(state) is tuple:
        return tuple(cpu_state(v) for v in state)
    return state
