"""Batched population evaluation vs evaluating each member as a plain nn.Module.

Issue 2 target: MLP 784-256-256-10, K=64 members, batch 256: batched >= 5x faster than per-member, and
achieved GFLOP/s against this machine's measured fp32 matmul GFLOP/s (aim >= 50%).
    python benchmarks/bench_population.py [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, write  # noqa: E402

from evoplat.platform.config import ModelConfig  # noqa: E402
from evoplat.platform.models import build_model  # noqa: E402
from evoplat.platform.population.forward import ParamLayout, PopulationForward  # noqa: E402


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def matmul_gflops(n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / best_of(lambda: a @ b, 5) / 1e9


def measure(threads: int, k: int, batch: int, repeats: int) -> dict:
    torch.set_num_threads(threads)
    model = build_model(ModelConfig(name="mlp", hidden=[256, 256]), (1, 28, 28), 10)
    layout = ParamLayout(model)
    flat = layout.flatten(model) + 0.01 * torch.randn(k, layout.size)
    x = torch.randn(batch, 1, 28, 28)
    forward = PopulationForward(model, chunk_size=k)

    def per_member():
        with torch.no_grad():
            for i in range(k):
                layout.load_into(model, flat[i])
                model(x)

    t_batched = best_of(lambda: forward.logits(flat, x), repeats)
    t_member = best_of(per_member, repeats)
    flops = 2 * batch * (784 * 256 + 256 * 256 + 256 * 10) * k
    peak = matmul_gflops()
    return {"batch": batch, "threads": threads, "batched_s": t_batched, "member_s": t_member, "speedup": t_member / t_batched,
            "gflops": flops / t_batched / 1e9, "peak": peak}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--small-batch", type=int, default=16, help="a second, overhead-bound batch size")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    rows = [measure(t, args.k, b, args.repeats) for b in (args.batch, args.small_batch) for t in args.threads]
    lines = [header(f"Batched population evaluation, MLP 784-256-256-10, K={args.k}"),
             "Best of several repeats. Peak = fp32 2048x2048 matmul GFLOP/s measured on the same threads.", "",
             "| batch | torch threads | per-member (ms) | batched (ms) | speedup (target >= 5x) | batched GFLOP/s | "
             "matmul peak GFLOP/s | % of peak (aim >= 50%) |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['threads']} | {1e3 * r['member_s']:.1f} | {1e3 * r['batched_s']:.1f} | "
                     f"{r['speedup']:.1f}x | {r['gflops']:.1f} | {r['peak']:.1f} | {100 * r['gflops'] / r['peak']:.0f}% |")
    write("population", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
