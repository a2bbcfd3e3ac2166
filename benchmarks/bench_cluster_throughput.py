"""Population throughput on a real local multi-node Ray cluster: 1 vs 2 worker nodes, one CPU each.

Starts `cluster/local_cluster.sh start 2` (a head with no CPUs plus two 1-CPU worker nodes, private
ports), connects with token auth, and times `pool.run("evaluate", ...)` over a population with 1 worker
and with 2 workers (SPREAD: one per node). Rounds alternate 1, 2, 1, 2, ... so that the load other users
put on a shared machine hits both settings alike; the median round counts. Appends to
benchmarks/results/cluster.md.

    python benchmarks/bench_cluster_throughput.py [--rounds 5] [--generations 3] [--popsize 512]
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "cluster" / "local_cluster.sh"
STATE = Path(f"/tmp/evb-{os.getpid()}")
PORTS = {"EVOPLAT_RAY_PORT": "6392", "EVOPLAT_DASHBOARD_PORT": "8292", "EVOPLAT_PORT_BASE": "26000"}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def build_cfg(args):
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import synthetic_config
    return synthetic_config(
        data={"synthetic_shape": [1, 28, 28], "synthetic_classes": 10, "synthetic_train": 2048},
        model={"name": "mlp", "hidden": [256]},
        runtime={"chunk_size": args.chunk},
        es={"popsize": args.popsize, "batch_size": args.batch})


def time_generations(pool, cfg, generations: int) -> float:
    """Members evaluated per second over `generations` population evaluations (no tell: pure pool)."""
    from evoplat.platform.population.noise import Population
    from evoplat.platform.population.generation import balanced_ranges
    from test_faults_support import es_parts
    _, _, state = es_parts(cfg)
    center = state.center.numpy()
    # the work items an ES generation sends this pool (ESGeneration): about two per worker
    items = balanced_ranges(cfg.es.popsize, cfg.runtime.chunk_size, pool.num_workers)
    t0 = time.perf_counter()
    for g in range(generations):
        pop = Population(center, cfg.es.sigma, cfg.es.popsize, g)
        parts = pool.run("evaluate", items, shared=(pop,))
        assert sum(len(p["fitness"]) for p in parts) == cfg.es.popsize
    dt_s = time.perf_counter() - t0
    return generations * cfg.es.popsize / dt_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--popsize", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--data-root", help="unused (synthetic data); accepted for uniformity")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cluster.md"))
    args = ap.parse_args()

    env = dict(os.environ, EVOPLAT_CLUSTER_DIR=str(STATE), **PORTS,
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    load_before = uptime()
    subprocess.run([str(SCRIPT), "start", "2"], env=env, check=True)
    try:
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(STATE / "auth_token"))
        import ray
        from evoplat.platform.population.evaluator import ESEvaluator
        from evoplat.platform.runtime.pool import WorkerPool
        ray.init(address=f"127.0.0.1:{PORTS['EVOPLAT_RAY_PORT']}", configure_logging=False,
                 log_to_driver=False)
        cfg = build_cfg(args)
        factory = functools.partial(ESEvaluator, cfg, None, "cpu")
        rates = {1: [], 2: []}
        nodes = {}
        for r in range(args.rounds):
            for w in (1, 2):
                # One pool at a time: 2 CPUs in the cluster, and the other setting's workers must be idle.
                pool = WorkerPool(factory, num_workers=w, cpus_per_worker=1)
                try:
                    nodes[w] = sorted(set(pool.wait_ready(timeout=600)))
                    time_generations(pool, cfg, 1)                 # warm-up (first forward pass)
                    rates[w].append(time_generations(pool, cfg, args.generations))
                finally:
                    pool.shutdown()
                    time.sleep(2)   # let the killed actors release their CPU before the next pool
                print(f"round {r}: {w} worker(s): {rates[w][-1]:.0f} members/s", flush=True)
        ray.shutdown()
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env)
        shutil.rmtree(STATE, ignore_errors=True)
    load_after = uptime()
    med = {w: statistics.median(v) for w, v in rates.items()}
    speedup = med[2] / med[1]
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    lines = [
        f"\n## Population throughput, local multi-node cluster ({dt.datetime.utcnow():%Y-%m-%d %H:%M} UTC)",
        f"- machine: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
        "shared with other users",
        f"- command: `{cmd}`",
        "- cluster: `cluster/local_cluster.sh start 2` (head 0 CPU + 2 worker nodes x 1 CPU, token auth)",
        f"- workload: MLP 784-256-10, popsize {args.popsize}, chunk {args.chunk}, batch {args.batch}, "
        f"{args.generations} generations per round, {args.rounds} alternating rounds; work items as an ES "
        "generation splits them (about two per worker)",
        f"- load before: `{load_before}`; after: `{load_after}`",
        f"- worker nodes used: 1 worker -> {len(nodes.get(1, []))} node, 2 workers -> {len(nodes.get(2, []))} nodes",
        "",
        "| workers (nodes) | members/s per round | median |",
        "|---|---|---|",
    ] + [f"| {w} | {', '.join(f'{x:.0f}' for x in rates[w])} | {med[w]:.0f} |" for w in (1, 2)] + [
        "",
        f"**Speedup 2 vs 1 node: {speedup:.2f}x** (target >= 1.8x).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
