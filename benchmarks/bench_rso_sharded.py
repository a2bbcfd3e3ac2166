"""Sharded RSO on Ray workers: throughput with 2 workers vs 1 (same shards, so the same trials and
results), and the accuracy gap to the sequential sweep at equal numbers of trials.

Runs the real trainer (evoplat.methods.rso.trainer) on MNIST, the throughput part with a trial budget per
tensor, the gap part over one whole cycle (or the same budget with --gap-trials-per-tensor):
    .venv/bin/python benchmarks/bench_rso_sharded.py --data-root DATA_DIR \
        --batch 5000 --trials-per-tensor 128 --shard-size 64 --gap-batch 1000 --gap-train-subset 12000
Throughput = trials of every layer sweep after the first / wall time between their reports (worker
start-up and the first group's cache are excluded); test evaluation only at the end.
"""
from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time

import torch

import evoplat


def run(raw, data_root):
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        result = evoplat.run(raw, run_dir=os.path.join(d, "r"), data_root=data_root)
        wall = time.perf_counter() - t0
        summary, rows = result.summary, [{k: v for k, v in r.items() if v == v} for r in result.metrics.to_dict("records")]
    trials = sum(r["trials"] for r in rows[1:])
    rate = trials / (rows[-1]["wall_time"] - rows[0]["wall_time"])
    return summary, rate, wall, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--trials-per-tensor", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=32)
    ap.add_argument("--train-subset", type=int, default=10000)
    ap.add_argument("--test-subset", type=int, default=10000)
    ap.add_argument("--gap-batch", type=int, default=1000)
    ap.add_argument("--gap-train-subset", type=int, default=12000)
    ap.add_argument("--gap-trials-per-tensor", type=int, default=0, help="0: every scalar (a whole cycle)")
    ap.add_argument("--parts", default="throughput,gap")
    ap.add_argument("--out", default="benchmarks/results/rso_sharded.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = {"algorithm": "rso", "seed": 72,
            "data": {"source": "mnist", "val_size": 0, "train_subset": args.train_subset,
                     "test_subset": args.test_subset},
            "model": {"name": "rso_mnist", "init_seed": 420},
            "run": {"eval_every": 10_000, "checkpoint_every": 10_000, "torch_threads": 1},
            "runtime": {"cpus_per_worker": 1, "local_num_cpus": 2},
            "rso": {"cycles": 1, "batch_size": args.batch, "trials_per_tensor": args.trials_per_tensor,
                    "shard_size": args.shard_size}}

    def with_(rso=None, runtime=None, data=None):
        raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
        raw["rso"].update(rso or {})
        raw["runtime"].update(runtime or {})
        raw["data"].update(data or {})
        return raw

    gap_set = {"batch_size": args.gap_batch, "trials_per_tensor": args.gap_trials_per_tensor or None}
    gap_data = {"train_subset": args.gap_train_subset}

    load0 = open("/proc/loadavg").read().strip()
    lines = [f"## Sharded RSO ({datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC)", "",
             f"- machine: nproc={os.cpu_count()}; load average at start `{load0}` (shared machine)",
             f"- command: `.venv/bin/python benchmarks/bench_rso_sharded.py --data-root {args.data_root} "
             f"--batch {args.batch} --trials-per-tensor {args.trials_per_tensor} --shard-size {args.shard_size} "
             f"--train-subset {args.train_subset} --test-subset {args.test_subset} --gap-batch {args.gap_batch} "
             f"--gap-train-subset {args.gap_train_subset} --gap-trials-per-tensor {args.gap_trials_per_tensor} "
             f"--parts {args.parts}`", ""]
    if "throughput" in args.parts:
        s1, r1, w1, _ = run(with_({"sharded": True, "shards": 2}, {"num_workers": 1}), args.data_root)
        s2, r2, w2, _ = run(with_({"sharded": True, "shards": 2}, {"num_workers": 2}), args.data_root)
        lines += ["| workers | shards | trials/s | wall (s) | test acc |", "|---|---|---|---|---|",
                  f"| 1 | 2 | {r1:.3f} | {w1:.0f} | {s1['test_acc']:.4f} |",
                  f"| 2 | 2 | {r2:.3f} | {w2:.0f} | {s2['test_acc']:.4f} |", "",
                  f"Speed-up 2 vs 1 workers: **{r2 / r1:.2f}x** (target >= 1.7x); same results: "
                  f"{s1['test_acc'] == s2['test_acc']}; load average after `{open('/proc/loadavg').read().strip()}`", ""]
    if "gap" in args.parts:
        seq, rs, ws, rows_s = run(with_(gap_set, data=gap_data), args.data_root)
        sh, rh, wh, rows_h = run(with_(dict(gap_set, sharded=True, shards=2), {"num_workers": 2}, gap_data),
                                 args.data_root)
        lines += [f"Accuracy gap at equal trials (one cycle, batch {args.gap_batch}, "
                  f"{args.gap_train_subset} training images, sharded: 2 shards of {args.shard_size} on 2 workers):", "",
                  "| method | trials | final train loss (mean CE of kept candidates, last sweep) | test acc | wall (s) |",
                  "|---|---|---|---|---|",
                  f"| sequential | {seq['trials_total']} | {rows_s[-1]['train_loss']:.4f} | {seq['test_acc']:.4f} | {ws:.0f} |",
                  f"| sharded 2x{args.shard_size} | {sh['trials_total']} | {rows_h[-1]['train_loss']:.4f} | "
                  f"{sh['test_acc']:.4f} | {wh:.0f} |",
                  "", f"merged rounds overruled by the guard: {sum(r['merges_overruled'] for r in rows_h)}", ""]
    text = "\n".join(lines)
    print(text)
    with open(args.out, "a") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
