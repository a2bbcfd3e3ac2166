"""ES throughput on problem P-ES (MNIST, MLP 784-128-10, popsize 256, minibatch 256 per generation).

Sections (each writes its own results file):
  pes    generations/s of OpenAI-ES, full rank and low rank (r=1): in-process (backend local, 2 torch
         threads), on 1 and 2 Ray workers (1 CPU each) driven by the driver, and on 2 workers that run
         the loop themselves (runtime.loop: workers); median tell_s and eval_s; fp32 GEMM peak. Low rank
         also on one core each way (in-process on 1 thread, the workers' loop on 1 worker): what Ray
         itself costs a process, apart from splitting the population.
         -> results/es_throughput.md
  nodes  generations/s with 1, 2, 4 worker nodes of cluster/local_cluster.sh (1 CPU each, one worker per
         node; private ports and state dir, stopped at the end) -> results/es_cluster_nodes.md
  scale  low rank r=1, 2 Ray workers: seconds per generation and each worker's peak RSS for popsize 256
         to 65,536 (a fresh pool per popsize, so the peak belongs to it) -> results/es_popscale.md
  overhead  the pool's round trip per generation with workers that do nothing: a P-ES population out,
         fitness back, on 2 Ray workers -> results/es_pool_overhead.md
  gather the workers' loop (2 Ray workers) with its all-gathers through shared memory vs gloo, pools
         alternating -> results/es_gather.md
  paired low rank r=1 (or full rank: --perturbation full): the workers' loop (2 Ray workers, spans of 10)
         against the in-process run on 2 threads (one chunk of 256, and --chunk), all three kept running
         and timed in turns, so each ratio compares timings seconds apart, not minutes as in `pes`
         -> results/es_paired.md (full rank: results/es_paired_full.md)

    python benchmarks/bench_es_throughput.py --data-root /work/shared/data --section pes [--generations 20] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, median_range, write  # noqa: E402
from _pes import (LocalRunner, arithmetic_bound, gemm_gflops, lowrank_macs, on_ray, pes_config,  # noqa: E402
                  ray_pool, time_es, time_worker_loop, uptime)

REPO = Path(__file__).resolve().parents[1]
# runtime.loop workers, spans of at most N generations: 10 is ES's default eval_every and checkpoint_every
# (the driver needs the state that often), 25 the cadence of experiments/es_mnist_lowrank.yaml
WORKER_LOOPS = {"ray, 2 workers, worker loop, spans of 10": 10, "ray, 2 workers, worker loop, spans of 25": 25}
# one core each way, low rank only: the in-process run on 1 thread against the workers' loop on 1 worker
ONE_CORE = ("local, 1 thread", "ray, 1 worker, worker loop, spans of 10")
PORTS = {"EVOPLAT_RAY_PORT": "6394", "EVOPLAT_DASHBOARD_PORT": "8294", "EVOPLAT_PORT_BASE": "27000"}


def time_local_elsewhere(kind: str, args, chunk: int = 0, threads: int = 2) -> dict:
    """The in-process run (`runtime.backend: local`) in a fresh process without Ray, as a user runs it:
    the benchmark's own process is a Ray driver, whose background threads share its cores."""
    runner = LocalRunner(kind, chunk or args.chunk, args.data_root, threads)
    try:
        return runner.time(args.generations)
    finally:
        runner.close()


# In-process, the whole population as one chunk on 2 threads is faster than two chunks here: the Ray
# settings are held against the faster of the two in-process runs of the same round.
LOCAL = ("local, 2 threads", "local, 2 threads, one chunk of 256")


