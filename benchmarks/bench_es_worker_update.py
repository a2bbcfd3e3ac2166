"""Would workers that apply the ES update themselves make Ray free on P-ES? A measured design question.

evoplat's pool ships the population (the 400 KB center) to the workers every generation, and the
driver alone runs the update. The alternative (Salimans et al. 2017, Algorithm 2; OpenAI's ES starter:
seeds out, scalars back) keeps a copy of the strategy state in every worker: the driver sends last
generation's fitness values (1 KB), each worker applies the same update to its copy and evaluates its
members. This script times, on P-ES at low rank r=1 with 2 Ray workers (1 CPU each), in rounds:

- `in-process`: backend local, 2 torch threads, in a fresh process without Ray (the reference);
- `center shipped`: the pool as evoplat runs it;
- `worker update, serial`: the driver updates, then sends the fitness; each worker updates and evaluates;
- `worker update, overlapped`: the driver sends the fitness first and updates while the workers work;
- `worker loop, all-gather`: one call per round; the workers run every generation themselves and trade
  fitness values with a gloo all-gather, no driver in the loop: `runtime.loop: workers`
  (evoplat/platform/population/worker_loop.py; its weights are checked bit for bit against the driver
  loop's by tests/test_worker_loop.py), here with one span for all generations.

The worker updates of the second and third variants are checked against the driver's (CRC-32 of the
center) every generation. (The figures recorded on 2026-12-05 for the fifth variant came from a
prototype of the workers' loop in this script, before it was built into evoplat.)

It also times the evaluation itself (members 0-128 on one thread) in one worker alone and in both at
once, and in-process on 1 and 2 threads: what two cores give two processes.

    python benchmarks/bench_es_worker_update.py --data-root DATA [--generations 150] [--rounds 3]
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, write  # noqa: E402
from _pes import driver_side, pes_config, ray_pool, time_es, time_worker_loop, uptime  # noqa: E402
from bench_es_throughput import time_local_elsewhere  # noqa: E402

ITEMS = [(0, 128), (128, 256)]


class UpdatingEvaluator:
    """A worker that keeps the strategy state and applies each update itself before evaluating."""

    def __init__(self, cfg, data_root: str):
        from evoplat.platform.population.evaluator import ESEvaluator
        from evoplat.platform.strategies import build_strategy
        self.evaluator = ESEvaluator(cfg, data_root, "cpu")
        self.strategy, self.state = build_strategy(cfg.es), None

    def sync(self, state) -> None:
        self.state = state

    def step(self, fitness, start: int, stop: int) -> dict:
        t0 = time.perf_counter()
        if fitness is not None:
            pop = self.strategy.ask(self.state)
            self.state, _ = self.strategy.tell(self.state, fitness, self.evaluator.noise, pop)
        out = self.evaluator.evaluate(self.strategy.ask(self.state), start, stop)
        out["crc"] = zlib.crc32(self.state.center.numpy().tobytes())
        out["busy_s"] = time.perf_counter() - t0
        return out


def time_worker_update(cfg, pool, generations: int, overlapped: bool, warmup: int = 5) -> dict:
    import ray
    strategy, noise, state = driver_side(cfg)
    ray.get([a.call.remote("sync", state) for a in pool.actors])
    send = lambda fit: [a.call.remote("step", fit, *it) for a, it in zip(pool.actors, ITEMS)]  # noqa: E731
    refs, walls, busy = send(None), [], []
    for g in range(generations + warmup):
        t0 = time.perf_counter()
        parts = ray.get(refs)
        crc = zlib.crc32(state.center.numpy().tobytes())
        if any(p["crc"] != crc for p in parts):
            raise SystemExit(f"generation {g}: a worker's update differs from the driver's")
        fitness, pop = np.concatenate([p["fitness"] for p in parts]), strategy.ask(state)
        if overlapped:
            refs = send(fitness)
        state, _ = strategy.tell(state, fitness, noise, pop)
        if not overlapped:
            refs = send(fitness)
        walls.append(time.perf_counter() - t0)
        busy.append(max(p["busy_s"] for p in parts))
    ray.get(refs)
    return {"gen_s": 1 / statistics.mean(walls[warmup:]), "busy_ms": 1e3 * statistics.median(busy[warmup:])}


def eval_ms(evaluate, repeats: int = 60) -> tuple[float, float]:
    """Median wall ms of `evaluate()` and median ms spent inside the evaluator(s) (the slowest one)."""
    walls, inside = [], []
    for _ in range(repeats + 10):
        t0 = time.perf_counter()
        out = evaluate()
        walls.append(time.perf_counter() - t0)
        outs = out if isinstance(out, list) else [out]
        inside.append(max(o["total_s"] if isinstance(o, dict) else 0.0 for o in outs))
    return 1e3 * statistics.median(walls[10:]), 1e3 * statistics.median(inside[10:])


def scaling_rows(cfg, data_root: str, pool) -> list[str]:
    """Evaluation time of the same members: in-process on 1 and 2 threads, one worker alone, both at once."""
    import ray
    from evoplat.platform.population.evaluator import ESEvaluator
    strategy, _, state = driver_side(cfg)
    pop = strategy.ask(state)
    local = ESEvaluator(cfg, data_root, "cpu")
    rows = []
    for threads, (a, b) in ((1, (0, 128)), (1, (0, 256)), (2, (0, 256))):
        torch.set_num_threads(threads)
        wall, inside = eval_ms(lambda: local.evaluate(pop, a, b))
        rows.append(f"| in-process, {threads} thread(s) | {a}-{b} | {wall:.2f} | {inside:.2f} |")
    ref = ray.put(pop)       # put once: what is left is the call, not the population's transfer
    one = lambda: ray.get(pool.actors[0].call.remote("evaluate", ref, 0, 128))  # noqa: E731
    both = lambda: ray.get([w.call.remote("evaluate", ref, *it) for w, it in zip(pool.actors, ITEMS)])  # noqa: E731
    empty = lambda: ray.get(pool.actors[0].call.remote("__sizeof__"))  # noqa: E731  (a call that does nothing)
    for label, members, fn in (("Ray, one worker, a call that does nothing", "none", empty),
                               ("Ray, one worker alone", "0-128", one),
                               ("Ray, two workers at once", "0-128 and 128-256", both)):
        wall, inside = eval_ms(fn)
        rows.append(f"| {label} | {members} | {wall:.2f} | {inside:.2f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", default="/work/shared/data")
    p.add_argument("--generations", type=int, default=150)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    args.chunk, load = 128, uptime()
    import ray
    from evoplat.platform.runtime.pool import WorkerPool
    cfg = pes_config("lowrank", 1, chunk=args.chunk, workers=2, backend="ray")
    # Three pools of 2 workers each (one busy at a time): 6 logical CPUs for Ray on a 2-core machine.
    ray.init(address="local", num_cpus=6, include_dashboard=False, configure_logging=False, log_to_driver=False)
    updating = WorkerPool(functools.partial(UpdatingEvaluator, cfg, args.data_root), 2, cpus_per_worker=1)
    updating.wait_ready(timeout=600)
    loop_cfg = pes_config("lowrank", 1, chunk=args.chunk, workers=2, loop="workers")
    loop_cfg.runtime.loop_span_s = 1e6          # one call for all of a round's generations
    looping = ray_pool(loop_cfg, args.data_root, 2)
    shipping = ray_pool(cfg, args.data_root, 2)
    labels = ["in-process", "center shipped", "worker update, serial", "worker update, overlapped",
              "worker loop, all-gather"]
    runs: dict = {k: [] for k in labels}
    busy: dict = {k: [] for k in labels[2:]}
    for r in range(args.rounds):
        runs["in-process"].append(time_local_elsewhere("lowrank", args)["gen_s"])
        runs["center shipped"].append(time_es(cfg, shipping, args.generations)["gen_s"])
        for label, overlapped in ((labels[2], False), (labels[3], True)):
            out = time_worker_update(cfg, updating, args.generations, overlapped)
            runs[label].append(out["gen_s"])
            busy[label].append(out["busy_ms"])
        out = time_worker_loop(loop_cfg, looping, args.generations, warmup=5, span=args.generations)
        runs["worker loop, all-gather"].append(out["gen_s"])
        busy["worker loop, all-gather"].append(1e3 * (out["eval_s"] + out["tell_s"]))
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in runs.items()), flush=True)
    scaling = scaling_rows(cfg, args.data_root, shipping)
    updating.shutdown(), looping.shutdown(), shipping.shutdown(), ray.shutdown()
    ratio = lambda k: [x / y for x, y in zip(runs[k], runs["in-process"])]  # noqa: E731
    rng = lambda v, f="{:.2f}": f"{f.format(statistics.median(v))} [{f.format(min(v))}-{f.format(max(v))}]"  # noqa: E731
    rows = [f"| {k} | {rng(v)} | {rng(ratio(k)) + 'x' if k != 'in-process' else ''} | "
            f"{rng(busy[k]) if k in busy else ''} |" for k, v in runs.items()]
    lines = [header("ES update in the workers vs the center shipped (P-ES, low rank r=1, 2 Ray workers)"),
             f"- {args.rounds} rounds x {args.generations} generations after 5 warm-up, chunk {args.chunk}; "
             f"each cell the median over rounds [min-max]; every worker's update matched the driver's "
             f"(CRC-32 of the center, every generation); the all-gather loop is runtime.loop workers, one span",
             f"- load before: `{load}`; after: `{uptime()}`",
             "- worker busy per generation: its update and evaluation; in the all-gather loop the median "
             "evaluation (the wait for its peer's fitness values included) plus the median update", "",
             "| how | generations/s | vs in-process (same round) | worker busy per generation (ms) |",
             "|---|---:|---:|---:|", *rows, "",
             "Evaluation of the same members (one generation, median of 60; for Ray the population put "
             "once, so the wall time is the evaluation plus the call):", "",
             "| where | members | wall (ms) | inside the evaluator (ms) |", "|---|---|---:|---:|", *scaling]
    write("es_worker_update", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
