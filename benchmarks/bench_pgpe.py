"""PGPE in evoplat against EvoTorch's PGPE: the same algorithm, hyperparameters and initial network.

Problem P-ES: MNIST, MLP 784-128-10, popsize 256 (128 mirrored pairs), a fresh minibatch of 256
training images per generation, fitness the minibatch's mean cross-entropy (EvoTorch minimises it,
evoplat maximises its negative), centered ranks, ClipUp (step 0.01, max speed 0.02, momentum 0.9),
sigma 0.02 per parameter with learning rate 0.1 and at most 20% change per generation (EvoTorch's
defaults). Both start from the same network: evoplat's model at the run's seed, which EvoTorch gets as
its center. Reported: MNIST test accuracy of the final center, and generations/s of each loop (evoplat
in-process on the same threads; its evaluation every `--eval-every` generations counted out).
OpenAI-ES (evoplat's preset optimizer, Adam, at the same batch and generations) runs beside them as
evoplat's own reference. EvoTorch is the optional `bench` extra; without it only evoplat runs.

    python benchmarks/bench_pgpe.py --data-root /work/shared/data [--generations 300] [--seeds 0 1]
        [--lr 0.1 --name pgpe_lr0.1]      (ClipUp's step, both systems; results/<name>.md)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, write  # noqa: E402
from _pes import CONFIG, uptime  # noqa: E402

PGPE_SETTINGS = dict(popsize=256, lr=0.01, sigma=0.02, sigma_lr=0.1, sigma_max_change=0.2)


def evoplat_raw(strategy: str, generations: int, seed: int) -> dict:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["seed"] = seed
    raw["runtime"].update(backend="local")
    raw["run"].update(eval_every=generations, checkpoint_every=generations, log_every=generations)
    raw["es"].update(strategy=strategy, generations=generations, batch_size=256, popsize=256)
    if strategy == "pgpe":
        raw["es"].update(PGPE_SETTINGS, optimizer="clipup")
    return raw


def run_evoplat(strategy: str, generations: int, seed: int, data_root: str) -> dict:
    import evoplat
    stamps = []
    with tempfile.TemporaryDirectory() as tmp:
        res = evoplat.run(evoplat_raw(strategy, generations, seed), run_dir=Path(tmp) / "run", data_root=data_root,
                          loggers=[lambda row: stamps.append(time.perf_counter())])
    # rows arrive once per generation; the last one waits for the final evaluation, so it is left out
    gen_s = (len(stamps) - 2) / (stamps[-2] - stamps[0]) if len(stamps) > 2 else float("nan")
    return {"test_acc": res.summary["test_acc"], "gen_s": gen_s}


def run_evotorch(generations: int, seed: int, data_root: str):
    """EvoTorch PGPE from evoplat's initial network at `seed`; None without EvoTorch."""
    try:
        from evotorch.algorithms import PGPE
        from evotorch.neuroevolution import SupervisedNE
    except ImportError:
        return None
    from evoplat.platform.config import build_config
    from evoplat.platform.data import load_dataset
    from evoplat.platform.models import build_model
    from evoplat.platform.population.forward import ParamLayout
    cfg = build_config(evoplat_raw("pgpe", generations, seed))
    data = load_dataset(cfg.data, data_root)
    torch.manual_seed(seed)
    model = build_model(cfg.model, tuple(data.x_train.shape[1:]), 10)
    layout = ParamLayout(model)
    problem = SupervisedNE(torch.utils.data.TensorDataset(data.x_train, data.y_train), model,
                           torch.nn.CrossEntropyLoss(), minibatch_size=256, common_minibatch=True,
                           num_actors=None, device="cpu")
    s = PGPE_SETTINGS
    searcher = PGPE(problem, popsize=s["popsize"], center_learning_rate=s["lr"], stdev_learning_rate=s["sigma_lr"],
                    stdev_init=s["sigma"], stdev_max_change=s["sigma_max_change"], optimizer="clipup",
                    ranking_method="centered", center_init=layout.flatten(model))
    t0 = time.perf_counter()
    for _ in range(generations):
        searcher.step()
    gen_s = generations / (time.perf_counter() - t0)
    layout.load_into(model, searcher.status["center"].detach().float())
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum())
                      for x, y in zip(data.x_test.split(2000), data.y_test.split(2000)))
    import evotorch
    return {"test_acc": correct / len(data.y_test), "gen_s": gen_s, "version": evotorch.__version__}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default="/work/shared/data")
    p.add_argument("--generations", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=PGPE_SETTINGS["lr"], help="ClipUp's step (max speed twice it)")
    p.add_argument("--name", default="pgpe", help="results file name")
    args = p.parse_args()
    PGPE_SETTINGS["lr"] = args.lr
    load = uptime()
    torch.set_num_threads(args.threads)
    rows = {"EvoTorch PGPE": [], "evoplat PGPE": [], "evoplat OpenAI-ES (Adam)": []}
    version = None
    for seed in args.seeds:
        et = run_evotorch(args.generations, seed, args.data_root)
        if et is not None:
            version = et.pop("version")
            rows["EvoTorch PGPE"].append(et)
            print("evotorch", seed, et, flush=True)
        for name, strategy in (("evoplat PGPE", "pgpe"), ("evoplat OpenAI-ES (Adam)", "openai_es")):
            torch.set_num_threads(args.threads)
            rows[name].append(run_evoplat(strategy, args.generations, seed, args.data_root))
            print(name, seed, rows[name][-1], flush=True)
    lines = [header("PGPE: evoplat against EvoTorch, the same algorithm and initial network on P-ES"),
             f"- load before: `{load}`; torch {torch.__version__}, {args.threads} threads, in-process "
             f"(EvoTorch {version or 'not installed'}, no actors)",
             f"- {args.generations} generations, popsize 256, minibatch 256, seeds {args.seeds}; PGPE: ClipUp step "
             f"{args.lr:g} (max speed {2 * args.lr:g}), sigma 0.02, sigma learning rate 0.1, max sigma change 20%; "
             f"OpenAI-ES as es_mnist.yaml (Adam, lr 0.01) at the same batch", "",
             "| system | MNIST test accuracy per seed | mean | generations/s (median over seeds) |",
             "|---|---|---:|---:|"]
    for name, results in rows.items():
        if not results:
            lines.append(f"| {name} | not installed (`pip install evotorch`) | - | - |")
            continue
        accs = [r["test_acc"] for r in results]
        lines.append(f"| {name} | {', '.join(f'{100 * a:.2f}%' for a in accs)} | {100 * statistics.mean(accs):.2f}% "
                     f"| {statistics.median(r['gen_s'] for r in results):.2f} |")
    write(args.name, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