def section_pes(args) -> None:
    """Every setting once per round, rounds one after another: the host's speed drifts by up to half
    within minutes here, so each setting is reported as the median over rounds with its range, beside
    the GEMM peak measured in the same rounds."""
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    settings = [(kind, where) for kind in ("full", "lowrank")
                for where in (*LOCAL, "ray, 1 worker", "ray, 2 workers", *WORKER_LOOPS)]
    settings += [("lowrank", where) for where in ONE_CORE]
    runs = {s: [] for s in settings}
    peaks = {1: [], 2: []}
    for rnd in range(args.rounds):
        for t in (1, 2):
            peaks[t].append(gemm_gflops(t))
        for kind, where in settings:
            workers = 2 if "2 workers" in where else 1
            if where.startswith("local"):
                threads = 1 if where == ONE_CORE[0] else 2
                r = time_local_elsewhere(kind, args, 256 if where == LOCAL[1] else 0, threads)
            else:
                loop = "workers" if "worker loop" in where else "driver"
                cfg = pes_config(kind, 1, chunk=args.chunk, workers=workers, loop=loop)
                r = on_ray(cfg, args.data_root, workers, time_worker_loop, generations=args.generations,
                           span=WORKER_LOOPS.get(where, 10)) if loop == "workers" else \
                    on_ray(cfg, args.data_root, workers, time_es, generations=args.generations)
            runs[(kind, where)].append(r)
            print(rnd, kind, where, {k: round(v, 4) for k, v in r.items()}, flush=True)
    ray.shutdown()
    med = statistics.median
    lines = [header("ES throughput on P-ES (MNIST, MLP 784-128-10, popsize 256, minibatch 256)"),
             f"- OpenAI-ES, table noise, chunk {args.chunk}; {args.rounds} rounds, each timing every setting "
             f"for {args.generations} generations after 3 warm-up; a generation = ask + evaluate on the pool + "
             "tell (the driver's update, on one thread); the in-process runs in a fresh process without Ray; "
             "`worker loop`: runtime.loop workers, the workers run spans of at most 10 generations (ES's default "
             "eval_every and checkpoint_every) or 25 (es_mnist_lowrank.yaml's) and all-gather fitness values; "
             "eval_s includes that gather. "
             "Each cell: the median over rounds [min-max].",
             f"- fp32 GEMM peak (2048^3, measured at the start of each round): {med(peaks[1]):.0f} "
             f"[{min(peaks[1]):.0f}-{max(peaks[1]):.0f}] GFLOP/s on 1 thread, {med(peaks[2]):.0f} "
             f"[{min(peaks[2]):.0f}-{max(peaks[2]):.0f}] on 2",
             f"- load: `{args.load}`", "",
             "| perturbation | where | generations/s | ms/generation | median eval_s (ms) | median tell_s (ms) | "
             "tell share | worker peak RSS (MB) |", "|---|---|---:|---:|---:|---:|---:|---:|"]

    for kind, where in settings:
        rs = runs[(kind, where)]
        name = kind if kind == "full" else "lowrank r=1"
        lines.append(f"| {name} | {where} | {median_range([r['gen_s'] for r in rs])} | "
                     f"{1e3 * med(r['s_gen'] for r in rs):.1f} | {1e3 * med(r['eval_s'] for r in rs):.1f} | "
                     f"{1e3 * med(r['tell_s'] for r in rs):.2f} | "
                     f"{median_range([100 * r['tell_s'] / r['s_gen'] for r in rs], '{:.1f}')}% | "
                     f"{max(r['rss_mb'] for r in rs):.0f} |")
    for kind in ("full", "lowrank"):
        for where in ("ray, 2 workers", *WORKER_LOOPS):
            best = [max(a["gen_s"], b["gen_s"]) for a, b in zip(*(runs[(kind, w)] for w in LOCAL))]
            ratios = [two["gen_s"] / loc for loc, two in zip(best, runs[(kind, where)])]
            same = [two["gen_s"] / loc["gen_s"] for loc, two in zip(runs[(kind, LOCAL[0])], runs[(kind, where)])]
            name = kind if kind == "full" else "lowrank r=1"
            lines.append(f"\n{name}: `{where}` / the faster in-process run on 2 threads, round by round: "
                         f"{', '.join(f'{x:.2f}x' for x in ratios)} (median **{med(ratios):.2f}x**); "
                         f"/ the in-process run at the same chunk size: {', '.join(f'{x:.2f}x' for x in same)} "
                         f"(median {med(same):.2f}x)")
    one = [w["gen_s"] / loc["gen_s"] for loc, w in zip(*(runs[("lowrank", w)] for w in ONE_CORE))]
    lines.append(f"\nlowrank r=1, one core each way: `{ONE_CORE[1]}` / `{ONE_CORE[0]}`, round by round: "
                 f"{', '.join(f'{x:.2f}x' for x in one)} (median **{med(one):.2f}x**): what a Ray worker "
                 "process costs, apart from splitting the population between two")
    evaluation, update = lowrank_macs([(128, 784), (10, 128)])
    lines.append(f"\nlowrank r=1, arithmetic: the update's multiply-adds are {update / 1e6:.1f} M of "
                 f"{(evaluation + update) / 1e6:.1f} M per generation ({100 * update / (evaluation + update):.1f}%), "
                 "counted from the layer shapes as the structured forward and the update compute them: the "
                 "tell share if both ran at the same arithmetic rate")
    best_full = max(med([r["gen_s"] for r in runs[s]]) for s in settings if s[0] == "full")
    lines += ["", arithmetic_bound(best_full, med(peaks[2])) + " (The peak: the median of the 2-thread ones.)"]
    write("es_throughput", "\n".join(lines) + "\n")


