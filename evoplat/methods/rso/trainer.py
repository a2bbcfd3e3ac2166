"""The RSO trainer (`algorithm: rso`): sequential sweeps in the driver, or sharded rounds on the pool.

One metrics row per layer-group sweep (FC, then each block with its BN and projection tensors), with
the accepted fraction, the mean training CE of the kept candidates, and test accuracy both as it is
now (`test_acc`) and as the best seen so far (`best_test_acc`, what the authors' code reports).
Checkpoints are taken between group sweeps, so a resumed run continues mid-cycle.
"""
from __future__ import annotations

import functools

from evoplat.methods.rso.search import RSOSearch, SweepStats, train_loss_and_accuracy
from evoplat.methods.rso.shard import MergeGuard, RSOShardHost, apply_changes, merge_stats, shard_ranges
from evoplat.platform.run.trainer import Trainer, register_method
from evoplat.methods.rso.config import RSOConfig
from evoplat.methods.rso.nets import ARCHS


def group_label(group: int, num_blocks: int) -> str:
    return "fc" if group == num_blocks else f"block{group}"


def run_tensor_sharded(pool, search: RSOSearch, guard: MergeGuard, cfg, cycle: int, ti: int,
                       shards: int) -> tuple[SweepStats, int]:
    """All rounds over one tensor; returns the stats and how many merged rounds the guard overruled."""
    spec = search.order[ti]
    param = search.net.get_parameter(spec.name)
    stats, overruled, j, r = SweepStats(), 0, 0, 0
    numel = min(spec.numel, cfg.rso.trials_per_tensor or spec.numel)
    while j < numel:
        ranges = shard_ranges(j, numel, shards, cfg.rso.shard_size)
        base = param.detach().clone()
        results = pool.run("run_shard", items=[(cycle, ti, a, b) for a, b in ranges], shared=(search.params(),))
        if len(ranges) > 1 and cfg.rso.merge_guard:
            _, which = guard.choose(spec.name, base, results, cycle, r)
            overruled += int(which != 0)
        else:
            param.data.copy_(apply_changes(base, results))
        stats.add(merge_stats(results))
        j, r = ranges[-1][1], r + 1
    return stats, overruled


@register_method("rso")
class RSOTrainer(Trainer):
    """One step = one layer-group sweep (FC, then each block with its BN and projection tensors)."""

    config_class = RSOConfig
    unit = "sweep"
    default_eval_every = 10

    @classmethod
    def budget(cls, cfg) -> int:
        groups = len(ARCHS[cfg.model.name][0]) + 1 if cfg.model.name in ARCHS else 1
        return cfg.rso.cycles * groups

    def setup(self) -> None:
        cfg = self.cfg
        self.data, net = self.data_and_model()
        if not hasattr(net, "needed_outputs"):
            raise ValueError(f"rso needs an RSO network (model.name rso_mnist or rso_cifar10), got {cfg.model.name}")
        self.net = net
        self.search = RSOSearch(net, self.data, cfg.rso, cfg.seed)
        self.cycle, self.ti, self.trials_total = 0, 0, 0
        self.workers, self.shards = None, 1
        if cfg.rso.sharded:
            self.workers = self.pool(functools.partial(RSOShardHost, cfg, self.data_root))
            self.shards = cfg.rso.shards or cfg.runtime.num_workers
        self.guard = MergeGuard(self.search)
        self.calib = self.data.x_train[:cfg.rso.eval_bn_images]

    def step(self) -> dict:
        cfg, order = self.cfg, self.search.order
        group = order[self.ti].group
        row = {"cycle": self.cycle, "layer": group_label(group, self.net.num_blocks)}
        stats, overruled = SweepStats(), 0
        while self.ti < len(order) and order[self.ti].group == group:       # one layer group
            if self.workers is None:
                s = self.search.sweep(self.cycle, self.ti, 0, cfg.rso.trials_per_tensor)
            else:
                s, o = run_tensor_sharded(self.workers, self.search, self.guard, cfg, self.cycle, self.ti,
                                          self.shards)
                overruled += o
            stats.add(s)
            row[f"accepted_frac_{order[self.ti].kind}"] = s.accepted / max(1, s.trials)
            self.ti += 1
        if self.ti == len(order):
            self.cycle, self.ti = self.cycle + 1, 0
        self.trials_total += stats.trials
        images = min(cfg.rso.batch_size, len(self.data.x_train))
        row.update(trials=stats.trials, trials_total=self.trials_total,
                   accepted_frac=stats.accepted / max(1, stats.trials),
                   train_loss=stats.loss_sum / max(1, stats.trials * images),
                   guard_full=stats.guard_full, trials_per_s=stats.trials / max(stats.seconds, 1e-9),
                   merges_overruled=overruled, cycles_done=self.cycle)
        return row

    def evaluate(self) -> dict:
        acc, loss = train_loss_and_accuracy(self.net, self.data.x_test, self.data.y_test, self.calib,
                                            self.cfg.run.eval_batch_size)
        return {"test_acc": acc, "test_loss": loss}

    def network(self):
        """The network with the statistics RSO evaluates it with stored in its BN buffers."""
        self.net.calibrate(self.calib)
        return self.net, self.data.input_shape, self.data.num_classes

    @classmethod
    def build_network(cls, cfg, input_shape: tuple, num_outputs: int):
        net = super().build_network(cfg, input_shape, num_outputs)
        net.exported = True
        return net

    def state_dict(self) -> dict:
        return {"params": self.search.params(), "cycle": self.cycle, "tensor_index": self.ti,
                "trials_total": self.trials_total}

    def load_state_dict(self, state: dict) -> None:
        self.search.load_params(state["params"])
        self.cycle, self.ti = int(state["cycle"]), int(state["tensor_index"])
        self.trials_total = int(state["trials_total"])

    def summary(self) -> dict:
        return {"cycles": self.cycle, "trials_total": self.trials_total,
                "num_params": sum(p.numel() for p in self.net.parameters())}
