"""ES generations/s on a GPU: P-ES (MLP 784-128-10, popsize 256, minibatch 256) and a 1M-parameter MLP
(784-1024-256-10, 1,068,810 parameters), full and low rank, with the GPU's own fp32 GEMM peak and the
peak GPU memory; then P-ES on one Ray worker holding the GPU that runs the generations itself (the
workers' loop: what `runtime.loop: auto` runs on a one-machine Ray instance). Run through
benchmarks/gpu.sh; `--device cpu` exercises the same code without a GPU.

    python benchmarks/bench_es_gpu.py [--data-root DIR] [--generations 20] [--device cuda]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, write  # noqa: E402
from _pes import local_pool, on_ray, pes_config, time_es, time_worker_loop, uptime  # noqa: E402

from evoplat.platform.runtime.cluster import connect  # noqa: E402


def gemm_peak(device: str, n: int = 4096) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(6):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", default=None, help="MNIST folder (default: evoplat's data cache, downloading MNIST on first use)")
    p.add_argument("--generations", type=int, default=20)
    p.add_argument("--device", default="cuda")
    p.add_argument("--chunk", type=int, default=256)
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a machine with a GPU (or pass --device cpu to check the code path)")
    gpus = 1.0 if args.device.startswith("cuda") else 0.0
    peak = gemm_peak(args.device)
    name = torch.cuda.get_device_name() if gpus else "cpu"
    rows = []
    for label, hidden in (("P-ES, MLP 784-128-10 (101,770)", [128]), ("MLP 784-1024-256-10 (1,068,810)", [1024, 256])):
        for kind in ("full", "lowrank"):
            cfg = pes_config(kind, 1, chunk=args.chunk, backend="local")
            cfg.model.hidden, cfg.runtime.gpus_per_worker = hidden, gpus
            if gpus:
                torch.cuda.reset_peak_memory_stats()
            pool = local_pool(cfg, args.data_root, torch.get_num_threads())
            assert pool.obj.device.type == torch.device(args.device).type, pool.obj.device
            r = time_es(cfg, pool, args.generations)
            mem = torch.cuda.max_memory_allocated() / 2**20 if gpus else float("nan")
            rows.append((label, kind, r["gen_s"], r["eval_s"], r["tell_s"], mem))
            print(rows[-1], flush=True)
    connect()                             # a local Ray instance for the one-worker rows
    for kind in ("full", "lowrank"):
        cfg = pes_config(kind, 1, chunk=args.chunk, workers=1, loop="workers")
        cfg.runtime.gpus_per_worker = gpus
        r = on_ray(cfg, args.data_root, 1, time_worker_loop, generations=args.generations)
        rows.append(("P-ES on 1 Ray worker, the workers' loop", kind, r["gen_s"], r["eval_s"], r["tell_s"], float("nan")))
        print(rows[-1], flush=True)
    lines = [header(f"ES on {name}"), f"- fp32 GEMM peak (4096^3) on this device: **{peak:.0f} GFLOP/s**",
             f"- popsize 256, minibatch 256, chunk {args.chunk}, {args.generations} timed generations after 3 "
             f"warm-up, in-process (backend local, runtime.gpus_per_worker={gpus:g}), then on one Ray worker "
             f"(runtime.loop workers, spans of 10; its GPU memory is the worker's, not shown); load `{uptime()}`", "",
             "| problem | perturbation | generations/s | median eval_s (ms) | median tell_s (ms) | peak GPU memory (MB) |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {lab} | {k} | {g:.2f} | {1e3 * e:.1f} | {1e3 * t:.1f} | {m:.0f} |" for lab, k, g, e, t, m in rows]
    write("es_gpu" if gpus else "es_gpu_cpu_check", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
