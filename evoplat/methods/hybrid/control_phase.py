"""The control arm of the hybrid method (`hybrid.phase_kind: backprop`, docs/hybrid.md, "The control arm").

Wherever the schedule runs an ES phase, the control instead runs full-batch gradient descent on
cross-entropy over the same parameter subset and the same validation examples the ES fitness uses,
with the ES phase's compute budget. A hybrid gain that the control matches comes from fitting the
validation split, not from ES.

Like the ES phase it works in eval mode (batch norm keeps the backprop replica's running statistics,
no dropout), caches the `features` outputs when only the classifier moves, and starts fresh at every
phase (a new optimizer, as ES starts a new search at the base). It draws no random numbers, so a run
is a function of its seed. It runs on the driver: a few gradient steps need no worker pool.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from evoplat.methods.hybrid.es_phase import cached_features, mean_fitness, select_parameters, splits_head

# a gradient step = a forward pass plus a backward pass of about twice its cost
PASSES_PER_STEP = 3


def es_forward_passes(hc) -> int:
    """Forward passes of the subset over the validation examples in one ES phase: G generations of
    lambda children, plus the parent re-evaluated each generation by the elitist ES."""
    return hc.es_generations * (hc.es_popsize + (1 if hc.es_kind == "elitist" else 0))


def control_steps(hc) -> int:
    """Gradient steps per control phase: `hybrid.control_steps`, else the ES phase's budget."""
    if hc.control_steps is not None:
        return hc.control_steps
    return max(1, round(es_forward_passes(hc) / PASSES_PER_STEP))


class BackpropPhase:
    """Same interface as `ESPhase`: `run(model, phase, es_state)` moves the subset in place."""

    def __init__(self, cfg, data, model: nn.Module):
        self.cfg, self.hc = cfg, cfg.hybrid
        n = min(self.hc.fitness_examples, len(data.x_val)) if self.hc.fitness_examples else len(data.x_val)
        if n == 0:
            raise ValueError("hybrid control phase needs a validation split: set data.val_size > 0")
        # the ES evaluator's examples: the first n of the validation split, never train or test
        self.x, self.y = data.x_val[:n], data.y_val[:n]
        self.names = select_parameters(model, self.hc.subset, self.hc.last_k)
        self.head_only = splits_head(model, self.hc.subset)
        self.steps = control_steps(self.hc)

    def _fitness(self, logits) -> float:
        """The ES phase's fitness of the current weights, computed as the ES evaluator computes it."""
        return float(mean_fitness(lambda a, b: logits(a, b)[None], self.y, self.hc.fitness,
                                  self.cfg.run.eval_batch_size)[0])

    def run(self, model: nn.Module, phase: int, es_state: dict) -> dict:
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        if self.head_only:
            module, prefix, inputs = model.classifier, "classifier.", cached_features(model, self.x)
        else:
            module, prefix, inputs = model, "", self.x
        params = dict(module.named_parameters())
        local = [name[len(prefix):] for name in self.names]
        weights = {name: params[name].detach().clone().requires_grad_() for name in local}
        # the rest is constant: gradients flow only to the subset
        fixed = {k: v.detach() for k, v in params.items() if k not in weights}
        fixed.update(dict(module.named_buffers()))

        def logits(a: int, b: int) -> torch.Tensor:
            return functional_call(module, {**fixed, **weights}, (inputs[a:b],))

        before = self._fitness(logits)
        opt = torch.optim.SGD(list(weights.values()), lr=self.hc.control_lr, momentum=0.9)
        n, bs = len(self.y), self.cfg.run.eval_batch_size
        t_steps = time.perf_counter()
        for _ in range(self.steps):
            opt.zero_grad(set_to_none=True)
            # the full-batch mean loss, accumulated over eval batches to bound memory
            for a in range(0, n, bs):
                (F.cross_entropy(logits(a, a + bs), self.y[a:a + bs], reduction="sum") / n).backward()
            opt.step()
        steps_s = time.perf_counter() - t_steps
        after = self._fitness(logits)
        with torch.no_grad():
            for name, w in weights.items():
                params[name].copy_(w)
        model.train(was_training)
        es_state["phases"] += 1
        return {"es_fitness_before": before, "es_fitness_after": after, "es_eval_s": steps_s,
                "es_s": time.perf_counter() - t0, "es_dims": sum(w.numel() for w in weights.values()),
                "es_steps": self.steps, "es_budget_passes": es_forward_passes(self.hc), "es_lr": self.hc.control_lr}
