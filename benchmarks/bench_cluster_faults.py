"""Faults: a worker actor killed at 10 points spread over an ES run. How many runs end with weights
identical to the undisturbed run's, and what each recovery cost.

Kill point k (k = 0..9) arms generation k, member range k mod (ranges per generation): the worker that
picks that range up is held at the gate, killed with `ray.kill`, and the gate opened. Per run we record
- identical: final center bit-for-bit equal to the undisturbed run's (and every generation's fitness);
- detect_s: from `ray.kill` to the pool seeing the worker lost;
- extra_s: wall time of the disturbed generation minus the median undisturbed generation time (includes
  the detection, re-running the lost range on a live worker, and the gate's own hold time).
Appends to benchmarks/results/cluster.md.

    python benchmarks/bench_cluster_faults.py [--kill-points 10] [--generations 10]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kill-points", type=int, default=10)
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data-root", help="unused (synthetic data); accepted for uniformity")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cluster.md"))
    args = ap.parse_args()

    import ray
    from conftest import synthetic_config
    from evoplat.runtime.pool import WorkerPool
    from test_faults_support import (Gate, actor_with_id, gated_factory, run_generations, same_tensor,
                                     wait_for_victim)

    load_before = uptime()
    ray.init(num_cpus=args.workers + 1, include_dashboard=False, configure_logging=False, log_to_driver=False)
    cfg = synthetic_config(es={"generations": args.generations})
    ranges = -(-cfg.es.popsize // cfg.runtime.chunk_size)
    gate = Gate.remote()
    pool = WorkerPool(gated_factory(cfg, gate), num_workers=args.workers, cpus_per_worker=1,
                      task_timeout_s=600)
    rows = []
    try:
        pool.wait_ready(timeout=600)
        gen_times: list = []
        marks: list = []

        def mark(g):
            marks.append((g, time.perf_counter()))

        run_generations(cfg, pool, 1)                                   # warm-up
        marks.clear()
        ref_center, ref_fitness = run_generations(cfg, pool, args.generations, on_generation=mark)
        ends = [t for _, t in marks[1:]]
        gen_times = [b - a for (_, a), b in zip(marks, ends)]
        base = statistics.median(gen_times)

        for k in range(args.kill_points):
            g = (k * args.generations) // args.kill_points
            item = k % ranges
            ray.get(gate.arm.remote(g, item * cfg.runtime.chunk_size, "block"))
            killed_at = []

            def inject():
                try:
                    actor_id, _ = wait_for_victim(gate)
                    killed_at.append(time.monotonic())
                    ray.kill(actor_with_id(pool, actor_id), no_restart=True)
                finally:
                    gate.open.remote()

            marks.clear()
            n_events = len(pool.stats.events)
            thread = threading.Thread(target=inject, daemon=True)
            thread.start()
            center, fitness = run_generations(cfg, pool, args.generations, on_generation=mark)
            marks.append((args.generations, time.perf_counter()))
            thread.join()
            ray.get(gate.disarm.remote())
            lost = [t for t, kind, _, _ in pool.stats.events[n_events:] if kind == "lost"]
            times = dict((gg, b - a) for (gg, a), (_, b) in zip(marks, marks[1:]))
            identical = same_tensor(center, ref_center) and all((a == b).all() for a, b in zip(fitness, ref_fitness))
            rows.append(dict(point=k, generation=g, item=item, identical=identical,
                             detect_s=(lost[0] - killed_at[0]) if lost and killed_at else float("nan"),
                             extra_s=times[g] - base))
            print(rows[-1], flush=True)
            pool.wait_ready(timeout=600)      # the replacement is up before the next kill point
    finally:
        pool.shutdown()
        ray.shutdown()
    load_after = uptime()

    ok = sum(r["identical"] for r in rows)
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    lines = [
        f"\n## Faults: worker killed at {len(rows)} points ({dt.datetime.utcnow():%Y-%m-%d %H:%M} UTC)",
        f"- machine: {platform.node()}, {os.cpu_count()} cores; shared with other users",
        f"- command: `{cmd}`",
        f"- run: ES on synthetic data, MLP [16], popsize {cfg.es.popsize} in {ranges} ranges of "
        f"{cfg.runtime.chunk_size}, {args.generations} generations, {args.workers} workers (local Ray)",
        f"- undisturbed generation time (median): {base * 1000:.0f} ms",
        f"- load before: `{load_before}`; after: `{load_after}`",
        "",
        "| kill point | generation | range | identical weights | kill->detected (s) | extra generation time (s) |",
        "|---|---|---|---|---|---|",
    ] + [f"| {r['point']} | {r['generation']} | {r['item']} | {'yes' if r['identical'] else 'NO'} | "
         f"{r['detect_s']:.3f} | {r['extra_s']:.3f} |" for r in rows] + [
        "",
        f"**{ok}/{len(rows)} runs ended with weights identical to the undisturbed run** (target: all). "
        f"Recovery cost: median {statistics.median(r['extra_s'] for r in rows):.3f} s, "
        f"max {max(r['extra_s'] for r in rows):.3f} s extra per disturbed generation.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    with Path(args.out).open("a") as f:
        f.write(text)
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
