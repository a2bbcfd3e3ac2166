"""The anchor: EvoTorch's PGPE SupervisedNE and evoplat's OpenAI-ES on the same problem P-ES, same run.

P-ES: MNIST (evoplat's loader, the same tensors for both), MLP 784-128-10, popsize 256, minibatch 256
per generation. EvoTorch: PGPE on SupervisedNE (stdev 0.02, ClipUp, centered ranks) in-process and, unless
--no-ray, on 2 Ray actors (num_actors=2). evoplat: OpenAI-ES, full rank and low rank
r=1, in-process (backend local) and on 2 Ray workers, driven by the driver (runtime.loop: driver, what
`auto` picks on a cluster of several nodes) and running the loop themselves (runtime.loop: workers, what
`auto` picks on one machine; spans of 10 generations: ES's default eval_every). Same torch, same threads (--threads), and the fp32 GEMM peak measured here too. Installs
nothing: EvoTorch is the optional extra `bench` (pip install evotorch); without it only evoplat is measured.

    python benchmarks/bench_es_vs_evotorch.py --data-root /work/shared/data [--generations 20] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, write  # noqa: E402
from _pes import (arithmetic_bound, gemm_gflops, local_pool, pes_config, ray_pool, time_es,  # noqa: E402
                  time_worker_loop, uptime)


def evotorch_gen_s(x: torch.Tensor, y: torch.Tensor, generations: int, warmup: int = 3, actors=None):
    """Generations/s of EvoTorch PGPE on P-ES (`actors` Ray actors, None: in-process), or None when
    EvoTorch is not installed."""
    try:
        from evotorch.algorithms import PGPE
        from evotorch.neuroevolution import SupervisedNE
    except ImportError:
        return None, None
    import evotorch
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    problem = SupervisedNE(torch.utils.data.TensorDataset(x, y), net, nn.CrossEntropyLoss(),
                           minibatch_size=256, common_minibatch=True, num_actors=actors, device="cpu")
    searcher = PGPE(problem, popsize=256, center_learning_rate=0.01, stdev_learning_rate=0.1, stdev_init=0.02,
                    optimizer="clipup", ranking_method="centered")
    for _ in range(warmup):
        searcher.step()
    t0 = time.perf_counter()
    for _ in range(generations):
        searcher.step()
    return generations / (time.perf_counter() - t0), evotorch.__version__


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", default="/work/shared/data")
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk", type=int, default=128)
    p.add_argument("--no-ray", action="store_true")
    args = p.parse_args()
    load = uptime()
    torch.set_num_threads(args.threads)
    peak = gemm_gflops(args.threads)
    from evoplat.platform.data import load_dataset
    cfg = pes_config(backend="local")
    data = load_dataset(cfg.data, args.data_root)
    et, et_version = evotorch_gen_s(data.x_train, data.y_train, args.generations)
    et_ray = None
    torch.set_num_threads(args.threads)
    rows = []
    for kind in ("full", "lowrank"):
        cfg = pes_config(kind, 1, chunk=args.chunk, backend="local")
        rows.append((kind, f"in-process, {args.threads} threads",
                     time_es(cfg, local_pool(cfg, args.data_root, args.threads), args.generations)["gen_s"]))
        print(rows[-1], flush=True)
    if not args.no_ray:
        import ray
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
        for kind in ("full", "lowrank"):
            for loop, where, timed in (("driver", "2 Ray workers x 1 CPU", time_es),
                                       ("workers", "2 Ray workers x 1 CPU, workers' loop", time_worker_loop)):
                cfg = pes_config(kind, 1, chunk=args.chunk, workers=2, loop=loop)
                pool = ray_pool(cfg, args.data_root, 2)
                try:
                    rows.append((kind, where, timed(cfg, pool, args.generations)["gen_s"]))
                finally:
                    pool.shutdown()
                print(rows[-1], flush=True)
        if et is not None:
            et_ray, _ = evotorch_gen_s(data.x_train, data.y_train, args.generations, actors=2)
        ray.shutdown()
    lines = [header("evoplat vs EvoTorch on P-ES (MNIST, MLP 784-128-10, popsize 256, minibatch 256)"),
             f"- torch {torch.__version__}, {args.threads} torch threads; fp32 GEMM peak (2048^3) measured in this "
             f"run: **{peak:.0f} GFLOP/s**", f"- load: `{load}`",
             f"- {args.generations} timed generations after 3 warm-up; evoplat chunk {args.chunk}, table noise", "",
             "| system | perturbation | where | generations/s | vs EvoTorch |", "|---|---|---|---:|---:|"]
    if et is None:
        lines.append("| EvoTorch | - | not installed (`pip install evotorch`) | - | - |")
    else:
        lines.append(f"| EvoTorch {et_version} PGPE SupervisedNE | full | in-process | {et:.2f} | 1.00x |")
        if et_ray is not None:
            lines.append(f"| EvoTorch {et_version} PGPE SupervisedNE | full | 2 Ray actors | {et_ray:.2f} | "
                         f"{et_ray / et:.2f}x |")
    for kind, where, gs in rows:
        ratio = f"{gs / et:.1f}x" if et else "-"
        lines.append(f"| evoplat OpenAI-ES | {kind if kind == 'full' else 'lowrank r=1'} | {where} | {gs:.2f} | {ratio} |")
    best_full = max(gs for kind, _, gs in rows if kind == "full")
    lines += ["", "`vs EvoTorch`: against EvoTorch in-process, its faster setting here.", "",
              arithmetic_bound(best_full, peak)]
    write("es_vs_evotorch", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
