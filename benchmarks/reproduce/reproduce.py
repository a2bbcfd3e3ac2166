"""One command per paper: run its headline experiment at the paper's size and print the result lines.

Called by benchmarks/reproduce/<method>.sh (see each script's header for the settings, the expected
wall time and what it prints):

    python benchmarks/reproduce/reproduce.py METHOD [DATA_DIR] [--smoke] [--out DIR]

DATA_DIR holds MNIST/raw (torchvision layout) and cifar10.npz; default $EVOPLAT_DATA. Every run goes
through `evoplat.run` and leaves a run directory under --out (default runs/reproduce/METHOD-<stamp>);
the same command with the same --out reads finished runs back and resumes a cut-short one.
--smoke runs the same plan with tiny settings on synthetic data of the right shape, in-process
(runtime.backend local), in seconds: it checks the plumbing, its numbers mean nothing.

Output: one line per run and one per comparison, each starting with "RESULT <method> ", e.g.
    RESULT rso mnist: test_acc 98.95% (best 99.01%), 50 cycle(s); paper 99.1%
    RESULT hybrid hybrid - backprop: +0.42 points over seeds 0,1,2 (paired); paper +0.61
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
EXP = ROOT / "experiments"

SHAPES = {"mnist": "[1,28,28]", "cifar10": "[3,32,32]"}


@dataclass
class Run:
    label: str
    config: str                                   # file under experiments/
    data: str                                     # mnist | cifar10
    sets: list = field(default_factory=list)      # overrides at full size ("{dir:LABEL}" = that run's directory)
    smoke: list = field(default_factory=list)     # extra overrides with --smoke
    seeds: tuple = (0,)
    paper: str = ""


@dataclass
class Compare:
    a: str
    b: str
    paper: str = ""


# The paper settings (the experiment files hold the rest; see their headers and docs/<method>.md).
PLANS = {
    "rso": ([Run("mnist", "rso_mnist.yaml", "mnist", paper="99.1% after 50 cycles (98% after 5)",
                 smoke=["rso.cycles=1", "rso.trials_per_tensor=2", "rso.batch_size=32"]),
             Run("cifar10", "rso_cifar10.yaml", "cifar10", paper="81.8% after 500 cycles",
                 smoke=["rso.cycles=1", "rso.trials_per_tensor=2", "rso.batch_size=32"])], []),
    "hybrid": ([Run("hybrid", "hybrid_vgg16_cifar10.yaml", "cifar10", seeds=(0, 1, 2),
                    smoke=["model.width=0.0625", "hybrid.epochs=2", "hybrid.es_every=1", "hybrid.es_generations=2",
                           "hybrid.es_popsize=2", "hybrid.batch_size=32", "hybrid.augment=false"]),
                Run("backprop", "hybrid_vgg16_cifar10.yaml", "cifar10", seeds=(0, 1, 2), sets=["hybrid.es_enabled=false"],
                    smoke=["model.width=0.0625", "hybrid.epochs=2", "hybrid.batch_size=32", "hybrid.augment=false"]),
                # the fair control: the ES phases' budget spent by gradient descent on the same images
                Run("control", "hybrid_vgg16_cifar10.yaml", "cifar10", seeds=(0, 1, 2), sets=["hybrid.phase_kind=backprop"],
                    smoke=["model.width=0.0625", "hybrid.epochs=2", "hybrid.es_every=1", "hybrid.es_generations=2",
                           "hybrid.es_popsize=2", "hybrid.batch_size=32", "hybrid.augment=false"])],
               [Compare("hybrid", "backprop", "+0.61 (VGG16, CIFAR-10, mean over runs)"),
                Compare("hybrid", "control", "no control in the paper: ES vs gradient descent on the same images")]),
    "rec_lra": ([Run("mnist_mlp", "rec_lra_mnist_long.yaml", "mnist", paper="98.18% (MLP)",
                     smoke=["rec_lra.epochs=2", "model.hidden=[16,16,16]", "rec_lra.population=[{seed: 0}, "
                            "{seed: 0, rec_lra.mode: backprop}]"]),
                 Run("cifar10_resnet20", "rec_lra_cifar10.yaml", "cifar10", paper="93.88% (ResNet, as cited)",
                     sets=["rec_lra.resnet_blocks=3", "model.width=1.0", "rec_lra.epochs=100", "rec_lra.augment=true",
                           "rec_lra.population=[{seed: 0}, {seed: 1}, {seed: 2}, {seed: 0, rec_lra.mode: backprop}, "
                           "{seed: 1, rec_lra.mode: backprop}, {seed: 2, rec_lra.mode: backprop}]"],
                     smoke=["rec_lra.resnet_blocks=1", "model.width=0.25", "rec_lra.epochs=1", "rec_lra.augment=false",
                            "rec_lra.population=[{seed: 0}, {seed: 0, rec_lra.mode: backprop}]"])], []),
    "consequential": ([Run("mnist", "consequential_mnist.yaml", "mnist", seeds=(0, 1, 2),
                           smoke=["consequential.epochs=1", "model.hidden=[16]"]),
                       Run("mnist_sgd", "consequential_mnist.yaml", "mnist", seeds=(0, 1, 2),
                           sets=["consequential.enabled=false"], smoke=["consequential.epochs=1", "model.hidden=[16]"]),
                       Run("cifar10", "consequential_cifar10.yaml", "cifar10", seeds=(0, 1, 2),
                           smoke=["consequential.epochs=1", "model.width=0.0625", "consequential.augment=false"]),
                       Run("cifar10_sgd", "consequential_cifar10.yaml", "cifar10", seeds=(0, 1, 2),
                           sets=["consequential.enabled=false"],
                           smoke=["consequential.epochs=1", "model.width=0.0625", "consequential.augment=false"])],
                      [Compare("mnist", "mnist_sgd", "no numbers in the abstract ('useful')"),
                       Compare("cifar10", "cifar10_sgd", "no numbers in the abstract ('useful')")]),
    "grad_instructor": (
        [Run("rl", "grad_instructor_mnist.yaml", "mnist",
             sets=["grad_instructor.rl_updates=100", "grad_instructor.episodes_per_update=8",
                   "grad_instructor.final_deploy=false", "run.checkpoint_every=1"],
             smoke=["grad_instructor.rl_updates=1", "grad_instructor.episodes_per_update=2", "model.hidden=[8]"])]
        + [Run(m, "grad_instructor_mnist_deploy.yaml", "mnist", seeds=(0, 1, 2, 3, 4), sets=s,
               paper={"enn": "93.02%", "plain": "about 90.2%", "l1": "about 90.2%", "he": "comparable to 93.02%"}[m],
               smoke=["model.hidden=[8]"])
           for m, s in (("plain", []), ("l1", ["grad_instructor.l1=0.0001"]), ("he", ["grad_instructor.init=he"]),
                        ("enn", ["grad_instructor.enn_checkpoint={dir:rl}"]))],
        [Compare("enn", "plain", "+2.8"), Compare("enn", "l1", "+2.8"), Compare("enn", "he", "about 0")]),
    "es": ([Run("mnist", "es_mnist.yaml", "mnist", smoke=["es.generations=2", "es.popsize=8", "model.hidden=[8]",
                                                          "run.eval_every=1"]),
            Run("cartpole", "es_cartpole.yaml", "none", paper="solved = mean return >= 475 over 100 episodes",
                smoke=["es.generations=1", "es.popsize=4", "fitness.kwargs.eval_episodes=2", "run.eval_every=1"])], []),
}


def data_sets(run: Run, data_dir: str, smoke: bool) -> list[str]:
    if run.data == "none":
        return []
    if smoke:
        return ["data.source=synthetic", "data.root=null", f"data.synthetic_shape={SHAPES[run.data]}",
                "data.synthetic_classes=10", "data.synthetic_train=192", "data.synthetic_test=64",
                "data.train_subset=null", "data.test_subset=null"] + (["data.val_size=32"] if "rso" not in run.config else [])
    return [f"data.root={Path(data_dir) / ('cifar10.npz' if run.data == 'cifar10' else '')}"]


def final_accs(result) -> dict:
    """{member or None: (last test_acc, best test_acc, steps)} from the run's metrics."""
    df = result.metrics
    key = "test_return" if "test_return" in df and df["test_return"].notna().any() else "test_acc"
    df = df[df[key].notna()]
    groups = df.groupby("member") if "member" in df else [(None, df)]
    return {m: (float(g[key].iloc[-1]), float(g[key].max()), int(g["step"].max())) for m, g in groups}, key


