"""rec-LRA vs backprop on the same network, data order and epochs (issues 6 and 16).

Every run goes through `evoplat.run`, so each leaves an ordinary run directory. Two ways to use it:

* A population run (several seeds, settings or both modes as members of one run, trained in lock-step
  epochs on the Ray workers): `--run CONFIG --run-dir DIR` runs it (or resumes it from DIR's last
  checkpoint); `--report-runs DIR...` prints per-member and per-group tables from the run directories
  and, with `--write-md`, puts them in a section of benchmarks/results/rec_lra.md.

      python benchmarks/bench_rec_lra.py --run experiments/rec_lra_mnist_search.yaml \
          --run-dir runs/rec_lra_search --data-root /work/shared/data
      python benchmarks/bench_rec_lra.py --report-runs runs/rec_lra_search --select val_acc

* One run per (seed, mode) in this process (issue 6's commands), one JSON line per finished run in
  `--out`; `--report FILE...` turns the lines into a table.

      python benchmarks/bench_rec_lra.py --task mnist --data-root /work/shared/data --epochs 6 \
          --seeds 0 1 2 --out benchmarks/results/rec_lra_mnist.jsonl
      python benchmarks/bench_rec_lra.py --report benchmarks/results/rec_lra_*.jsonl
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import header, put_section  # noqa: E402



# --- population runs ---------------------------------------------------------------------------------------
def run_population(args) -> dict:
    import evoplat
    run_dir = Path(args.run_dir)
    ckpt = run_dir / "checkpoints"
    if ckpt.is_dir() and any(ckpt.iterdir()):
        return evoplat.run(resume=run_dir, overrides=args.set, data_root=args.data_root).summary
    return evoplat.run(args.run, run_dir=run_dir, overrides=args.set, data_root=args.data_root).summary


def member_label(spec, base_mode: str) -> tuple[str, str]:
    """(mode, settings) of a population member: the overrides other than the seeds."""
    if isinstance(spec, int):
        return base_mode, "run config"
    mode = spec.get("rec_lra.mode", base_mode)
    rest = {k.removeprefix("rec_lra."): v for k, v in spec.items()
            if k not in ("seed", "model.init_seed", "rec_lra.mode")}
    return mode, (", ".join(f"{k}={v}" for k, v in rest.items()) or "run config")


def load_members(run_dir: Path) -> list[dict]:
    """One record per member: its mode, settings, seed, per-epoch curves and CPU seconds."""
    import pandas as pd
    import yaml
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    df = pd.read_parquet(run_dir / "metrics.parquet")
    out = []
    for i, spec in enumerate(cfg["rec_lra"]["population"]):
        m = df[df["member"] == i].sort_values("epoch")
        mode, setting = member_label(spec, cfg["rec_lra"]["mode"])
        out.append({"run": str(run_dir), "member": i, "mode": mode, "setting": setting,
                    "seed": int(m["member_seed"].iloc[-1]), "epochs_done": int(m["epoch"].max()),
                    "epochs": cfg["rec_lra"]["epochs"], "val": m["val_acc"].tolist(), "test": m["test_acc"].tolist(),
                    "train_loss": m["train_loss"].tolist(), "cpu": m["epoch_cpu_s"].tolist(),
                    "wall": m["epoch_time_s"].tolist()})
    return out


def fmt(x: float) -> str:
    return f"{100 * x:.2f}"


def mean_sd(xs: list[float]) -> str:
    return f"{fmt(statistics.mean(xs))} ± {fmt(statistics.stdev(xs) if len(xs) > 1 else 0.0)}"


def population_tables(members: list[dict], select: str) -> list[str]:
    lines = ["| run | member | mode | settings | seed | epochs | final train loss | final val acc | "
             "best val acc (epoch) | final test acc | CPU s/epoch (median) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in members:
        best = max(range(len(m["val"])), key=lambda k: m["val"][k])
        lines.append(f"| {Path(m['run']).name} | {m['member']} | {m['mode']} | {m['setting']} | {m['seed']} | "
                     f"{m['epochs_done']}/{m['epochs']} | {m['train_loss'][-1]:.4f} | {fmt(m['val'][-1])} | "
                     f"{fmt(m['val'][best])} ({best + 1}) | {fmt(m['test'][-1])} | {statistics.median(m['cpu']):.1f} |")
    groups: dict = {}
    for m in members:
        groups.setdefault((m["mode"], m["setting"]), []).append(m)
    if any(len(g) > 1 for g in groups.values()):
        lines += ["", "| mode | settings | seeds | epochs | final val acc (mean ± sd) | final test acc (mean ± sd) | "
                  "per-seed test acc | CPU s/epoch (median) |", "|---|---|---|---|---|---|---|---|"]
        for (mode, setting), g in groups.items():
            lines.append(f"| {mode} | {setting} | {', '.join(str(m['seed']) for m in g)} | "
                         f"{min(m['epochs_done'] for m in g)} | {mean_sd([m['val'][-1] for m in g])} | "
                         f"{mean_sd([m['test'][-1] for m in g])} | {', '.join(fmt(m['test'][-1]) for m in g)} | "
                         f"{statistics.median([c for m in g for c in m['cpu']]):.1f} |")
    if select:
        key = "val" if select == "val_acc" else select
        best = max(members, key=lambda m: m[key][-1])
        lines += ["", f"Selected on the last epoch's validation accuracy (never on test): member {best['member']} "
                      f"({best['mode']}, {best['setting']}), val {fmt(best['val'][-1])}."]
    return lines


def curves(members: list[dict]) -> list[str]:
    n = max(m["epochs_done"] for m in members)
    cols = list(range(1, n + 1))
    lines = ["| member | " + " | ".join(str(c) for c in cols) + " |", "|---" * (n + 1) + "|"]
    for m in members:
        lines.append(f"| {m['member']} {m['mode']} seed {m['seed']} | "
                     + " | ".join(fmt(t) for t in m["test"]) + " |" * (n - len(m["test"]) + 1))
    return lines


def write_md(title: str, body: list[str]) -> Path:
    """Put this benchmark's section at the top of rec_lra.md; the older sections stay below."""
    return put_section("rec_lra", "bench_rec_lra", "\n".join([header(title), *body]), "# Earlier runs (issue 6)")


