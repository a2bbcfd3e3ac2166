"""Sweep the hybrid BP/ES schedule with Ray Tune (ASHA by default, PBT with --scheduler pbt).

Locally (a Ray instance starts in-process):
    python experiments/tune_hybrid.py --config experiments/hybrid_cpu.yaml --data-root DATA_DIR/cifar10.npz
On a cluster (the working directory is shipped; Ray connects through RAY_ADDRESS):
    ray job submit --working-dir . -- python experiments/tune_hybrid.py --config experiments/hybrid_cpu.yaml \\
        --data-root /shared/cifar10.npz --storage /shared/tune
Resume an interrupted sweep with the same arguments plus --resume. The search space, samples and
scheduler come from the config's `tune:` section; `--set` overrides any option.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # job working_dir

from evoplat.platform.run.tune import run_tune  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "hybrid_cpu.yaml"))
    p.add_argument("--data-root", default=os.environ.get("EVOPLAT_DATA"))
    p.add_argument("--storage", default="runs/tune", help="Tune storage folder (shared storage on a cluster).")
    p.add_argument("--scheduler", choices=["asha", "pbt", "fifo"], help="Override tune.scheduler.")
    p.add_argument("--num-samples", type=int, help="Override tune.num_samples.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true", help="Resume the interrupted sweep in --storage.")
    args = p.parse_args(argv)
    overrides = list(args.overrides)
    if args.scheduler:
        overrides.append(f"tune.scheduler={args.scheduler}")
    if args.num_samples:
        overrides.append(f"tune.num_samples={args.num_samples}")
    out = run_tune(args.config, overrides, args.data_root, args.storage, args.resume)
    return 0 if out["best_config"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
