"""Command line: `evoplat run`, `evoplat tune`, `evoplat report`, `evoplat options`.

Everything that can be checked (the config, the dataset's presence, the run directory, a checkpoint)
is checked before Ray starts; a problem is reported as one line naming it, with exit code 2.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path

from .config import ConfigError, describe_options, load_config, to_yaml


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2, nothing touched."""


def _add_run_parser(sub):
    p = sub.add_parser("run", help="Run one experiment from a YAML config.",
                       description="Run one experiment. The run directory receives config.yaml, "
                                   "metrics.parquet, checkpoints/ and summary.json.")
    p.add_argument("config", nargs="?", help="Experiment YAML (optional with --resume).")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Override an option; dotted keys reach nested sections (es.popsize=512). Repeatable.")
    p.add_argument("--data-root", help="Dataset folder (or .npz file); default $EVOPLAT_DATA, else "
                                       "~/.cache/evoplat/data.")
    p.add_argument("--run-dir", help="Run directory (default runs/<name>-<timestamp>).")
    p.add_argument("--resume", metavar="RUN_DIR", help="Continue the run in RUN_DIR from its last checkpoint.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing run directory.")
    p.add_argument("--quiet", action="store_true", help="No progress lines.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evoplat", description="Population and evolutionary training of "
                                     "PyTorch networks on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    t = sub.add_parser("tune", help="Sweep an experiment's options with Ray Tune.",
                       description="Sweep with Ray Tune; the search space and scheduler come from the "
                                   "config's `hybrid.tune` section (see experiments/tune_hybrid.py).")
    t.add_argument("config")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--data-root")
    t.add_argument("--storage", help="Tune storage folder (default runs/tune).")
    t.add_argument("--resume", action="store_true", help="Resume an interrupted experiment in --storage.")
    r = sub.add_parser("report", help="Summarise a run directory and plot its learning curves.")
    r.add_argument("run_dir")
    o = sub.add_parser("options", help="List every config option with its default and meaning.")
    o.add_argument("--section", help="Only options under this section (e.g. es).")
    return parser


def default_run_dir(name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-{stamp}"


def prepare_run(args):
    """Validate everything and return (cfg, run directory, resume state) without starting any work."""
    from .core.data import check_available
    from .core.results import RunDirectory

    if args.resume:
        run = RunDirectory.open_existing(args.resume)
        cfg = load_config(run.path / "config.yaml", args.overrides)
        state = run.load_latest()
        if state is None:
            raise UsageError(f"resume error: {run.path} has no checkpoint to resume from")
        if state.get("algorithm") != cfg.algorithm:
            raise UsageError(f"resume error: checkpoint in {run.path} is for '{state.get('algorithm')}', "
                             f"config says '{cfg.algorithm}'")
        check_available(cfg.data, args.data_root)
        run.truncate("step", int(state["step"]))
        return cfg, run, state
    if not args.config:
        raise UsageError("usage error: give a CONFIG.yaml (or --resume RUN_DIR)")
    cfg = load_config(args.config, args.overrides)
    check_available(cfg.data, args.data_root)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg.name or "run")
    RunDirectory.check_new(run_dir, args.overwrite)
    run = RunDirectory.create(run_dir, to_yaml(cfg), overwrite=args.overwrite)
    return cfg, run, None


def cmd_run(args) -> int:
    import torch

    from .trainers import get_trainer
    from .trainers.context import ConsoleLogger, RunContext

    cfg, run, state = prepare_run(args)
    if cfg.run.torch_threads:
        torch.set_num_threads(cfg.run.torch_threads)
    loggers = [] if args.quiet else [ConsoleLogger(cfg.run.log_every)]
    ctx = RunContext(cfg, run, args.data_root, state, loggers,
                     elapsed_before=float(state.get("wall_time", 0.0)) if state else 0.0)
    print(f"evoplat: {cfg.algorithm} run in {run.path}" + (" (resumed)" if state else ""), flush=True)
    summary = get_trainer(cfg.algorithm).train(ctx)
    run.flush()
    run.write_summary(summary)
    acc = summary.get("test_acc")
    if acc is not None:
        print(f"final test accuracy: {100 * acc:.2f}%")
    print(f"run directory: {run.path.resolve()}")
    return 0


def cmd_report(args) -> int:
    from .report import report
    if not (Path(args.run_dir) / "metrics.parquet").is_file():
        raise UsageError(f"report error: no metrics.parquet in {args.run_dir}")
    report(args.run_dir)
    return 0


def cmd_tune(args) -> int:
    from .trainers.tune import run_tune_cli
    return run_tune_cli(args)


def cmd_options(args) -> int:
    for line in describe_options():
        if not args.section or line.startswith(args.section + "."):
            print(line)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "report": cmd_report, "tune": cmd_tune, "options": cmd_options}
    from .core.data import DataError
    from .core.results import CheckpointError, RunDirError
    try:
        return handlers[args.command](args)
    except (ConfigError, UsageError, DataError, RunDirError, CheckpointError) as err:
        print(f"evoplat: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