def run_or_resume(config: Path, run_dir: Path, sets: list, smoke: bool):
    """A finished run is read back, a cut-short one continues from its checkpoint (same --out)."""
    import evoplat
    from evoplat.api import RunResult
    from evoplat.platform.config import load_config
    if not smoke and (run_dir / "summary.json").is_file():
        return RunResult(run_dir, json.loads((run_dir / "summary.json").read_text()),
                         load_config(run_dir / "config.yaml"))
    ckpt = run_dir / "checkpoints"
    if not smoke and ckpt.is_dir() and any(ckpt.iterdir()):
        return evoplat.run(resume=run_dir)
    return evoplat.run(config, run_dir=run_dir, overrides=sets, overwrite=smoke)


def run_plan(method: str, data_dir: str, smoke: bool, out: Path) -> int:
    runs, compares = PLANS[method]
    dirs, accs = {}, {}
    for run in runs:
        for seed in (run.seeds[:2] if smoke else run.seeds):
            name = f"{run.label}-seed{seed}" if len(run.seeds) > 1 else run.label
            sets = [s.replace("{dir:rl}", str(dirs.get("rl", ""))) for s in run.sets]
            sets += [f"seed={seed}", f"model.init_seed={seed}"] if len(run.seeds) > 1 else []
            sets += data_sets(run, data_dir, smoke)
            if smoke:
                sets += run.smoke + ["runtime.backend=local", "run.torch_threads=1"]
            result = run_or_resume(EXP / run.config, out / name, sets, smoke)
            dirs[run.label] = result.run_dir
            finals, key = final_accs(result)
            # a grad_instructor deploy run's steps are epochs, though its summary names the RL unit
            unit = "epoch" if method == "grad_instructor" and run.label != "rl" else result.summary.get("unit", "step")
            if run.label == "rl":
                print(f"RESULT {method} {run.label}: {result.summary.get('steps')} {unit}(s) done, ENN in "
                      f"{result.run_dir / 'enn.pt'}; centre ENN episode {key} {100 * finals[None][0]:.2f}%", flush=True)
                continue
            for member, (last, best, steps) in finals.items():
                tag = name if member is None else f"{name} member {member}"
                val = f"{last:.1f}" if key == "test_return" else f"{100 * last:.2f}% (best {100 * best:.2f}%)"
                print(f"RESULT {method} {tag}: {key} {val}, {steps} {unit}(s)"
                      + (f"; paper {run.paper}" if run.paper else ""), flush=True)
                accs.setdefault(run.label, {})[(seed, member)] = last
    for c in compares:
        a, b = accs.get(c.a, {}), accs.get(c.b, {})
        keys = sorted(set(a) & set(b), key=str)
        d = [100 * (a[k] - b[k]) for k in keys]
        sd = f" ± {statistics.stdev(d):.2f} (sd)" if len(d) > 1 else ""
        print(f"RESULT {method} {c.a} - {c.b}: {statistics.mean(d):+.2f}{sd} points over seeds "
              f"{','.join(str(k[0]) for k in keys)} (paired); paper {c.paper or '?'}", flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", choices=sorted(PLANS))
    p.add_argument("data_dir", nargs="?", default=os.environ.get("EVOPLAT_DATA"))
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if not args.smoke and not args.data_dir:
        p.error("give DATA_DIR or set EVOPLAT_DATA (a folder with MNIST/raw and cifar10.npz)")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or ROOT / "runs" / "reproduce" / f"{args.method}{'-smoke' if args.smoke else ''}-{stamp}")
    if args.smoke:
        import torch
        torch.set_num_threads(1)
    return run_plan(args.method, args.data_dir, args.smoke, out)


if __name__ == "__main__":
    sys.exit(main())
