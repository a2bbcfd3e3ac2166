"""Grad-Instructor on MNIST: does a trained ENN beat plain backprop, L1 and He init on the same seeds?

Every run goes through `evoplat.run`, so each leaves an ordinary run directory (config.yaml,
metrics.parquet, checkpoints, summary.json). Stages (separate processes, so independent ones can run
side by side):
  rl       train the ENN by RL (default experiments/grad_instructor_mnist_rl60.yaml) in --rl-dir; if that
           directory already holds a checkpoint, the run is resumed from it
  targets  train one target per seed and method (plain, l1, he, enn) with grad_instructor_mnist_deploy.yaml
           in the setting of the episodes (--train-subset); the enn method uses --rl-dir's enn.pt
  report   add the section of this benchmark to benchmarks/results/grad_instructor.md

    python benchmarks/bench_grad_instructor.py --stage rl --data-root /work/shared/data
    python benchmarks/bench_grad_instructor.py --stage targets --methods plain l1 he --data-root /work/shared/data
    python benchmarks/bench_grad_instructor.py --stage targets --methods enn --data-root /work/shared/data
    python benchmarks/bench_grad_instructor.py --stage report
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import header, put_section  # noqa: E402

RL_CONFIG = ROOT / "experiments" / "grad_instructor_mnist_rl60.yaml"
DEPLOY_CONFIG = ROOT / "experiments" / "grad_instructor_mnist_deploy.yaml"
LABELS = {"plain": "plain backprop", "l1": "backprop + L1", "he": "He init", "enn": "backprop + trained ENN"}
# Two-sided 95% Student-t quantiles by degrees of freedom (the paired-difference intervals).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def run_rl(args) -> dict:
    import evoplat
    rl_dir = Path(args.rl_dir)
    sets = [f"grad_instructor.rl_updates={args.updates}"] + args.set
    if (rl_dir / "checkpoints").is_dir() and any((rl_dir / "checkpoints").iterdir()):
        result = evoplat.run(resume=rl_dir, overrides=sets, data_root=args.data_root)
    else:
        result = evoplat.run(args.config, run_dir=rl_dir, overrides=sets, data_root=args.data_root)
    return result.summary


def method_overrides(method: str, args) -> list[str]:
    return {"plain": [], "l1": [f"grad_instructor.l1={args.l1}"], "he": ["grad_instructor.init=he"],
            "enn": [f"grad_instructor.enn_checkpoint={Path(args.rl_dir) / 'enn.pt'}"]}[method]


def train_targets(args) -> None:
    """One deploy run per (method, seed); seeds fix init and data order, identical across methods (paired)."""
    import evoplat
    out = Path(args.work)
    for method in args.methods:
        for seed in range(args.seeds):
            sets = [f"seed={seed}", "run.torch_threads=1", *method_overrides(method, args)]
            if args.train_subset:
                sets.append(f"data.train_subset={args.train_subset}")
            res = evoplat.run(DEPLOY_CONFIG, run_dir=out / f"{method}-{seed}", overrides=sets,
                              data_root=args.data_root, overwrite=True)
            last = res.metrics.iloc[-1]
            rec = {"method": method, "seed": seed, "train_acc": float(last["train_acc"]),
                   "val_acc": float(last["val_acc"]), "test_acc": float(last["test_acc"]),
                   "enn_grad_norm": float(last.get("enn_grad_norm", float("nan"))), "overrides": sets}
            print(json.dumps(rec), flush=True)
            with open(out / "targets.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")


def mean_sd(xs) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def paired(a: list[float], b: list[float]) -> str:
    """a - b per seed: mean, 95% t-interval, per-seed values (points)."""
    d = [100 * (x - y) for x, y in zip(a, b)]
    m, s = mean_sd(d)
    half = T95.get(len(d) - 1, 1.96) * s / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return f"{m:+.2f} | [{m - half:+.2f}, {m + half:+.2f}] | " + ", ".join(f"{x:+.2f}" for x in d)


def rl_table(rl_dir: Path) -> list[str]:
    import pandas as pd
    path = rl_dir / "metrics.parquet"
    if not path.is_file():
        return ["(no RL metrics yet)"]
    df = pd.read_parquet(path)
    df = df[df["phase"] == "rl_update"] if "phase" in df else df
    lines = ["| update | reward mean (perturbed episodes' val acc) | reward max | reward min | centre ENN val acc | "
             "centre ENN test acc | centre ENN grad norm | update wall s |", "|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        lines.append(f"| {int(r['update'])} | {100 * r['reward_mean']:.2f} | {100 * r['reward_max']:.2f} | "
                     f"{100 * r['reward_min']:.2f} | {100 * r['val_acc']:.2f} | {100 * r['test_acc']:.2f} | "
                     f"{r.get('center_enn_grad_norm', float('nan')):.3f} | {r['update_seconds']:.1f} |")
    return lines


def rel(path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def report(args) -> Path:
    work = Path(args.work)
    recs: dict = {}
    for line in (work / "targets.jsonl").read_text().splitlines():
        r = json.loads(line)
        recs.setdefault(r["method"], {})[r["seed"]] = r          # a re-run replaces the older line
    seeds = sorted(set.intersection(*(set(v) for v in recs.values())))
    notes = Path(args.note).read_text() if args.note and Path(args.note).is_file() else args.note
    lines = [header(args.title), notes or "",
             f"Setting (all methods): MLP 784-100-10 ReLU, SGD lr 0.01, batch 64, 1 epoch on the first "
             f"{args.train_subset or 'all'} training examples (the episodes' setting), validation 5,000, test = the "
             f"full 10,000 test set. Seeds {seeds} fix init and data order, identical across methods (paired). "
             f"L1 = {args.l1:g}. ENN: `{rel(Path(args.rl_dir) / 'enn.pt')}`.", "",
             "| method | test acc mean ± sd | train acc (mean) | train − test gap mean ± sd | per-seed test acc |",
             "|---|---|---|---|---|"]
    acc = {}
    for m in ("plain", "l1", "he", "enn"):
        if m not in recs:
            continue
        rs = [recs[m][s] for s in seeds]
        acc[m] = [r["test_acc"] for r in rs]
        te, tr = mean_sd(acc[m]), mean_sd([r["train_acc"] for r in rs])
        gap = mean_sd([r["train_acc"] - r["test_acc"] for r in rs])
        lines.append(f"| {LABELS[m]} | {100 * te[0]:.2f} ± {100 * te[1]:.2f} | {100 * tr[0]:.2f} | "
                     f"{100 * gap[0]:+.2f} ± {100 * gap[1]:.2f} | " + ", ".join(f"{100 * a:.2f}" for a in acc[m]) + " |")
    lines += ["", "Paired differences in test accuracy (points; 95% CI = mean ± t(0.975, n−1)·sd/√n):", "",
              "| difference | mean | 95% CI | per seed |", "|---|---|---|---|"]
    for a, b in (("enn", "plain"), ("enn", "l1"), ("enn", "he"), ("he", "plain"), ("l1", "plain")):
        if a in acc and b in acc:
            lines.append(f"| {LABELS[a]} − {LABELS[b]} | {paired(acc[a], acc[b])} |")
    if "enn" in recs and "plain" in recs:
        gaps = {m: [recs[m][s]["train_acc"] - recs[m][s]["test_acc"] for s in seeds] for m in ("enn", "plain")}
        lines += ["", f"Paired difference of the train − test gap, ENN − plain: {paired(gaps['enn'], gaps['plain'])}"]
    lines += ["", f"### ENN training ({rel(args.rl_dir)})", ""] + rl_table(Path(args.rl_dir))
    if args.tail and Path(args.tail).is_file():
        lines += [Path(args.tail).read_text()]
    return put_section("grad_instructor", f"bench_grad_instructor {Path(args.rl_dir).name}", "\n".join(lines),
                       "# Earlier run (issue 8, 15 RL updates)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", required=True, choices=["rl", "targets", "report"])
    p.add_argument("--data-root", default=None)
    p.add_argument("--config", default=str(RL_CONFIG))
    p.add_argument("--rl-dir", default=str(ROOT / "benchmarks" / "results" / "runs" / "grad_instructor_rl60"))
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_grad_instructor_rl60"))
    p.add_argument("--updates", type=int, default=60)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--methods", nargs="+", default=["plain", "l1", "he", "enn"])
    p.add_argument("--train-subset", type=int, default=10000)
    p.add_argument("--l1", type=float, default=1e-4)
    p.add_argument("--set", action="append", default=[], help="extra override of the RL run, KEY=VALUE")
    p.add_argument("--note", default="", help="report: a paragraph (or a markdown file) under the section header")
    p.add_argument("--tail", default="", help="report: a markdown file placed after the tables")
    p.add_argument("--title", default="Grad-Instructor with a 60-update RL budget (issue 16)", help="report: section title")
    args = p.parse_args(argv)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args.stage == "rl":
        print(json.dumps(run_rl(args), default=str))
    elif args.stage == "targets":
        train_targets(args)
    else:
        print(report(args).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