def section_nodes(args) -> None:
    state = Path(f"/tmp/evt-{os.getpid()}")
    script = REPO / "cluster" / "local_cluster.sh"
    # One token for every cluster this run starts, set before Ray is imported (Ray reads it once).
    token = Path(f"/tmp/evt-token-{os.getpid()}")
    token.touch(mode=0o600)
    token.write_text(secrets.token_hex(32) + "\n")
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    os.environ.pop("RAY_AUTH_TOKEN", None)
    env = dict(os.environ, EVOPLAT_CLUSTER_DIR=str(state), EVOPLAT_WORKER_CPUS="1", EVOPLAT_HEAD_CPUS="0", **PORTS,
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    rows = []
    import ray
    for nodes in args.nodes:
        subprocess.run([str(script), "start", str(nodes)], env=env, check=True, timeout=600)
        try:
            ray.init(address=f"127.0.0.1:{PORTS['EVOPLAT_RAY_PORT']}", configure_logging=False, log_to_driver=False)
            for kind in ("full", "lowrank"):
                for loop in ("driver", "workers"):
                    cfg = pes_config(kind, 1, chunk=args.chunk, workers=nodes, loop=loop)
                    pool = ray_pool(cfg, args.data_root, nodes)
                    try:
                        used = len(set(pool.wait_ready(timeout=600)))
                        r = (time_worker_loop if loop == "workers" else time_es)(cfg, pool, args.generations)
                    finally:
                        pool.shutdown()
                    rows.append((nodes, used, kind, loop, r))
                print(rows[-1], flush=True)
            ray.shutdown()
        finally:
            subprocess.run([str(script), "stop"], env=env, timeout=120)
            shutil.rmtree(state, ignore_errors=True)
    token.unlink()
    lines = [header("ES on P-ES across worker nodes of a local Ray cluster"),
             f"- `cluster/local_cluster.sh start N`: a head with 0 CPUs and N worker nodes with 1 CPU each, one ES "
             f"worker per node (SPREAD); chunk {args.chunk}, {args.generations} timed generations after 3 warm-up",
             f"- this machine has {os.cpu_count()} cores: beyond 2 nodes the nodes share them, so 4 nodes measure "
             "overhead, not added compute; a generation has ceil(256 / chunk) work items at most, so with more "
             "nodes than that the extra nodes idle", f"- load: `{args.load}`", "",
             "- loop `driver`: the pool, a call per generation; `workers`: runtime.loop workers, spans of at most "
             "10 generations, fitness all-gathered over a gloo group between the nodes' workers", "",
             "| worker nodes | nodes used | perturbation | loop | generations/s | median eval_s (ms) | "
             "median tell_s (ms) |", "|---:|---:|---|---|---:|---:|---:|"]
    lines += [f"| {n} | {u} | {k} | {lp} | {r['gen_s']:.2f} | {1e3 * r['eval_s']:.1f} | {1e3 * r['tell_s']:.2f} |"
              for n, u, k, lp, r in rows]
    write("es_cluster_nodes", "\n".join(lines) + "\n")


def section_scale(args) -> None:
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    rows = []
    for popsize in args.popsizes:
        cfg = pes_config("lowrank", 1, popsize=popsize, chunk=args.scale_chunk, workers=2)
        r = on_ray(cfg, args.data_root, 2, time_es, generations=args.scale_generations, warmup=1)
        rows.append((popsize, r))
        print(rows[-1], flush=True)
    ray.shutdown()
    lines = [header("Population scale: low rank r=1 on P-ES, 2 Ray workers"),
             f"- popsize 256 to {max(args.popsizes):,}, chunk {args.scale_chunk}, {args.scale_generations} timed "
             "generations after 1 warm-up, a fresh pool per popsize; RSS = peak resident memory of a worker "
             "process (dataset and model replica included)", f"- load: `{args.load}`", "",
             "| popsize | s/generation | us per member | median tell_s (s) | worker peak RSS (MB) |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {p:,} | {r['s_gen']:.3f} | {1e6 * r['s_gen'] / p:.1f} | {r['tell_s']:.3f} | {r['rss_mb']:.0f} |"
              for p, r in rows]
    write("es_popscale", "\n".join(lines) + "\n")


class IdleEvaluator:
    """A hosted object that returns fitness without computing anything: what is left is the pool's cost."""

    def evaluate(self, pop, start: int, stop: int) -> dict:
        import numpy as np
        return {"fitness": np.zeros(stop - start, np.float32), "noise_s": 0.0}


def section_overhead(args) -> None:
    import numpy as np
    import ray
    from evoplat.platform.population.generation import balanced_ranges
    from evoplat.platform.population.noise import Population
    from evoplat.platform.runtime.pool import WorkerPool
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    pool = WorkerPool(IdleEvaluator, 2, cpus_per_worker=1)
    pool.wait_ready(timeout=120)
    items = balanced_ranges(256, args.chunk, 2)
    rows = []
    # The P-ES center, then a one-value center: what is left is the calls themselves.
    for label, dim in (("P-ES center, 101,770 float32 (400 KB)", 101_770), ("a one-value center", 1)):
        times = []
        for g in range(args.generations + 20):
            pop = Population(center=np.full(dim, g, np.float32), scale=0.02, size=256, generation=g)
            t0 = time.perf_counter()
            pool.run("evaluate", items, shared=(pop,))
            times.append(time.perf_counter() - t0)
        times = sorted(times[20:])
        rows.append(f"| {label} | {1e3 * statistics.median(times):.2f} | {1e3 * times[len(times) // 10]:.2f} | "
                    f"{1e3 * times[9 * len(times) // 10]:.2f} |")
    pool.shutdown()
    ray.shutdown()
    lines = [header("The worker pool's own cost per ES generation (2 Ray workers that compute nothing)"),
             f"- a population (popsize 256) put once, {len(items)} work items (chunk {args.chunk}), fitness "
             f"back; {args.generations} generations after 20 warm-up",
             f"- load: `{args.load}`", "",
             "| population sent | median (ms) | 10th percentile (ms) | 90th percentile (ms) |",
             "|---|---:|---:|---:|", *rows]
    write("es_pool_overhead", "\n".join(lines) + "\n")


def section_gather(args) -> None:
    """The workers' loop with its all-gathers through shared memory (runtime.shared_memory, the default
    when the workers share a node) and through gloo: pools of each kind alternate, round by round."""
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    runs = {(kind, shared): [] for kind in ("lowrank", "full") for shared in (True, False)}
    for rnd in range(args.rounds):
        for kind, shared in runs:
            cfg = pes_config(kind, 1, chunk=args.chunk, workers=2, loop="workers")
            cfg.runtime.shared_memory = shared
            r = on_ray(cfg, args.data_root, 2, time_worker_loop, generations=args.generations, span=10)
            runs[(kind, shared)].append(r)
            print(rnd, kind, "shared memory" if shared else "gloo", {k: round(v, 4) for k, v in r.items()}, flush=True)
    ray.shutdown()
    med = statistics.median
    lines = [header("The workers' loop: all-gathers through shared memory vs gloo (2 Ray workers on one node)"),
             f"- P-ES, OpenAI-ES, table noise, chunk {args.chunk}, spans of 10 generations; {args.rounds} rounds, "
             f"each timing both transports for {args.generations} generations after 3 warm-up; eval_s is the "
             "evaluation and the all-gather as the slowest worker sees them", f"- load: `{args.load}`", "",
             "| perturbation | all-gather | generations/s, median [min-max] | median eval_s (ms) | "
             "median tell_s (ms) |", "|---|---|---:|---:|---:|"]
    for (kind, shared), rs in runs.items():
        g = [r["gen_s"] for r in rs]
        lines.append(f"| {kind} | {'shared memory' if shared else 'gloo'} | {med(g):.2f} [{min(g):.2f}-{max(g):.2f}]"
                     f" | {1e3 * med(r['eval_s'] for r in rs):.2f} | {1e3 * med(r['tell_s'] for r in rs):.2f} |")
    for kind in ("lowrank", "full"):
        ratios = [a["gen_s"] / b["gen_s"] for a, b in zip(runs[(kind, True)], runs[(kind, False)])]
        lines.append(f"\n{kind}: shared memory / gloo, round by round: {', '.join(f'{x:.2f}x' for x in ratios)} "
                     f"(median **{med(ratios):.2f}x**)")
    write("es_gather", "\n".join(lines) + "\n")


def section_paired(args) -> None:
    """The ratio target (low rank, or --perturbation full), measured in pairs: the three settings stay up (an in-process process each,
    one Ray pool) and take turns of --generations generations, round after round; each round's ratio
    holds the workers' loop against the faster in-process turn of the same round."""
    import ray
    names = ("local, 2 threads, one chunk of 256", f"local, 2 threads, chunk {args.chunk}",
             "ray, 2 workers, worker loop, spans of 10")
    kind = args.perturbation
    locals_ = [LocalRunner(kind, chunk, args.data_root) for chunk in (256, args.chunk)]
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    cfg = pes_config(kind, 1, chunk=args.chunk, workers=2, loop="workers")
    pool = ray_pool(cfg, args.data_root, 2)
    runs = {name: [] for name in names}
    peaks = []
    try:
        for rnd in range(args.rounds):
            peaks.append(gemm_gflops(2))
            for name, timed in zip(names, (*(r.time for r in locals_),
                                           lambda n: time_worker_loop(cfg, pool, n, span=10))):
                runs[name].append(timed(args.generations))
                print(rnd, name, {k: round(v, 4) for k, v in runs[name][-1].items()}, flush=True)
    finally:
        pool.shutdown()
        ray.shutdown()
        for r in locals_:
            r.close()
    ratios = [w["gen_s"] / max(a["gen_s"], b["gen_s"]) for a, b, w in zip(*runs.values())]
    label = "low rank r=1" if kind == "lowrank" else "full rank"
    lines = [header(f"{label.capitalize()}: the workers' loop against the in-process run, timed in alternating turns"),
             f"- P-ES, OpenAI-ES, {label}, table noise; {args.rounds} rounds, each a turn of "
             f"{args.generations} generations (after 3 warm-up) of every setting in the order below, all "
             "three set up once and kept running (the in-process ones each in a process of their own "
             "without Ray, idle while the others run); each cell: the median over rounds [min-max]",
             f"- fp32 GEMM peak on 2 threads, at the start of each round: {median_range(peaks, '{:.0f}')} GFLOP/s",
             f"- load: `{args.load}`", "",
             "| where | generations/s | median tell_s (ms) | tell share |", "|---|---:|---:|---:|"]
    for name, rs in runs.items():
        lines.append(f"| {name} | {median_range([r['gen_s'] for r in rs])} | "
                     f"{1e3 * statistics.median(r['tell_s'] for r in rs):.2f} | "
                     f"{median_range([100 * r['tell_s'] / r['s_gen'] for r in rs], '{:.1f}')}% |")
    lines.append(f"\n`{names[2]}` / the faster in-process turn of the same round, round by round: "
                 f"{', '.join(f'{x:.2f}x' for x in ratios)} (median **{statistics.median(ratios):.2f}x**, "
                 f"{sum(x >= 0.95 for x in ratios)} of {len(ratios)} rounds >= 0.95x)")
    write("es_paired" if kind == "lowrank" else "es_paired_full", "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", default="/work/shared/data")
    p.add_argument("--section", choices=["pes", "nodes", "scale", "overhead", "gather", "paired"], required=True)
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="pes, gather, paired: rounds over all settings (median, range)")
    p.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--popsizes", type=int, nargs="+", default=[256, 1024, 4096, 16384, 65536])
    p.add_argument("--scale-chunk", type=int, default=256)
    p.add_argument("--scale-generations", type=int, default=3)
    p.add_argument("--perturbation", choices=["lowrank", "full"], default="lowrank", help="paired: which kind")
    args = p.parse_args()
    args.load = uptime()
    {"pes": section_pes, "nodes": section_nodes, "scale": section_scale,
     "overhead": section_overhead, "gather": section_gather, "paired": section_paired}[args.section](args)


if __name__ == "__main__":
    main()
