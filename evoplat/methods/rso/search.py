"""Random-search optimisation (RSO, Tripathi & Singh), faithful to the authors' code (docs/rso.md, Specification).

`RSOSearch` owns a network replica and the training data and runs the sequential sweep one scalar at a
time: decay w, draw Delta, evaluate {w, w+Delta, w-Delta} on a fresh batch with BN in train mode, keep
the lowest summed cross-entropy (ties keep w). It is also what a Ray worker hosts in sharded mode
(`RSOShardHost.run_shard`): the same trials on a slice of a tensor, returned as (index, value) pairs.

Evaluation paths (`mode`), all with the decisions of the plain method:
  full   - three forward passes of the whole network (brute force; the reference);
  cached - the authors' way: from the layer's cached inputs, one candidate per pass;
  fast   - the three candidates in one batched pass from the layer, recomputing only the touched
           output channel of the perturbed layer and updating the next layer's pre-BN tensor by a
           one-input-channel conv (cache.py).
The cached paths round differently from the full pass, so a decision whose margin is within
`tie_tol` x batch size is re-decided by the full pass: decisions then equal brute force exactly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from evoplat.platform.data import Dataset
from evoplat.methods.rso.nets import RSONet
from evoplat.methods.rso.cache import GroupCache, ce_sums
from evoplat.methods.rso.plan import anneal_scale, group_batches, perturbations, visiting_order


def choose(losses: torch.Tensor) -> int:
    """argmin with the first index winning ties (np.argmin in the authors' code): ties keep w."""
    best = 0
    for i in range(1, len(losses)):
        if losses[i] < losses[best]:
            best = i
    return best


def is_clear(losses: torch.Tensor, winner: int, tol: float) -> bool:
    """True when the winner beats every other candidate by more than the rounding margin `tol`."""
    return all(float(losses[i] - losses[winner]) > tol for i in range(len(losses)) if i != winner)


@dataclass
class SweepStats:
    trials: int = 0
    accepted: int = 0
    loss_sum: float = 0.0        # summed winning CE over trials (divide by trials * batch)
    guard_full: int = 0          # trials re-decided by the full pass
    seconds: float = 0.0
    decisions: list = field(default_factory=list)   # winner per trial, when recording

    def add(self, other: "SweepStats") -> None:
        self.trials += other.trials
        self.accepted += other.accepted
        self.loss_sum += other.loss_sum
        self.guard_full += other.guard_full
        self.seconds += other.seconds
        self.decisions += other.decisions


class RSOSearch:
    def __init__(self, net: RSONet, data: Dataset, rso_cfg, seed: int, record_decisions: bool = False):
        self.net, self.data, self.cfg, self.seed = net, data, rso_cfg, seed
        for p in net.parameters():
            p.requires_grad_(False)
        self.order = visiting_order(net, rso_cfg.reverse_order, rso_cfg.sample_scale, rso_cfg.bn_sigma)
        self.record = record_decisions
        self._cache_key: Optional[tuple] = None
        self.cache: Optional[GroupCache] = None
        self.batches: list = []

    # -- schedule -------------------------------------------------------------------------------
    def sigma(self, cycle: int, tensor_index: int) -> float:
        return self.order[tensor_index].sigma * anneal_scale(cycle, self.cfg.cycles, self.cfg.anneal_floor)

    def prepare_group(self, cycle: int, group: int) -> None:
        """Draw the group's batches and (fast/cached modes) cache their activations; reused until the
        group or cycle changes. Only valid while the blocks below `group` keep their weights."""
        key = (cycle, group)
        if self._cache_key == key:
            return
        n = len(self.data.x_train)
        self.batches = group_batches(self.seed, cycle, group, n, self.cfg.batch_size, self.cfg.batches_per_layer)
        self.cache = None
        if self.cfg.mode != "full":
            self.cache = GroupCache(self.net, group, [self.data.x_train[i] for i in self.batches],
                                    fast=self.cfg.mode == "fast")
        self._cache_key = key

    def invalidate(self) -> None:
        self._cache_key, self.cache = None, None

    # -- one trial ------------------------------------------------------------------------------
    def full_losses(self, b: int, name: str, j: int, values: torch.Tensor) -> torch.Tensor:
        """Brute force: the whole network, once per candidate value."""
        x, y = self.data.x_train[self.batches[b]], self.data.y_train[self.batches[b]]
        flat = self.net.get_parameter(name).data.view(-1)
        old = flat[j].clone()
        out = []
        for v in values:
            flat[j] = v
            out.append(ce_sums(self.net(x), y, 1)[0])
        flat[j] = old
        return torch.stack(out)

    def trial(self, cycle: int, tensor_index: int, j: int, delta: torch.Tensor, stats: SweepStats) -> None:
        spec = self.order[tensor_index]
        flat = self.net.get_parameter(spec.name).data.view(-1)
        b = (spec.offset + j) % len(self.batches)
        flat[j] = flat[j] * (1.0 - self.cfg.weight_decay)         # the decayed value is the "keep" one
        w0 = flat[j].clone()
        values = torch.stack([w0, w0 + delta, w0 - delta])
        chan = None
        if self.cfg.mode == "full":
            losses = self.full_losses(b, spec.name, j, values)
        else:
            y = self.data.y_train[self.batches[b]]
            if self.cfg.mode == "fast":
                losses, chan = self.cache.candidate_losses(b, spec, j, values, y)
            else:
                losses, chan = self.cache.single_losses(b, spec, j, values, y)
        winner = choose(losses)
        if self.cfg.mode != "full" and not is_clear(losses, winner, self.cfg.tie_tol * len(self.batches[b])):
            losses = self.full_losses(b, spec.name, j, values)
            winner = choose(losses)
            stats.guard_full += 1
        flat[j] = values[winner]
        if self.cache is not None:
            self.cache.accept(b, spec, j, winner, chan)
        stats.trials += 1
        stats.accepted += int(winner != 0)
        stats.loss_sum += float(losses[winner])
        if self.record:
            stats.decisions.append(winner)

    def sweep(self, cycle: int, tensor_index: int, start: int = 0, stop: Optional[int] = None) -> SweepStats:
        """Trials on flat indices [start, stop) of one tensor, in order."""
        spec = self.order[tensor_index]
        stop = spec.numel if stop is None else min(stop, spec.numel)
        t0 = time.perf_counter()
        stats = SweepStats()
        with torch.no_grad():
            self.prepare_group(cycle, spec.group)
            deltas = perturbations(self.seed, cycle, tensor_index, spec.numel, self.sigma(cycle, tensor_index))
            for j in range(start, stop):
                self.trial(cycle, tensor_index, j, deltas[j], stats)
        stats.seconds = time.perf_counter() - t0
        return stats

    # -- weights in and out ---------------------------------------------------------------------
    def params(self) -> dict:
        return {name: p.detach().clone() for name, p in self.net.named_parameters()}

    def load_params(self, params: dict) -> None:
        """Set the weights; cached activations stay valid only for changes inside the current group."""
        group = self._cache_key[1] if self._cache_key else None
        with torch.no_grad():
            for name, p in self.net.named_parameters():
                new = params[name]
                if torch.equal(p, new):
                    continue
                spec = next(s for s in self.order if s.name == name)
                if self.cache is not None and spec.group == group:
                    changed = (p != new).view(p.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
                    for o in changed:
                        self.cache.mark_changed(o)
                elif group is not None and spec.group < group:   # a block the cache was computed from
                    self.invalidate()
                    group = None
                p.copy_(new)


def train_loss_and_accuracy(net: RSONet, x: torch.Tensor, y: torch.Tensor, calib_x: torch.Tensor,
                            batch_size: int = 2000) -> tuple[float, float]:
    """Accuracy and mean CE with BN statistics taken from `calib_x` (the authors reset the moving
    statistics to those of the first 2000 training images before each test)."""
    with torch.no_grad():
        stats: dict = {}
        net(calib_x, stats)
        correct, loss = 0, 0.0
        for i in range(0, len(x), batch_size):
            logits = net(x[i:i + batch_size], stats)
            correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
            loss += float(ce_sums(logits, y[i:i + batch_size], 1)[0])
    return correct / len(x), loss / len(x)
