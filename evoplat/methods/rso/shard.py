"""Sharded RSO: what a worker hosts, and the driver-side merge of a round.

A round covers `shards * shard_size` consecutive scalars of one tensor. Every shard starts from the
round's base weights and runs the sequential trials of its slice (same perturbations, batches and
decisions rule as the sequential sweep, since both are functions of (seed, cycle, tensor, index)).
Changes come back as (flat index, new value) pairs. Across shards this is a Jacobi step (a shard
does not see the others' changes of the same round); within a shard it is the sequential sweep. With
one shard a round is exactly the sequential sweep of that slice.
"""
from __future__ import annotations

from typing import Optional

import torch

from evoplat.platform.data import load_dataset
from evoplat.platform.models import build_model
from evoplat.methods.rso.search import RSOSearch, SweepStats, choose
from evoplat.methods.rso.cache import ce_sums
from evoplat.methods.rso.plan import group_batches


class RSOShardHost:
    """Built inside each worker from a picklable factory: data, a network replica, an RSOSearch."""

    def __init__(self, cfg, data_root: Optional[str] = None, net_factory=None):
        self.data = load_dataset(cfg.data, data_root)
        # The driver sends the full weights every round, so the replica's own init never matters.
        net = net_factory() if net_factory else build_model(cfg.model, self.data.input_shape,
                                                            self.data.num_classes)
        self.search = RSOSearch(net, self.data, cfg.rso, cfg.seed)

    def run_shard(self, params: dict, cycle: int, tensor_index: int, start: int, stop: int) -> dict:
        self.search.load_params(params)
        name = self.search.order[tensor_index].name
        before = self.search.net.get_parameter(name).detach().view(-1)[start:stop].clone()
        stats = self.search.sweep(cycle, tensor_index, start, stop)
        after = self.search.net.get_parameter(name).detach().view(-1)[start:stop]
        changed = (after != before).nonzero().flatten()
        return {"indices": (changed + start).tolist(), "values": after[changed].clone(),
                "trials": stats.trials, "accepted": stats.accepted, "loss_sum": stats.loss_sum,
                "guard_full": stats.guard_full, "seconds": stats.seconds}


def shard_ranges(start: int, numel: int, shards: int, shard_size: int) -> list[tuple[int, int]]:
    """The shards of the round starting at `start`: up to `shards` slices of `shard_size` scalars. When
    fewer than shards x shard_size scalars remain (a BN tensor, a tensor's last round), they are split
    evenly, so no worker idles while another runs the whole remainder."""
    size = max(1, min(shard_size, -(-(numel - start) // shards)))
    out = []
    a = start
    for _ in range(shards):
        if a >= numel:
            break
        out.append((a, min(numel, a + size)))
        a += size
    return out


def apply_changes(base: torch.Tensor, results: list[dict]) -> torch.Tensor:
    merged = base.clone().view(-1)
    for r in results:
        if r["indices"]:
            merged[torch.tensor(r["indices"])] = r["values"]
    return merged.view(base.shape)


class MergeGuard:
    """The driver's check of a merged round: among {merged round, each shard alone, base}, keep the one
    with the lowest loss on a check batch of the group (BN in train mode). The blocks below the swept
    group do not change during its rounds, so their outputs on each check batch are computed once and
    only the group and what lies above it run per option (what a whole-network pass would give)."""

    def __init__(self, search: RSOSearch):
        self.search = search
        self._key: Optional[tuple] = None
        self._below: dict = {}          # check batch index -> outputs of the blocks below the group

    def _inputs(self, group: int, cycle: int, round_index: int):
        search, net = self.search, self.search.net
        batches = group_batches(search.seed + 7919, cycle, group, len(search.data.x_train),
                                search.cfg.batch_size, search.cfg.batches_per_layer)
        b = round_index % len(batches)
        if self._key != (cycle, group):
            self._key, self._below = (cycle, group), {}
        if b not in self._below:
            start = min(group, net.num_blocks)
            outs = net.block_outputs(search.data.x_train[batches[b]], start)
            self._below[b] = {j: outs[j] for j in net.needed_outputs(start)}
        return self._below[b], search.data.y_train[batches[b]]

    def choose(self, name: str, base: torch.Tensor, results: list[dict], cycle: int,
               round_index: int) -> tuple[torch.Tensor, int]:
        """Returns (chosen tensor, which: 0 merged, 1+s shard s, len(results)+1 base), and leaves it
        in the network. Ties prefer the merged round, then single shards, then the base."""
        search, net = self.search, self.search.net
        spec = next(s for s in search.order if s.name == name)
        with torch.no_grad():
            outs, y = self._inputs(spec.group, cycle, round_index)
            options = [apply_changes(base, results)] + [apply_changes(base, [r]) for r in results] + [base]
            param = net.get_parameter(name)
            losses = []
            for opt in options:
                param.data.copy_(opt)
                losses.append(ce_sums(net.head(net.run_blocks(min(spec.group, net.num_blocks), outs)), y, 1)[0])
        which = choose(torch.stack(losses))
        param.data.copy_(options[which])
        return options[which], which


def merge_stats(results: list[dict]) -> SweepStats:
    s = SweepStats()
    for r in results:
        s.trials += r["trials"]
        s.accepted += r["accepted"]
        s.loss_sum += r["loss_sum"]
        s.guard_full += r["guard_full"]
        s.seconds = max(s.seconds, r["seconds"])
    return s
