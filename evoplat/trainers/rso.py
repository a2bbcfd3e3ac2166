"""The RSO trainer (`algorithm: rso`): sequential sweeps in the driver, or sharded rounds on the pool.

One metrics row per layer-group sweep (FC, then each block with its BN and projection tensors), with
the accepted fraction, the mean training CE of the kept candidates, and test accuracy both as it is
now (`test_acc`) and as the best seen so far (`best_test_acc`, what the authors' code reports).
Checkpoints are taken between group sweeps, so a resumed run continues mid-cycle.
"""
from __future__ import annotations

import functools

from ..core.data import load_dataset
from ..core.models import build_model
from ..core.rso import RSOSearch, SweepStats, train_loss_and_accuracy
from ..core.rso_shard import MergeGuard, RSOShardHost, apply_changes, merge_stats, shard_ranges
from .context import RunContext


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


def train(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    data = load_dataset(cfg.data, ctx.data_root)
    net = build_model(cfg.model, data.input_shape, data.num_classes)
    if not hasattr(net, "needed_outputs"):
        raise ValueError(f"rso needs an RSO network (model.name rso_mnist or rso_cifar10), got {cfg.model.name}")
    search = RSOSearch(net, data, cfg.rso, cfg.seed)
    order, L = search.order, net.num_blocks
    cycle, ti, step, best, trials_total = 0, 0, 0, 0.0, 0
    if ctx.resume_state:
        st = ctx.resume_state
        search.load_params(st["params"])
        cycle, ti, step = int(st["cycle"]), int(st["tensor_index"]), int(st["step"])
        best, trials_total = float(st["best_test_acc"]), int(st["trials_total"])
    pool, shards = None, 1
    if cfg.rso.sharded:
        from ..runtime.pool import make_pool
        pool = make_pool(functools.partial(RSOShardHost, cfg, ctx.data_root), cfg.runtime)
        pool.wait_ready()
        shards = cfg.rso.shards or cfg.runtime.num_workers
    guard = MergeGuard(search)
    calib = data.x_train[:cfg.rso.eval_bn_images]
    last: dict = {}
    try:
        while cycle < cfg.rso.cycles:
            group = order[ti].group
            row = {"phase": "sweep", "cycle": cycle, "layer": group_label(group, L)}
            stats, overruled = SweepStats(), 0
            while ti < len(order) and order[ti].group == group:       # one layer group
                if pool is None:
                    s = search.sweep(cycle, ti, 0, cfg.rso.trials_per_tensor)
                else:
                    s, o = run_tensor_sharded(pool, search, guard, cfg, cycle, ti, shards)
                    overruled += o
                stats.add(s)
                row[f"accepted_frac_{order[ti].kind}"] = s.accepted / max(1, s.trials)
                ti += 1
            if ti == len(order):
                cycle, ti = cycle + 1, 0
            step += 1
            trials_total += stats.trials
            final = cycle == cfg.rso.cycles
            row.update(step=step, trials=stats.trials, trials_total=trials_total,
                       accepted_frac=stats.accepted / max(1, stats.trials),
                       train_loss=stats.loss_sum / max(1, stats.trials * min(cfg.rso.batch_size, len(data.x_train))),
                       guard_full=stats.guard_full, trials_per_s=stats.trials / max(stats.seconds, 1e-9),
                       merges_overruled=overruled)
            if step % cfg.run.eval_every == 0 or final:
                acc, loss = train_loss_and_accuracy(net, data.x_test, data.y_test, calib, cfg.run.eval_batch_size)
                best = max(best, acc)
                row.update(test_acc=acc, test_loss=loss, best_test_acc=best)
                last = row
            ctx.report(dict(row, final=final))
            if step % cfg.run.checkpoint_every == 0 or final:
                ctx.checkpoint(step, {"algorithm": "rso", "params": search.params(), "cycle": cycle,
                                      "tensor_index": ti, "index": 0, "best_test_acc": best,
                                      "trials_total": trials_total})
    finally:
        if pool is not None:
            pool.shutdown()
    return {"cycles": cycle, "test_acc": last.get("test_acc"), "best_test_acc": best,
            "train_loss": last.get("train_loss"), "trials_total": trials_total,
            "num_params": sum(p.numel() for p in net.parameters())}
