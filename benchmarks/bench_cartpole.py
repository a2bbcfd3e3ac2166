"""OpenAI-ES on CartPole-v1 through the gym fitness: generations and wall time to a mean return >= 475
over 100 evaluation episodes (gymnasium's "solved" threshold), for several seeds.

    python benchmarks/bench_cartpole.py [--seeds 0 1 2] [--backend ray|local] [--set k=v ...] [--name cartpole]

With observation normalization, seeded by random-action episodes or not (results/NAME.md):
    python benchmarks/bench_cartpole.py --backend local --name cartpole_obsnorm \
        --set fitness.kwargs.observation_normalization=true [--set fitness.kwargs.warmup_episodes=0]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, write  # noqa: E402

import evoplat  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "experiments" / "es_cartpole.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--backend", default="ray", choices=["ray", "local"])
    p.add_argument("--set", dest="overrides", action="append", default=[], help="key=value, as evoplat run")
    p.add_argument("--name", default="cartpole", help="results/NAME.md")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            res = evoplat.run(CONFIG, run_dir=Path(tmp) / f"s{seed}",
                              overrides=[f"seed={seed}", f"model.init_seed={seed}", f"runtime.backend={args.backend}",
                                         *args.overrides])
            m = res.metrics.dropna(subset=["test_return"])
            last = m.iloc[-1]
            rows.append((seed, int(last["generation"]), float(last["test_return"]), float(last["test_return_std"]),
                         float(last["wall_time"]), res.summary["stopped"]))
    lines = [header("OpenAI-ES on CartPole-v1 (gym fitness, policy MLP 4-16-2)"),
             f"- config: `experiments/es_cartpole.yaml` (popsize 64, sigma 0.1, Adam lr 0.05, 1 episode per "
             f"member, evaluation every 2 generations on 100 fixed episodes), backend {args.backend}"
             + (f"; overrides: `{' '.join(args.overrides)}`" if args.overrides else ""),
             "- target: mean return >= 475 over 100 evaluation episodes", "",
             "| seed | generations | mean return (100 episodes) | std | wall time (s) | stopped by |",
             "|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {s} | {g} | {r:.1f} | {sd:.1f} | {w:.1f} | {why} |" for s, g, r, sd, w, why in rows]
    solved = sum(r >= 475 for _, _, r, _, _, _ in rows)
    lines += ["", f"**{solved} of {len(rows)} seeds reached >= 475** (median generations "
              f"{sorted(g for _, g, *_ in rows)[len(rows) // 2]})."]
    write(args.name, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
