"""What Ray costs when nothing is called: two Ray actors against two plain processes, the same work.

Each side runs one single-threaded fp32 GEMM loop per process (P-ES's first-layer shape, [256 x 784] @
[784 x 128]) for --seconds, with no call or transfer while it runs; each round starts a fresh local Ray
instance (as `evoplat run` does) and spawns fresh plain processes, the two sides in turns. What Ray's
own processes (raylet, GCS, dashboard agent, log monitor, ...) take meanwhile is read from /proc. This
is the ceiling for "2 Ray workers against the in-process run" on a machine with as many cores as
workers: whatever Ray's own processes take comes out of the workers' share.
Writes benchmarks/results/ray_floor.md.

    python benchmarks/bench_ray_floor.py [--rounds 5] [--seconds 20]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, median_range, write  # noqa: E402
from _pes import uptime  # noqa: E402


def gemm_loop(seconds: float) -> int:
    import torch
    torch.set_num_threads(1)
    x, w = torch.randn(256, 784), torch.randn(784, 128)
    t = time.monotonic()
    while time.monotonic() - t < 1.0:          # warm-up
        x @ w
    n, t = 0, time.monotonic()
    while time.monotonic() - t < seconds:
        x @ w
        n += 1
    return n


def _plain_child(seconds: float, queue) -> None:
    queue.put(gemm_loop(seconds))


def plain(seconds: float) -> int:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_plain_child, args=(seconds, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    total = sum(queue.get() for _ in procs)
    for p in procs:
        p.join()
    return total


class GemmActor:
    def run(self, seconds: float) -> int:
        return gemm_loop(seconds)


def cpu_ticks() -> dict:
    """pid -> user + system clock ticks of every process."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            out[int(pid)] = sum(map(int, Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))
        except OSError:
            pass
    return out


def on_ray(seconds: float) -> tuple[int, float]:
    """GEMMs done by two actors, and the share of one core that the processes Ray started and this driver
    took meanwhile (the actors' own two excepted)."""
    import ray
    existing = set(cpu_ticks()) - {os.getpid()}          # this driver's waiting counts as Ray's
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        actors = [ray.remote(num_cpus=1)(GemmActor).remote() for _ in range(2)]
        ray.get([a.run.remote(0.1) for a in actors])            # started and warm
        before, t0 = cpu_ticks(), time.monotonic()
        total = sum(ray.get([a.run.remote(seconds) for a in actors]))
        after, dt = cpu_ticks(), time.monotonic() - t0
    finally:
        ray.shutdown()
    used = sorted((after[p] - before[p] for p in after if p in before and p not in existing), reverse=True)
    return total, sum(used[2:]) / os.sysconf("SC_CLK_TCK") / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    load = uptime()
    rows = []
    for r in range(args.rounds):
        p = plain(args.seconds)
        q, own = on_ray(args.seconds)
        rows.append((p, q, own))
        print(f"round {r + 1}: plain {p}, Ray {q} ({q / p:.3f}x), Ray's own processes {100 * own:.1f}% of a core",
              flush=True)
    lines = [header("What Ray costs when nothing is called: 2 actors against 2 plain processes"),
             f"- load before: `{load}`",
             f"- {args.rounds} rounds of {args.seconds:g} s a side, sides in turns; each process one thread of "
             f"[256 x 784] @ [784 x 128] fp32 GEMMs; a fresh local Ray instance per round "
             f"(`include_dashboard=False`)", "",
             "| round | GEMMs, 2 plain processes | GEMMs, 2 Ray actors | Ray / plain | Ray's own processes (% of a core) |",
             "|---:|---:|---:|---:|---:|"]
    for i, (p, q, own) in enumerate(rows, 1):
        lines.append(f"| {i} | {p:,} | {q:,} | {q / p:.3f}x | {100 * own:.1f} |")
    ratio = [q / p for p, q, _ in rows]
    lines += ["", f"Median Ray / plain **{statistics.median(ratio):.3f}x** [{min(ratio):.3f}-{max(ratio):.3f}]; "
              f"Ray's own processes {median_range((100 * o for _, _, o in rows), '{:.1f}')}% of one core."]
    write("ray_floor", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
