"""CPU cost of the reproduce scripts' full-size runs, measured on small slices and extrapolated.

Each probe runs a full-size experiment of benchmarks/reproduce/reproduce.py (same network, batch size,
population) through `evoplat.run` in this process (runtime.backend local, 1 torch thread) on a slice of
the data, twice with different slice sizes; a logger records the process CPU time of every step. The
step cost is fitted as a + b * size (b: CPU seconds per training image, per RSO trial or per episode;
a: evaluation and other fixed work, scaled by the evaluation images) and extrapolated to the paper's
size. Results: benchmarks/reproduce/throughput.md.

    python benchmarks/reproduce/measure.py --data-dir /work/shared/data [--only rso_mnist ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
EXP = ROOT / "experiments"


class StepCPU:
    """Loader-side logger: CPU seconds of this process per reported step (the first row of a step)."""

    def __init__(self):
        self.marks, self.steps = None, {}

    def start(self, step, budget, unit):
        self.marks = time.process_time()

    def __call__(self, row):
        s = int(row.get("step", 0))
        if s not in self.steps:
            now = time.process_time()
            self.steps[s] = (now - self.marks, row)
            self.marks = now


def run(config: str, sets: list[str], data_root: str) -> StepCPU:
    import evoplat
    log = StepCPU()
    with tempfile.TemporaryDirectory() as tmp:
        evoplat.run(EXP / config, run_dir=Path(tmp) / "r", loggers=[log], data_root=data_root,
                    overrides=sets + ["runtime.backend=local", "run.torch_threads=1", "run.checkpoint_every=1000"])
    return log


def fit(x1, y1, x2, y2) -> tuple[float, float]:
    b = (y2 - y1) / (x2 - x1)
    return y1 - b * x1, b


def epoch_probe(config, sets, data_root, n1, n2, n_train, n_eval, small_eval, epochs, unit_sets):
    """Per-epoch methods: one epoch on n1 and on n2 training images, evaluation on small_eval images."""
    ys = []
    for n in (n1, n2):
        log = run(config, sets + [f"data.train_subset={n}"] + unit_sets, data_root)
        ys.append(sum(c for c, _ in log.steps.values()))
    a, b = fit(n1, ys[0], n2, ys[1])
    per_epoch = b * n_train + max(a, 0.0) * n_eval / small_eval
    return {"cpu_s_small": ys, "slope_s_per_image": b, "intercept_s": a, "epoch_cpu_s": per_epoch,
            "total_cpu_h": per_epoch * epochs / 3600}


def probes(data_dir: str) -> dict:
    mnist, cifar = data_dir, str(Path(data_dir) / "cifar10.npz")
    small = ["data.val_size=200", "data.test_subset=200"]
    return {
        "hybrid_vgg16": lambda: epoch_probe(
            # backprop and evaluation; the ES phases (every 10th epoch: one forward pass over the 5,000 validation
            # images to cache features, then 100 classifier-only evaluations) are not in the estimate
            "hybrid_vgg16_cifar10.yaml", small + ["hybrid.epochs=1", "hybrid.es_enabled=false"], cifar, 64, 192,
            45000, 15000, 400, 100 * 9, []),   # 3 seeds each: hybrid, backprop, control
        "rec_lra_resnet20": lambda: epoch_probe(
            "rec_lra_cifar10.yaml", small + ["rec_lra.resnet_blocks=3", "model.width=1.0", "rec_lra.epochs=1",
                                             "rec_lra.augment=true", "rec_lra.population=[]"], cifar, 64, 192, 45000,
            15000, 400, 100 * 6, []),   # 3 rec-LRA + 3 backprop members, all counted at rec-LRA's cost
        "consequential_mnist": lambda: epoch_probe(
            "consequential_mnist.yaml", small + ["consequential.epochs=1"], mnist, 500, 1500, 55000, 15000, 400,
            10 * 6, []),   # 3 seeds with and 3 without the consequential update, all at its cost
        "consequential_cifar10": lambda: epoch_probe(
            "consequential_cifar10.yaml", small + ["consequential.epochs=1"], cifar, 64, 192, 45000, 15000, 400,
            30 * 6, []),
        "grad_instructor_episode": lambda: gi_probe(mnist),
        "es_mnist": lambda: gen_probe("es_mnist.yaml", ["es.generations=3", "run.eval_every=1000"], mnist, 300),
        "es_cartpole": lambda: gen_probe("es_cartpole.yaml", ["es.generations=3", "run.eval_every=1000",
                                                             "run.target_metric=null"], None, 100),
        "rso_mnist": lambda: rso_probe("rso_mnist.yaml", mnist, cycles=50, ks=(2, 6)),
        "rso_cifar10": lambda: rso_probe("rso_cifar10.yaml", cifar, cycles=500, ks=(1, 3)),
    }


def rso_probe(config, data_root, cycles, ks) -> dict:
    """Per layer group: CPU = a_g + b_g * trials; a full cycle visits every scalar of the group once."""
    from evoplat.platform.config import load_config
    from evoplat.platform.data import load_dataset
    from evoplat.platform.models import build_model
    from evoplat.methods.rso.plan import visiting_order
    # 10,000 training images keep the per-group activation caching cheap; it is fixed work per group and
    # small against a full cycle's trials (every trial evaluates 3 candidates on a 5,000-image batch either way)
    logs = [run(config, ["rso.cycles=1", f"rso.trials_per_tensor={k}", "data.train_subset=10000"], data_root)
            for k in ks]
    cfg = load_config(EXP / config, [f"data.root={data_root}"])
    data = load_dataset(cfg.data, data_root)
    net = build_model(cfg.model, data.input_shape, data.num_classes)
    numel: dict = {}
    for spec in visiting_order(net):
        numel[spec.group] = numel.get(spec.group, 0) + spec.numel
    groups = sorted(numel, reverse=True)             # the visiting order: FC first, then blocks top-down
    cycle = 0.0
    for i, g in enumerate(groups):
        (c1, r1), (c2, r2) = logs[0].steps[i + 1], logs[1].steps[i + 1]
        a, b = fit(r1["trials"], c1, r2["trials"], c2)
        cycle += max(a, 0.0) + b * numel[g]
    return {"params": sum(numel.values()), "cycle_cpu_s": cycle, "total_cpu_h": cycle * cycles / 3600,
            "small_cpu_s": [sum(c for c, _ in lg.steps.values()) for lg in logs]}


def gi_probe(data_root) -> dict:
    """One RL update of 2 (and of 4) full-size episodes: CPU seconds per episode."""
    ys = []
    for n in (2, 4):
        log = run("grad_instructor_mnist.yaml", ["grad_instructor.rl_updates=1", f"grad_instructor.episodes_per_update={n}",
                                                 "grad_instructor.eval_center=false",
                                                 "grad_instructor.final_deploy=false"], data_root)
        ys.append(sum(c for c, _ in log.steps.values()))
    a, b = fit(2, ys[0], 4, ys[1])
    # the reproduce plan: 100 updates x (8 + 1 centre) episodes, then 20 deploy runs of one episode's size
    return {"episode_cpu_s": b, "update_overhead_s": a, "total_cpu_h": (100 * (9 * b + max(a, 0)) + 20 * b) / 3600}


def gen_probe(config, sets, data_root, generations) -> dict:
    log = run(config, sets, data_root)
    per = [c for _, (c, _) in sorted(log.steps.items())][1:] or [c for c, _ in log.steps.values()]
    g = sum(per) / len(per)
    return {"generation_cpu_s": g, "total_cpu_h": g * generations / 3600}


SCRIPTS = {"rso": ["rso_mnist", "rso_cifar10"], "hybrid": ["hybrid_vgg16"],
           "rec_lra": ["rec_lra_mnist_mlp", "rec_lra_resnet20"],
           "consequential": ["consequential_mnist", "consequential_cifar10"],
           "grad_instructor": ["grad_instructor_episode"], "es": ["es_mnist", "es_cartpole"]}
PARALLEL = {"rec_lra", "grad_instructor", "es"}     # their work items run on the worker pool


def report(path: str, extra: list[str]) -> str:
    """Markdown: per probe and per script, single-core CPU hours extrapolated to the paper's size."""
    rows = {}
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        rows[r["probe"]] = r
    for e in extra:                 # NAME=HOURS measured elsewhere (e.g. a full run's CPU seconds per epoch)
        k, v = e.split("=")
        rows[k] = {"probe": k, "total_cpu_h": float(v), "note": "from a full-size run"}
    lines = ["| probe | measured | single-core CPU hours at full size |", "|---|---|---|"]
    for k, r in rows.items():
        detail = ", ".join(f"{n}={v:.4g}" for n, v in r.items() if isinstance(v, float) and n not in
                           ("total_cpu_h", "wall_s", "load_avg"))
        lines.append(f"| {k} | {r.get('note') or detail} | {r['total_cpu_h']:.2f} |")
    lines += ["", "| script | single-core CPU hours | estimated wall hours, idle 2-core machine |", "|---|---|---|"]
    for script, probes_ in SCRIPTS.items():
        if all(p in rows for p in probes_):
            h = sum(rows[p]["total_cpu_h"] for p in probes_)
            lines.append(f"| {script}.sh | {h:.1f} | {h / (2 if script in PARALLEL else 1):.1f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("EVOPLAT_DATA"))
    p.add_argument("--only", nargs="+")
    p.add_argument("--out", default=str(ROOT / "runs" / "reproduce_measure.jsonl"))
    p.add_argument("--report", action="store_true", help="print the markdown tables of --out")
    p.add_argument("--add", nargs="*", default=[], help="report: NAME=CPU_HOURS measured by a full-size run")
    args = p.parse_args()
    if args.report:
        print(report(args.out, args.add))
        return 0
    import torch
    torch.set_num_threads(1)
    for name, probe in probes(args.data_dir).items():
        if args.only and name not in args.only:
            continue
        t0 = time.time()
        res = {"probe": name, **probe(), "wall_s": time.time() - t0, "load_avg": os.getloadavg()[0],
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        print(json.dumps(res), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