# --- single runs (issue 6) -----------------------------------------------------------------------------------
def run_one(task: str, mode: str, seed: int, args) -> dict:
    import evoplat
    sets = [f"rec_lra.mode={mode}", f"seed={seed}", f"model.init_seed={seed}", f"rec_lra.epochs={args.epochs}",
            "rec_lra.population=[]", f"run.torch_threads={args.threads}", "run.checkpoint_every=1000"]
    if args.train_subset:
        sets.append(f"data.train_subset={args.train_subset}")
    sets += args.set
    with tempfile.TemporaryDirectory() as tmp:
        res = evoplat.run(ROOT / "experiments" / f"rec_lra_{task}.yaml", run_dir=Path(tmp) / "run", overrides=sets,
                          data_root=args.data_root)
        rows = res.metrics.sort_values("epoch")
    return {"task": task, "mode": mode, "seed": seed, "epochs": args.epochs,
            "test_acc": round(float(rows["test_acc"].iloc[-1]), 4), "best_test_acc": float(rows["test_acc"].max()),
            "val_acc": float(rows["val_acc"].iloc[-1]), "curve": [round(x, 4) for x in rows["test_acc"]],
            "epoch_times_s": [round(x, 2) for x in rows["epoch_time_s"]],
            "epoch_cpu_s": [round(x, 2) for x in rows["epoch_cpu_s"]], "overrides": sets,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv)}


def report(paths: list[str]) -> None:
    runs = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["task"], r["epochs"], r["mode"]), []).append(r)
    print("| task | mode | seeds | epochs | test acc (mean ± sd) | per seed | best | wall s/epoch (median) | "
          "CPU s/epoch (median) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (task, _, mode), rs in sorted(groups.items()):
        accs = [r["test_acc"] for r in rs]
        t = statistics.median([x for r in rs for x in r["epoch_times_s"]])
        cpu = [x for r in rs for x in r.get("epoch_cpu_s", [])]
        cpu_s = f"{statistics.median(cpu):.1f}" if cpu else "n/a"
        print(f"| {task} | {mode} | {len(rs)} | {rs[0]['epochs']} | {mean_sd(accs)} | "
              f"{', '.join(fmt(a) for a in accs)} | {fmt(max(r['best_test_acc'] for r in rs))} | {t:.1f} | {cpu_s} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="population config to run (or resume, if --run-dir has a checkpoint)")
    p.add_argument("--run-dir")
    p.add_argument("--report-runs", nargs="+", help="population run directories to tabulate")
    p.add_argument("--select", default="", help="report-runs: name the member best on this (val_acc)")
    p.add_argument("--curves", action="store_true", help="report-runs: per-epoch test accuracy too")
    p.add_argument("--write-md", default="", help="report-runs: section title; writes benchmarks/results/rec_lra.md")
    p.add_argument("--note", action="append", default=[], help="report-runs --write-md: a paragraph (repeatable)")
    p.add_argument("--note-file", action="append", default=[],
                   help="report-runs --write-md: a markdown file put before the tables (repeatable)")
    p.add_argument("--tail-file", help="report-runs --write-md: a markdown file put after the tables")
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
    if args.run:
        print(json.dumps(run_population(args), default=str))
        return None
    if args.report_runs:
        members = [m for d in args.report_runs for m in load_members(Path(d))]
        lines = population_tables(members, args.select) + ([""] + curves(members) if args.curves else [])
        print("\n".join(lines))
        if args.write_md:
            notes = [Path(f).read_text() for f in args.note_file] + args.note
            tail = [Path(args.tail_file).read_text()] if args.tail_file else []
            print(write_md(args.write_md, [*notes, "", *lines, *tail]))
        return None
    for seed in args.seeds:                 # seed-major: a cut-short benchmark still has paired runs
        for mode in args.modes:
            res = run_one(args.task, mode, seed, args)
            with open(args.out, "a") as f:
                f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
