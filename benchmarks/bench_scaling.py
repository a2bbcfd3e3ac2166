"""ES generations/s with 1 vs 2 Ray workers at popsize 512, bytes per generation at popsize 128 and 1024,
and the cost of each noise source.

Issue 2 targets: 2 workers vs 1 >= 1.7x generations/s (this machine has 2 cores); bytes sent per
generation the same at popsize 128 and 1024 (out: the center, once per node; back: 4 bytes a member).
    python benchmarks/bench_scaling.py --data-root DATA_DIR
"""
from __future__ import annotations

import argparse
import functools
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, write  # noqa: E402

import ray  # noqa: E402

from evoplat.platform.config import build_config  # noqa: E402
from evoplat.platform.population.evaluator import ESEvaluator  # noqa: E402
from evoplat.platform.models import build_model  # noqa: E402
from evoplat.platform.population.noise import make_noise  # noqa: E402
from evoplat.platform.population.forward import ParamLayout  # noqa: E402
from evoplat.platform.strategies import build_strategy  # noqa: E402
from evoplat.platform.population.generation import ESGeneration, member_ranges  # noqa: E402
from evoplat.platform.runtime.pool import WorkerPool  # noqa: E402


def config(data_root, popsize, noise="table"):
    return build_config({"data": {"source": "mnist", "root": data_root},
                         "model": {"name": "mlp", "hidden": [128]},
                         "runtime": {"chunk_size": 32},
                         "es": {"popsize": popsize, "batch_size": 1000, "noise": noise}})


def generations_per_s(cfg, workers: int, gens: int) -> tuple[float, dict]:
    model = build_model(cfg.model, (1, 28, 28), 10)
    layout = ParamLayout(model)
    strategy = build_strategy(cfg.es)
    state = strategy.init(layout.flatten(model))
    noise = make_noise(cfg.es.noise, cfg.seed, layout.size, cfg.es.noise_table_size)
    pool = WorkerPool(functools.partial(ESEvaluator, cfg), workers, cpus_per_worker=1)
    try:
        pool.wait_ready()
        loop = ESGeneration(pool, strategy, noise, cfg.runtime.chunk_size)
        state, info, _ = loop.step(state)  # warm-up
        t = time.perf_counter()
        for _ in range(gens):
            state, info, _ = loop.step(state)
        return gens / (time.perf_counter() - t), info
    finally:
        pool.shutdown()


def bytes_per_generation(cfg) -> dict:
    model = build_model(cfg.model, (1, 28, 28), 10)
    layout = ParamLayout(model)
    strategy = build_strategy(cfg.es)
    pop = strategy.ask(strategy.init(layout.flatten(model)))
    ranges = member_ranges(pop.size, cfg.runtime.chunk_size)
    out_once = len(pickle.dumps(pop, protocol=5))
    task_args = sum(len(pickle.dumps(r, protocol=5)) for r in ranges)
    back = sum(len(pickle.dumps({"fitness": np.zeros(b - a, np.float32), "noise_s": 0.0, "total_s": 0.0},
                                protocol=5)) for a, b in ranges)
    return {"popsize": pop.size, "center": out_once, "task_args": task_args, "fitness_back": back}


def noise_cost(cfg, dim: int, members: int = 256) -> dict:
    from evoplat.platform.population.noise import Population
    out = {}
    for kind in ("counter", "table"):
        noise = make_noise(kind, 0, dim)
        pop = Population(center=np.zeros(dim, np.float32), scale=0.02, size=members, generation=0)
        t = time.perf_counter()
        noise.members(pop, 0, members)
        out[kind] = time.perf_counter() - t
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--gens", type=int, default=5)
    args = p.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    cfg = config(args.data_root, 512)
    g1, info1 = generations_per_s(cfg, 1, args.gens)
    g2, info2 = generations_per_s(cfg, 2, args.gens)
    ray.shutdown()
    sizes = [bytes_per_generation(config(args.data_root, n)) for n in (128, 1024)]
    noise = noise_cost(cfg, 101_770)
    lines = [header("ES scaling and traffic, MLP 784-128-10 on MNIST, batch 1000"),
             "| workers (1 CPU each) | generations/s at popsize 512 | member evaluations/s |",
             "|---:|---:|---:|",
             f"| 1 | {g1:.3f} | {g1 * 512:.0f} |", f"| 2 | {g2:.3f} | {g2 * 512:.0f} |",
             f"\n**2 vs 1 workers: {g2 / g1:.2f}x** (target >= 1.7x).\n",
             "| popsize | center put once (bytes) | task arguments (bytes) | fitness back (bytes) |",
             "|---:|---:|---:|---:|"]
    for s in sizes:
        lines.append(f"| {s['popsize']} | {s['center']} | {s['task_args']} | {s['fitness_back']} |")
    lines.append("\nThe parameter traffic out is the same at both sizes (one `ray.put` of the center per generation, "
                 "read zero-copy by every worker on a node); what grows with the population is 4 bytes of fitness "
                 "per member plus a few bytes of range per work item.\n")
    lines.append(f"Noise for 256 members of 101,770 parameters: counter-based Philox {1e3 * noise['counter']:.0f} ms, "
                 f"table slices {1e3 * noise['table']:.0f} ms (the table is the default).\n")
    write("scaling", "\n".join(lines))


if __name__ == "__main__":
    main()
