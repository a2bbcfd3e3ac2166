"""Low-rank vs full-rank perturbations on MNIST at equal generations: test accuracy and wall time.

OpenAI-ES on the MLP 784-128-10 of experiments/es_mnist.yaml (popsize 256, sigma 0.02, Adam 0.01, batch
1000, 300 generations), once per perturbation: full, and lowrank with rank 1, 4, 16 (es.perturbation,
es.rank). A long accuracy run, not a timing: wall times are whatever the machine allowed.

    python benchmarks/bench_es_lowrank.py --data-root /work/shared/data [--generations 300] [--ranks 1 4 16]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, write  # noqa: E402

import evoplat  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "experiments" / "es_mnist.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", default="/work/shared/data")
    p.add_argument("--generations", type=int, default=300)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--no-full", action="store_true", help="skip the full-rank run")
    p.add_argument("--backend", default="local", choices=["local", "ray"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--run-root", default="runs/bench_es_lowrank")
    args = p.parse_args()
    variants = ([] if args.no_full else [("full", None)]) + [("lowrank", r) for r in args.ranks]
    rows, curves = [], {}
    for kind, rank in variants:
        name = kind if rank is None else f"lowrank_r{rank}"
        over = {"es.generations": args.generations, "es.perturbation": kind, "runtime.backend": args.backend,
                "run.torch_threads": args.threads, "run.eval_every": 25, "run.log_every": 25}
        if rank is not None:
            over["es.rank"] = rank
        res = evoplat.run(CONFIG, run_dir=Path(args.run_root) / name, overrides=over, data_root=args.data_root,
                          overwrite=True)
        m = res.metrics
        ev = m.dropna(subset=["test_acc"])
        last = ev.iloc[-1]
        rows.append((name, int(last["generation"]), 100 * float(last["test_acc"]), 100 * float(ev["test_acc"].max()),
                     float(last["wall_time"]), float(m["tell_s"].median()), float(m["eval_s"].median())))
        curves[name] = [(int(r["generation"]), 100 * float(r["test_acc"])) for _, r in ev.iterrows()]
        print(rows[-1], flush=True)
        report(args, rows, curves)      # after every variant: a long run leaves what it finished


def report(args, rows, curves) -> None:
    lines = [header("Low-rank vs full-rank perturbations, OpenAI-ES on MNIST (MLP 784-128-10)"),
             f"- config: `experiments/es_mnist.yaml` (popsize 256, sigma 0.02, Adam lr 0.01, batch 1000), "
             f"{args.generations} generations, backend {args.backend}, {args.threads} torch thread(s), "
             "run next to other work: wall times are not a timing benchmark",
             "- every variant from the same seed and initial weights; the full-rank row is the same run as "
             "results/es_mnist.md's configuration" if not args.no_full else
             "- --no-full: the full-rank run was not repeated here (results/es_mnist.md)", "",
             "| perturbation | generations | final test acc | best test acc | wall time (s) | median tell_s | "
             "median eval_s |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {n} | {g} | {a:.2f}% | {b:.2f}% | {w:.0f} | {t * 1e3:.1f} ms | {e * 1e3:.0f} ms |"
              for n, g, a, b, w, t, e in rows]
    gens = sorted({g for c in curves.values() for g, _ in c})
    lines += ["", "Test accuracy by generation:", "",
              "| generation | " + " | ".join(curves) + " |", "|---:|" + "---:|" * len(curves)]
    for g in gens:
        lines.append(f"| {g} | " + " | ".join(next((f"{a:.2f}%" for gg, a in c if gg == g), "")
                                          for c in curves.values()) + " |")
    write("es_lowrank", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
