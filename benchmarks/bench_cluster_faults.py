"""Faults: a worker actor killed at 10 points spread over an ES run. How many runs end with weights
identical to the undisturbed run's, and what each recovery cost.

Kill point k (k = 0..9) arms generation k, member range k mod (ranges per generation): the worker that
picks that range up is held at the gate, killed with `ray.kill`, and the gate opened. Per run we record
- identical: final center bit-for-bit equal to the undisturbed run's (and every generation's fitness);
- detect_s: from `ray.kill` to the pool seeing the worker lost;
- extra_s: wall time of the disturbed generation minus the median undisturbed generation time (includes
  the detection, re-running the lost range on a live worker, and the gate's own hold time).
With `--fault node` the victim's whole node is removed instead (a `ray.cluster_utils.Cluster`: a head
with no CPUs plus worker nodes of one CPU; a fresh node is added after each point to keep capacity).
Appends to benchmarks/results/cluster.md.

    python benchmarks/bench_cluster_faults.py [--fault actor|node] [--kill-points 10] [--generations 10]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
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


def start_cluster(worker_nodes: int):
    """A private multi-node cluster on this machine; RAY_TMPDIR keeps its address file away from
    other users' `ray.init()`."""
    import tempfile
    import ray
    from ray.cluster_utils import Cluster
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="evbn-", dir="/tmp")
    c = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=0, include_dashboard=False, dashboard_agent_listen_port=None,
        object_store_memory=100 * 1024 * 1024))
    for _ in range(worker_nodes):
        c.add_node(num_cpus=1, object_store_memory=100 * 1024 * 1024)
    ray.init(address=c.address, configure_logging=False, log_to_driver=False)
    return c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kill-points", type=int, default=10)
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fault", choices=["actor", "node"], default="actor")
    ap.add_argument("--data-root", help="unused (synthetic data); accepted for uniformity")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cluster.md"))
    args = ap.parse_args()

    import ray
    from conftest import synthetic_config
    from evoplat.platform.runtime.pool import WorkerPool
    from test_faults_support import (Gate, actor_with_id, gated_factory, run_generations, same_tensor,
                                     wait_for_victim)

    load_before = uptime()
    cluster = None
    if args.fault == "node":
        cluster = start_cluster(args.workers + 1)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        gate = Gate.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            cluster.head_node.node_id, soft=False)).remote()      # never on a node that gets removed
    else:
        ray.init(num_cpus=args.workers + 1, include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
        gate = Gate.remote()
    cfg = synthetic_config(es={"generations": args.generations})
    ranges = -(-cfg.es.popsize // cfg.runtime.chunk_size)
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
                    actor_id, node_id = wait_for_victim(gate)
                    killed_at.append(time.monotonic())
                    if cluster is None:
                        ray.kill(actor_with_id(pool, actor_id), no_restart=True)
                    else:
                        cluster.remove_node(next(n for n in cluster.worker_nodes if n.node_id == node_id))
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
            if cluster is not None:
                cluster.add_node(num_cpus=1, object_store_memory=100 * 1024 * 1024)   # restore capacity
            pool.wait_ready(timeout=600)      # the replacement is up before the next kill point
    finally:
        pool.shutdown()
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
            shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
    load_after = uptime()

    ok = sum(r["identical"] for r in rows)
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    lines = [
        f"\n## Faults: {'worker actor killed' if cluster is None else 'node removed'} at {len(rows)} points ({dt.datetime.utcnow():%Y-%m-%d %H:%M} UTC)",
        f"- machine: {platform.node()}, {os.cpu_count()} cores; shared with other users",
        f"- command: `{cmd}`",
        f"- run: ES on synthetic data, MLP [16], popsize {cfg.es.popsize} in {ranges} ranges of "
        f"{cfg.runtime.chunk_size}, {args.generations} generations, {args.workers} workers ("
        f"{'local Ray' if cluster is None else f'cluster_utils.Cluster, head + {args.workers + 1} one-CPU nodes'})",
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
