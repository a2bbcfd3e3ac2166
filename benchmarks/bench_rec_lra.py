"""rec-LRA vs backprop on the same network, data order and epochs (issue 6).

Runs the experiment presets (experiments/rec_lra_{mnist,cifar10}.yaml) through the same learner the
trainer uses, one process, `--threads` torch threads, and appends one JSON line per finished run to
`--out` (so a run cut short keeps what it finished). `--report` turns the JSON lines into the table
of benchmarks/results/rec_lra.md.

    python benchmarks/bench_rec_lra.py --task mnist --data-root DATA_DIR --epochs 6 \
        --seeds 0 1 2 --out benchmarks/results/rec_lra_mnist.jsonl
    python benchmarks/bench_rec_lra.py --task cifar10 --data-root DATA_DIR/cifar10.npz --epochs 4 \
        --seeds 0 --train-subset 10000 --out benchmarks/results/rec_lra_cifar10.jsonl
    python benchmarks/bench_rec_lra.py --report benchmarks/results/rec_lra_*.jsonl
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def run_one(task: str, mode: str, seed: int, args) -> dict:
    from evoplat.platform.config import load_config
    from evoplat.platform.data import load_dataset
    from evoplat.methods.rec_lra.rule import RecLRALearner
    sets = [f"rec_lra.mode={mode}", f"seed={seed}", f"model.init_seed={seed}", f"rec_lra.epochs={args.epochs}"]
    if args.train_subset:
        sets.append(f"data.train_subset={args.train_subset}")
    sets += args.set
    cfg = load_config(ROOT / "experiments" / f"rec_lra_{task}.yaml", sets)
    learner = RecLRALearner(cfg, load_dataset(cfg.data, args.data_root))
    curve, times, cpu = [], [], []
    while learner.epoch < cfg.rec_lra.epochs:
        row = learner.train_epoch()
        row.update(learner.evaluate())
        curve.append(round(row["test_acc"], 4))
        times.append(round(row["epoch_time_s"], 2))
        cpu.append(round(row["epoch_cpu_s"], 2))
        print(f"{task} {mode} seed={seed} epoch={learner.epoch} test_acc={row['test_acc']:.4f} "
              f"val_acc={row.get('val_acc', 0):.4f} train_loss={row['train_loss']:.4f} "
              f"t={row['epoch_time_s']:.1f}s cpu={row['epoch_cpu_s']:.1f}s", flush=True)
    return {"task": task, "mode": mode, "seed": seed, "epochs": cfg.rec_lra.epochs,
            "train_examples": len(learner.data.x_train), "test_examples": len(learner.data.x_test),
            "test_acc": curve[-1], "best_test_acc": max(curve), "val_acc": row.get("val_acc"),
            "curve": curve, "epoch_times_s": times, "epoch_cpu_s": cpu, "overrides": sets,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(args.threads),
            "command": " ".join(sys.argv)}


def machine(threads: int) -> str:
    import os
    return (f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{threads} torch thread(s)")


def report(paths: list[str]) -> None:
    runs = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["task"], r["epochs"], r["mode"]), []).append(r)
    print("| task | mode | seeds | epochs | train ex. | test acc (mean ± sd) | per seed | best | "
          "wall s/epoch (median) | CPU s/epoch (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (task, _, mode), rs in sorted(groups.items()):
        accs = [r["test_acc"] for r in rs]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        t = statistics.median([x for r in rs for x in r["epoch_times_s"]])
        cpu = [x for r in rs for x in r.get("epoch_cpu_s", [])]
        cpu_s = f"{statistics.median(cpu):.1f}" if cpu else "n/a"
        print(f"| {task} | {mode} | {len(rs)} | {rs[0]['epochs']} | {rs[0]['train_examples']} | "
              f"{100 * statistics.mean(accs):.2f} ± {100 * sd:.2f} | "
              f"{', '.join(f'{100 * a:.2f}' for a in accs)} | {100 * max(r['best_test_acc'] for r in rs):.2f} | "
              f"{t:.1f} | {cpu_s} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["mnist", "cifar10"])
    p.add_argument("--data-root")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--modes", nargs="+", default=["rec_lra", "backprop"])
    p.add_argument("--train-subset", type=int)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], help="extra config override KEY=VALUE")
    p.add_argument("--out")
    p.add_argument("--report", nargs="+")
    args = p.parse_args()
    if args.report:
        return report(args.report)
    torch.set_num_threads(args.threads)
    for seed in args.seeds:                 # seed-major: a cut-short benchmark still has paired runs
        for mode in args.modes:
            res = run_one(args.task, mode, seed, args)
            with open(args.out, "a") as f:
                f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
