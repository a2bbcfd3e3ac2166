"""A real Ray Tune sweep of the hybrid BP/ES schedule, then the best schedule against its controls.

1. sweep: ASHA over the schedule (ES every K epochs, which layers, sigma, popsize, generations, elitist vs
   OpenAI-ES) on the CPU preset experiments/hybrid_cpu.yaml (VGG16 width 1/8, 6k CIFAR-10 images, 4
   epochs); each trial runs in-process (runtime.backend local, 1 thread), two at a time on 2 cores.
   Writes results/hybrid_sweep.json (one entry per trial: its schedule, its last metrics, the ES share
   of its wall time) and results/hybrid_sweep.png (accuracy vs ES share).
2. rerun: the sweep's best schedule (by val_acc) on fresh seeds in three arms: backprop only, the
   hybrid, and the control (the same phases spent by gradient descent on the same validation images,
   hybrid.phase_kind backprop). Writes results/hybrid_sweep_rerun.json.
3. report: results/hybrid_sweep.md from both JSON files.

    python benchmarks/bench_hybrid_sweep.py sweep --data-root DATA/cifar10.npz [--samples 16] [--resume]
    python benchmarks/bench_hybrid_sweep.py rerun --data-root DATA/cifar10.npz [--seeds 100 101 102]
    python benchmarks/bench_hybrid_sweep.py report

val_acc is the sweep's metric, and the ES phase's fitness is computed on those same validation images,
so the sweep's ranking favours schedules that fit the validation split; the rerun's test accuracy on
fresh seeds, against a control that fits the same images by gradient descent, is the fair comparison.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, command, header, machine, write  # noqa: E402
from bench_hybrid import ARMS, paired_stats  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "experiments" / "hybrid_cpu.yaml"
SWEEP_JSON = RESULTS / "hybrid_sweep.json"
RERUN_JSON = RESULTS / "hybrid_sweep_rerun.json"
SPACE = {
    "hybrid.es_every": {"choice": [1, 2, 4]},
    "hybrid.subset": {"choice": ["classifier", "last_k"]},
    "hybrid.sigma": {"loguniform": [0.005, 0.2]},
    "hybrid.es_popsize": {"choice": [6, 10, 20]},
    "hybrid.es_generations": {"choice": [5, 10, 20]},
    "hybrid.es_kind": {"choice": ["elitist", "openai_es"]},
}
SCHEDULE_KEYS = list(SPACE)


def base_raw(seed: int = 0) -> dict:
    import yaml
    raw = yaml.safe_load(CONFIG.read_text())
    raw["seed"] = seed
    raw["name"] = "hybrid_sweep"
    raw.setdefault("runtime", {}).update(backend="local")
    raw.setdefault("run", {}).update(torch_threads=1)
    raw["tune"] = {"scheduler": "asha", "metric": "val_acc", "mode": "max", "grace_period": 2,
                   "reduction_factor": 2.0, "search_space": SPACE}
    return raw


def es_share(df) -> float:
    bp = float(df["bp_s"].fillna(0).sum()) if "bp_s" in df else 0.0
    es = float(df["es_s"].fillna(0).sum()) if "es_s" in df else 0.0
    return es / (bp + es) if bp + es > 0 else float("nan")


def cmd_sweep(args) -> None:
    from evoplat.platform.run.tune import run_tune
    raw = base_raw()
    raw["tune"]["num_samples"] = args.samples
    t0 = time.time()
    out = run_tune(raw, data_root=args.data_root, storage=args.storage, resume=args.resume)
    trials = []
    for r in out["grid"]:
        df = r.metrics_dataframe
        if df is None or not len(df):
            continue
        last = df.iloc[-1]
        trials.append({
            "schedule": {k: r.config.get(k) for k in SCHEDULE_KEYS},
            "epochs": int(last.get("training_iteration", len(df))),
            "val_acc": float(last.get("val_acc", math.nan)), "test_acc": float(last.get("test_acc", math.nan)),
            "es_share": es_share(df), "bp_s": float(df["bp_s"].sum()),
            "es_s": float(df["es_s"].fillna(0).sum()) if "es_s" in df else 0.0,
            "error": r.error is not None})
    SWEEP_JSON.write_text(json.dumps({
        "command": command(), "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_s": time.time() - t0, "samples": args.samples, "best_config": out["best_config"],
        "best_metrics": out["best_metrics"], "trials": trials}, indent=1, default=str))
    plot(trials)
    print(f"sweep: {len(trials)} trials -> {SWEEP_JSON}")


def plot(trials: list) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ax, key in zip(axes, ("val_acc", "test_acc")):
        for kind, marker in (("elitist", "o"), ("openai_es", "s")):
            for subset, color in (("classifier", "tab:blue"), ("last_k", "tab:orange")):
                pts = [t for t in trials if t["schedule"]["hybrid.es_kind"] == kind
                       and t["schedule"]["hybrid.subset"] == subset]
                full = [t for t in pts if t["epochs"] >= max(x["epochs"] for x in trials)]
                cut = [t for t in pts if t not in full]
                ax.scatter([100 * t["es_share"] for t in full], [100 * t[key] for t in full], marker=marker,
                           color=color, label=f"{kind}, {subset}")
                ax.scatter([100 * t["es_share"] for t in cut], [100 * t[key] for t in cut], marker=marker,
                           facecolors="none", edgecolors=color)
        ax.set_xlabel("ES share of the trial's wall time (%)")
        ax.set_ylabel(f"{key} at the trial's last epoch (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Hybrid BP/ES schedule sweep (ASHA, VGG16 w/8, 6k CIFAR-10); hollow = stopped early")
    fig.tight_layout()
    fig.savefig(RESULTS / "hybrid_sweep.png", dpi=110)


def cmd_rerun(args) -> None:
    import evoplat
    sweep = json.loads(SWEEP_JSON.read_text())
    best = {k: sweep["best_config"][k] for k in SCHEDULE_KEYS}
    overrides = [f"{k}={v}" for k, v in best.items()]
    done = json.loads(RERUN_JSON.read_text()) if RERUN_JSON.is_file() else {"runs": []}
    done.update(best_schedule=best, command=command(), machine=machine())
    have = {(r["arm"], r["seed"]) for r in done["runs"]}
    for seed in args.seeds:
        for arm, extra in ARMS.items():
            if (arm, seed) in have:
                continue
            t0 = time.time()
            res = evoplat.run(str(CONFIG), run_dir=f"{args.run_root}/{arm}_seed{seed}", overwrite=True,
                              data_root=args.data_root, loggers=[],
                              overrides=[f"seed={seed}", "runtime.backend=local", *overrides, *extra])
            s = res.summary
            done["runs"].append({"arm": arm, "seed": seed, "test_acc": s.get("test_acc"),
                                 "val_acc": s.get("val_acc"), "wall_s": time.time() - t0})
            RERUN_JSON.write_text(json.dumps(done, indent=1, default=str))
            print(f"{arm} seed {seed}: test_acc={s.get('test_acc')}", flush=True)


def paired(a: np.ndarray, b: np.ndarray) -> str:
    st = paired_stats(100 * (a - b))
    return f"{st['mean']:+.2f} [{st['lo']:+.2f}, {st['hi']:+.2f}] (n={st['n']})"


def cmd_report(args) -> None:
    sweep = json.loads(SWEEP_JSON.read_text())
    trials = sorted(sweep["trials"], key=lambda t: -t["val_acc"])
    lines = [header("Hybrid BP/ES schedule: Ray Tune ASHA sweep and the best schedule against its controls"),
             f"- sweep: `{sweep['command']}` ({sweep['date']}, {sweep['wall_s'] / 60:.0f} min wall, "
             f"{sweep['machine']})",
             "- setting: experiments/hybrid_cpu.yaml (VGG16 width 1/8, 6,000 CIFAR-10 training images, 2,000 "
             "validation, 10,000 test, 4 epochs), ASHA on val_acc (grace 2 epochs, halving), "
             f"{sweep['samples']} trials, in-process, 1 thread each, two at a time",
             "- the ES phase's fitness uses the validation images, so val_acc favours ES-heavy schedules; "
             "the rerun below (fresh seeds, test accuracy, a control that fits the same images by gradient "
             "descent) is the fair comparison", "",
             "| # | ES every | subset | sigma | popsize | generations | kind | epochs run | ES share | "
             "val acc | test acc |", "|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for i, t in enumerate(trials, 1):
        s = t["schedule"]
        lines.append(f"| {i} | {s['hybrid.es_every']} | {s['hybrid.subset']} | {float(s['hybrid.sigma']):.3f} | "
                     f"{s['hybrid.es_popsize']} | {s['hybrid.es_generations']} | {s['hybrid.es_kind']} | "
                     f"{t['epochs']} | {100 * t['es_share']:.1f}% | {100 * t['val_acc']:.2f}% | "
                     f"{100 * t['test_acc']:.2f}% |")
    lines += ["", "![accuracy vs ES share](hybrid_sweep.png)", ""]
    if RERUN_JSON.is_file():
        rerun = json.loads(RERUN_JSON.read_text())
        by = {}
        for r in rerun["runs"]:
            by.setdefault(r["arm"], {})[r["seed"]] = r["test_acc"]
        seeds = sorted(set.intersection(*(set(v) for v in by.values()))) if len(by) == 3 else []
        lines += ["### The best schedule on fresh seeds, against backprop and the control",
                  f"- schedule: `{rerun['best_schedule']}`", f"- command: `{rerun['command']}`", "",
                  "| seed | backprop only | hybrid (ES phases) | control (same phases by gradient descent) |",
                  "|---:|---:|---:|---:|"]
        for s in seeds:
            lines.append(f"| {s} | {100 * by['baseline'][s]:.2f}% | {100 * by['hybrid'][s]:.2f}% | "
                         f"{100 * by['control'][s]:.2f}% |")
        if seeds:
            acc = {a: np.array([by[a][s] for s in seeds]) for a in ARMS}
            lines += ["", f"- hybrid - backprop: {paired(acc['hybrid'], acc['baseline'])} pp (mean, 95% t-interval)",
                      f"- control - backprop: {paired(acc['control'], acc['baseline'])} pp",
                      f"- hybrid - control: {paired(acc['hybrid'], acc['control'])} pp"]
    write("hybrid_sweep", "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sweep")
    s.add_argument("--data-root", required=True)
    s.add_argument("--samples", type=int, default=16)
    s.add_argument("--storage", default=str(ROOT / "runs" / "tune"))
    s.add_argument("--resume", action="store_true")
    r = sub.add_parser("rerun")
    r.add_argument("--data-root", required=True)
    r.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    r.add_argument("--run-root", default=str(ROOT / "runs" / "hybrid_sweep_rerun"))
    sub.add_parser("report")
    args = p.parse_args()
    {"sweep": cmd_sweep, "rerun": cmd_rerun, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
