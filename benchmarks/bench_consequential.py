"""Benchmark: consequentialism (APA) wrapper vs. the plain base optimizer, MNIST MLP and a small CIFAR CNN.

For every base optimizer (sgd, momentum, nag, rmsprop, adam), with and without the wrapper, and every
seed: train for a few epochs with the trainer's own building blocks (`build_optimizer`,
`platform.backprop.train_epoch`, `evaluate`), record test accuracy after each epoch, the first epoch that
reaches the target accuracy, and the wall time per step. Writes benchmarks/results/consequential.md.

    .venv/bin/python benchmarks/bench_consequential.py --data-root DATA_DIR

Sized for a shared 2-core machine (training subsets, few epochs); see --help for the knobs.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from evoplat.platform.config import build_config
from evoplat.platform.backprop import train_epoch
from evoplat.platform.data import load_dataset
from evoplat.platform.models import build_model
from evoplat.methods.consequential.trainer import build_optimizer, evaluate

OPTIMIZERS = {"sgd": 0.1, "momentum": 0.02, "nag": 0.02, "rmsprop": 1e-3, "adam": 1e-3}


class SmallCNN(nn.Module):
    """3 x (3x3 conv, ReLU, 2x2 max pool) with 8/16/16 channels, then one linear layer (about 6 k weights).

    Not in the model zoo (see the change request in docs/consequential.md); kept tiny so the whole
    benchmark fits the time budget on a shared CPU."""

    def __init__(self, channels=(8, 16, 16), num_classes=10):
        super().__init__()
        layers, c = [], 3
        for out in channels:
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c = out
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(c * 4 * 4, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def task_config(task: str, args):
    if task == "mnist":
        raw = {"data": {"source": "mnist", "val_size": 5000, "train_subset": args.mnist_train},
               "model": {"name": "mlp", "hidden": [128]}}
    else:
        raw = {"data": {"source": "npz", "val_size": args.cifar_val, "train_subset": args.cifar_train,
                        "test_subset": args.cifar_test}}
    raw.update({"algorithm": "consequential", "consequential": {"epochs": args.epochs,
                "batch_size": args.batch_size, "strength": args.strength,
                "mode": args.mode}})
    return build_config(raw)


def make_model(task, cfg, data, init_seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        if task == "mnist":
            return build_model(cfg.model.model_copy(update={"init_seed": init_seed}), data.input_shape, 10)
        return SmallCNN()


def run_one(task, cfg, data, opt_name, enabled, seed):
    ccfg = cfg.consequential.model_copy(update={"optimizer": opt_name, "lr": OPTIMIZERS[opt_name],
                                                "enabled": enabled})
    model = make_model(task, cfg, data, seed)
    optimizer = build_optimizer(model, ccfg)
    accs, step_ms = [], []
    steps = -(-len(data.x_train) // ccfg.batch_size)
    for epoch in range(ccfg.epochs):
        t0 = time.perf_counter()
        train_epoch(model, optimizer, data.x_train, data.y_train, ccfg.batch_size, seed, epoch)
        step_ms.append(1000 * (time.perf_counter() - t0) / steps)
        accs.append(evaluate(model, data, 2000)["test_acc"])
    return {"task": task, "optimizer": opt_name, "wrapper": enabled, "seed": seed, "test_acc": accs,
            "strength": ccfg.strength, "mode": ccfg.mode,
            "step_ms": statistics.median(step_ms)}


def overhead(args):
    """Per-step cost, plain vs wrapped, interleaved step by step so load changes hit both alike.

    CPU time (process_time, 1 thread) is reported next to wall time: on a shared machine it is the
    steadier measure of the work done."""
    import torch.nn.functional as F
    vgg_cfg = build_config({"model": {"name": "vgg16", "width": 0.25}})
    models = {"mnist_mlp_128": (lambda: build_model(task_config("mnist", args).model, (1, 28, 28), 10), (1, 28, 28)),
              "cifar_small_cnn": (SmallCNN, (3, 32, 32)),
              "cifar_vgg16_w0.25_bn": (lambda: build_model(vgg_cfg.model, (3, 32, 32), 10), (3, 32, 32))}
    lines = ["| model | base | plain ms/step wall (cpu) | wrapped ms/step wall (cpu) | overhead (cpu) |",
             "|---|---|---|---|---|"]
    for name, (make, shape) in models.items():
        if name not in args.overhead_models.split(","):
            continue
        for opt_name in args.optimizers.split(","):
            torch.manual_seed(0)
            x, y = torch.randn(args.batch_size, *shape), torch.randint(0, 10, (args.batch_size,))
            runs = {}
            for enabled in (False, True):
                model = make()
                ccfg = task_config("mnist", args).consequential.model_copy(
                    update={"optimizer": opt_name, "lr": OPTIMIZERS[opt_name], "enabled": enabled})
                runs[enabled] = (model, build_optimizer(model, ccfg))
            times = {False: ([], []), True: ([], [])}
            for i in range(args.overhead_steps + 3):
                for enabled, (model, opt) in runs.items():
                    w0, c0 = time.perf_counter(), time.process_time()
                    opt.zero_grad()
                    F.cross_entropy(model(x), y).backward()
                    opt.step()
                    if i >= 3:      # warm-up steps are not timed
                        times[enabled][0].append(1000 * (time.perf_counter() - w0))
                        times[enabled][1].append(1000 * (time.process_time() - c0))
            med = {e: (statistics.median(t[0]), statistics.median(t[1])) for e, t in times.items()}
            lines.append(f"| {name} | {opt_name} | {med[False][0]:.1f} ({med[False][1]:.1f}) | "
                         f"{med[True][0]:.1f} ({med[True][1]:.1f}) | x{med[True][1] / med[False][1]:.2f} |")
            print(lines[-1], flush=True)
    return lines


def epochs_to(accs, target):
    return next((i + 1 for i, a in enumerate(accs) if a >= target), None)


def summarise(results, task, target, epochs):
    lines = [f"| optimizer | wrapper | final test acc (mean ± sd, 3 seeds) | per seed | epochs to {target:.0%} "
             f"(per seed; - = not within {epochs}) | ms/step (median) |", "|---|---|---|---|---|---|"]
    for opt in OPTIMIZERS:
        for enabled in (False, True):
            rs = [r for r in results if r["task"] == task and r["optimizer"] == opt and r["wrapper"] == enabled]
            if not rs:
                continue
            finals = [r["test_acc"][-1] for r in rs]
            sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
            reach = [epochs_to(r["test_acc"], target) for r in rs]
            lines.append(f"| {opt} | {'on' if enabled else 'off'} | {100 * statistics.mean(finals):.2f} ± "
                         f"{100 * sd:.2f} | {', '.join(f'{100 * f:.2f}' for f in finals)} | "
                         f"{', '.join('-' if e is None else str(e) for e in reach)} | "
                         f"{statistics.median(r['step_ms'] for r in rs):.1f} |")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--tasks", default="mnist,cifar10")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--strength", type=float, default=0.9)
    p.add_argument("--mode", default="replace", choices=["replace", "emend"])
    p.add_argument("--wrapper-only", action="store_true", help="Skip the plain-optimizer baselines.")
    p.add_argument("--mnist-train", type=int, default=12000)
    p.add_argument("--cifar-train", type=int, default=4000)
    p.add_argument("--cifar-test", type=int, default=2000)
    p.add_argument("--cifar-val", type=int, default=5000, help="Validation examples (evaluated every epoch).")
    p.add_argument("--mnist-target", type=float, default=0.94)
    p.add_argument("--cifar-target", type=float, default=0.40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/consequential.md")
    p.add_argument("--raw", default="benchmarks/results/consequential_raw.jsonl")
    p.add_argument("--summarise", nargs="+", metavar="RAW_JSONL",
                   help="Only write the tables from raw result files of earlier runs.")
    p.add_argument("--overhead", action="store_true", help="Only measure the per-step overhead.")
    p.add_argument("--overhead-steps", type=int, default=20)
    p.add_argument("--overhead-models", default="mnist_mlp_128,cifar_small_cnn,cifar_vgg16_w0.25_bn")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.overhead:
        lines = overhead(args)
        Path(args.out).write_text("\n".join([f"Per-step overhead, batch {args.batch_size}, {args.threads} thread(s), "
                                              f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, command "
                                              f"`{' '.join(['python'] + sys.argv)}`", ""] + lines) + "\n")
        return
    started = time.time()
    results = []
    raw = Path(args.raw)
    raw.parent.mkdir(parents=True, exist_ok=True)
    if args.summarise:
        results = [json.loads(line) for f in args.summarise for line in Path(f).read_text().splitlines() if line]
        args.tasks = ",".join(dict.fromkeys(r["task"] for r in results))
    for task in ([] if args.summarise else args.tasks.split(",")):
        cfg = task_config(task, args)
        data = load_dataset(cfg.data, args.data_root)
        for seed in range(args.seeds):
            for opt in args.optimizers.split(","):
                for enabled in ((True,) if args.wrapper_only else (False, True)):
                    r = run_one(task, cfg, data, opt, enabled, seed)
                    results.append(r)
                    with raw.open("a") as f:
                        f.write(json.dumps(r) + "\n")
                    print(json.dumps(r), flush=True)
    targets = {"mnist": args.mnist_target, "cifar10": args.cifar_target}
    out = ["# Consequentialism wrapper benchmark (generated by benchmarks/bench_consequential.py)", "",
           f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {platform.node()}, "
           f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
           f"shared with other jobs", f"- command: `{' '.join([sys.executable.split('/')[-1]] + sys.argv)}`",
           f"- wall time of the whole benchmark: {(time.time() - started) / 60:.1f} min",
           f"- learning rates (same with and without the wrapper): {OPTIMIZERS}; strength {args.strength}", ""]
    for task in args.tasks.split(","):
        epochs = max(len(r["test_acc"]) for r in results if r["task"] == task)
        out += [f"## {task}", ""] + summarise(results, task, targets[task], epochs) + [""]
    Path(args.out).write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
