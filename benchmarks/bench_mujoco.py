"""OpenAI-ES on a MuJoCo task through the gym fitness (the stretch goal beside CartPole): the return
curve over generations, written as a table and a PNG. Resumable: the run directory is kept.

    python benchmarks/bench_mujoco.py [--run-dir benchmarks/results/runs/es_hopper_obsnorm] [--resume]
        [--set k=v ...] [--name es_hopper_obsnorm]     # the results' files: results/NAME.md and NAME.png

The preset normalizes observations; the control run without (results/es_hopper.md):
    python benchmarks/bench_mujoco.py --run-dir benchmarks/results/runs/es_hopper --name es_hopper \
        --set fitness.kwargs.observation_normalization=false
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, header, write  # noqa: E402

import evoplat  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "experiments" / "es_hopper.yaml"


def gait(res, episodes: int = 5) -> list[str]:
    """Table rows of the last checkpoint's center on fresh episodes: length, return, the forward part of
    the return and the distance moved (on Hopper a return near 1,000 can be 1,000 steps of standing)."""
    import gymnasium as gym
    import numpy as np
    import torch
    from evoplat.platform.models import build_model
    from evoplat.platform.population.forward import ParamLayout
    from evoplat.platform.run.rundir import RunDirectory
    env = gym.make(res.config.fitness.kwargs["env"])
    if (res.run_dir / "model.pt").is_file():      # the exported policy (its observation normalizer included)
        net = res.model()
    else:                                         # a run from before model.pt: the center into a fresh net
        net = build_model(res.config.model, env.observation_space.shape, env.action_space.shape[0])
        ParamLayout(net).load_into(net, RunDirectory(res.run_dir).load_latest()["strategy"]["center"])
    rows = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=10_000 + ep)
        x0, total, forward, steps, done = env.unwrapped.data.qpos[0], 0.0, 0.0, 0, False
        while not done:
            with torch.no_grad():
                logits = net(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
            obs, r, term, trunc, info = env.step(np.clip(logits, env.action_space.low, env.action_space.high))
            total, forward, steps, done = total + r, forward + info.get("reward_forward", 0.0), steps + 1, term or trunc
        rows.append(f"| {ep} | {steps} | {total:.1f} | {forward:.1f} | {env.unwrapped.data.qpos[0] - x0:.2f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run-dir", default=str(RESULTS / "runs" / "es_hopper_obsnorm"))
    p.add_argument("--resume", action="store_true")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--name", default="es_hopper_obsnorm", help="results/NAME.md and results/NAME.png")
    args = p.parse_args()
    if args.resume:
        res = evoplat.run(resume=args.run_dir, overrides=args.overrides)
    else:
        res = evoplat.run(CONFIG, run_dir=args.run_dir, overrides=args.overrides, overwrite=True)
    m = res.metrics
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(m["generation"], m["fitness_mean"], label="population mean return (1 episode each)")
    ax.plot(m["generation"], m["fitness_max"], label="population best", alpha=0.5)
    ev = m.dropna(subset=["test_return"])
    ax.plot(ev["generation"], ev["test_return"], "o-", label="center, mean of 5 evaluation episodes")
    ax.set_xlabel("generation"), ax.set_ylabel("return"), ax.legend(fontsize=7)
    ax.set_title(f"OpenAI-ES on {res.config.fitness.kwargs['env']}")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.name}.png", dpi=110)
    norm = res.config.fitness.kwargs.get("observation_normalization", False)
    lines = [header(f"OpenAI-ES on {res.config.fitness.kwargs['env']} (MuJoCo) through the gym fitness"),
             "- config: `experiments/es_hopper.yaml` (tanh MLP 11-32-3, popsize 48, sigma 0.05, Adam lr 0.02)"
             + (", observation normalization on" if norm else "")
             + (f"; overrides: `{' '.join(args.overrides)}`" if args.overrides else ""),
             f"- generations run: {res.summary['steps']} of {res.summary['budget']} ({res.summary['stopped']}); "
             f"wall time {m['wall_time'].iloc[-1]:.0f} s (background run, often paused: not a speed figure)",
             f"- curve: `benchmarks/results/{args.name}.png`", "",
             "| generation | population mean return | center's evaluation return (5 episodes) |", "|---:|---:|---:|"]
    lines += [f"| {int(r.generation)} | {r.fitness_mean:.1f} | {r.test_return:.1f} |" for r in ev.itertuples()]
    lines += ["", f"The center after generation {res.summary['steps']} on 5 fresh episodes (seeds 10000-10004):", "",
              "| episode | steps | return | forward part of the return | x moved (m) |", "|---:|---:|---:|---:|---:|",
              *gait(res)]
    write(args.name, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
