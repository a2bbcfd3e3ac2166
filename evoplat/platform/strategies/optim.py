"""Optimizers on an ES gradient estimate: torch's own, driven on a single flat parameter tensor."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.optim.adam import adam as adam_step


class AdamFactory:
    """torch.optim.Adam at a fixed learning rate (fused where this torch has it) for a list of parameters;
    it also continues a flat center's Adam state directly (`step`)."""

    def __init__(self, lr: float):
        self.lr = lr

    def __call__(self, params: list) -> torch.optim.Optimizer:
        try:
            # One fused kernel: half the cost of the per-operation update on a 100k-parameter CPU vector.
            return torch.optim.Adam(params, lr=self.lr, fused=True)
        except (RuntimeError, TypeError):
            return torch.optim.Adam(params, lr=self.lr)

    @staticmethod
    def step(center: torch.Tensor, grad: torch.Tensor, opt_state: dict,
             in_place: bool = False) -> Optional[tuple[torch.Tensor, dict]]:
        """The step torch.optim.Adam takes from `opt_state` (a state dict it wrote), as the same fused kernel
        call on copies (`in_place`: on `center` and `opt_state`'s own tensors), without building an
        optimizer and its state dict: half the update's optimizer time at low rank. None when the state
        is not one that call reproduces exactly."""
        groups = opt_state.get("param_groups", [])
        if len(groups) != 1 or set(opt_state["state"]) != {0}:
            return None
        g = groups[0]
        if not g.get("fused") or g["amsgrad"] or g["capturable"] or g["differentiable"] or g["maximize"]:
            return None
        s = opt_state["state"][0]
        own = (lambda t: t) if in_place else torch.Tensor.clone
        param, step, exp_avg, exp_avg_sq = (own(t) for t in (center, s["step"], s["exp_avg"], s["exp_avg_sq"]))
        args = dict(amsgrad=False, beta1=g["betas"][0], beta2=g["betas"][1], lr=g["lr"],
                    weight_decay=g["weight_decay"], eps=g["eps"], maximize=False)
        kernel = getattr(torch, "_fused_adam_", None)
        if kernel is not None and not g.get("decoupled_weight_decay", False):
            # The kernel torch.optim.adam calls, without its per-call grouping and checks (in a run, half
            # the optimizer's time on a 100k-parameter center): the same bits.
            step.add_(1)
            kernel([param], [grad.to(param.dtype)], [exp_avg], [exp_avg_sq], [], [step], **args)
        else:
            adam_step([param], [grad.to(param.dtype)], [exp_avg], [exp_avg_sq], [], [step], fused=True,
                      has_complex=False, decoupled_weight_decay=g.get("decoupled_weight_decay", False), **args)
        state = {"state": {0: {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}},
                 "param_groups": [dict(g)]}
        return param, state


def make_optimizer(name: str, lr: float, momentum: float = 0.9,
                   max_speed: float = 0.0) -> Callable[[list], torch.optim.Optimizer]:
    if name == "adam":
        return AdamFactory(lr)
    if name == "sgd":
        return lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "clipup":
        from evoplat.platform.strategies.clipup import ClipUp
        return lambda params: ClipUp(params, lr=lr, momentum=momentum, max_speed=max_speed)
    raise ValueError(f"unknown optimizer {name}")


def apply_gradient(make_opt, center: torch.Tensor, grad: torch.Tensor, opt_state: dict,
                   in_place: bool = False) -> tuple[torch.Tensor, dict]:
    """One optimizer step of `center` along `grad` (a descent direction convention); returns copies, or
    (`in_place`, where the optimizer can: Adam's fused step) `center` and `opt_state`'s tensors updated.
    In place saves the copies of the center and both moments: a tenth of a low-rank P-ES update."""
    if opt_state and isinstance(make_opt, AdamFactory):
        done = make_opt.step(center, grad, opt_state, in_place)
        if done is not None:
            return done
    param = torch.nn.Parameter(center.clone())
    opt = make_opt([param])
    if opt_state:
        # load_state_dict keeps the tensors it is given and step() updates them in place: without the
        # copy, the caller's state (an earlier generation's) would move along with the new one.
        opt.load_state_dict({**opt_state, "state": {k: {n: v.clone() if isinstance(v, torch.Tensor) else v
                                                        for n, v in s.items()}
                                                    for k, s in opt_state["state"].items()}})
    param.grad = grad.to(param.dtype)
    opt.step()
    return param.detach(), opt.state_dict()
