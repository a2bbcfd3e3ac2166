"""ClipUp (Toklu et al. 2020, "ClipUp: a simple and powerful optimizer for distribution-based policy
evolution"): momentum on the normalized gradient, with the velocity's norm capped.

The step's length no longer depends on the gradient estimate's scale (which for ES follows the fitness
shaping and the population size): `lr` is how far the center moves per generation before momentum
builds up, `max_speed` how far it ever moves. A torch optimizer, so it serves any strategy that takes one.
"""
from __future__ import annotations

import torch


class ClipUp(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9, max_speed: float = 0.0):
        if lr <= 0 or not 0 <= momentum < 1 or max_speed < 0:
            raise ValueError(f"ClipUp needs lr > 0, 0 <= momentum < 1, max_speed >= 0 (got {lr}, {momentum}, "
                             f"{max_speed})")
        # 0: twice the step, the paper's (and EvoTorch's) recommended ratio
        super().__init__(params, dict(lr=lr, momentum=momentum, max_speed=max_speed or 2.0 * lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            # One norm over the whole group: the center is one search point, not independent tensors.
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
            velocities = []
            for p in params:
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p)
                v = state["velocity"].mul_(group["momentum"])
                if norm > 0:
                    v.add_(p.grad, alpha=group["lr"] / float(norm))
                velocities.append(v)
            speed = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in velocities])))
            if speed > group["max_speed"]:
                for v in velocities:
                    v.mul_(group["max_speed"] / speed)
            for p, v in zip(params, velocities):
                p.sub_(v)           # the gradient is a descent direction: minimise
        return None
