"""Command line: `evoplat run`, `evoplat tune`, `evoplat report`, `evoplat options`.

Everything that can be checked (the config, the dataset's presence, the run directory, a checkpoint)
is checked before Ray starts; a problem is reported as one line naming it, with exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evoplat.api import UsageError
from evoplat.platform.config import ConfigError, describe_options


def _add_run_parser(sub):
    p = sub.add_parser("run", help="Run one experiment from a YAML config.",
                       description="Run one experiment. The run directory receives config.yaml, "
                                   "metrics.parquet, checkpoints/, summary.json and (for methods that "
                                   "train one network) model.pt.")
    p.add_argument("config", nargs="?", help="Experiment YAML (optional with --resume).")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="Override an option; dotted keys reach nested sections (es.popsize=512). Repeatable.")
    p.add_argument("--data-root", help="Dataset folder (or .npz file); default $EVOPLAT_DATA, else "
                                       "~/.cache/evoplat/data.")
    p.add_argument("--run-dir", help="Run directory (default runs/<name>-<timestamp>).")
    p.add_argument("--resume", metavar="RUN_DIR", help="Continue the run in RUN_DIR from its last checkpoint.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing run directory.")
    p.add_argument("--quiet", action="store_true", help="No progress bar or lines.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evoplat", description="Population and evolutionary training of "
                                     "PyTorch networks on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    t = sub.add_parser("tune", help="Sweep an experiment's options with Ray Tune.",
                       description="Sweep with Ray Tune; the search space and scheduler come from the "
                                   "config's `tune:` section (see docs/tune.md).")
    t.add_argument("config")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--data-root")
    t.add_argument("--storage", help="Tune storage folder (default runs/tune).")
    t.add_argument("--resume", action="store_true", help="Resume an interrupted experiment in --storage.")
    r = sub.add_parser("report", help="Summarise a run directory and plot its learning curves.")
    r.add_argument("run_dir")
    r.add_argument("--tensorboard", action="store_true", help="Print the command that opens the run's "
                                                               "TensorBoard event files.")
    o = sub.add_parser("options", help="List every config option with its default and meaning.")
    o.add_argument("--section", help="Only options under this section (e.g. es).")
    return parser


class _Announce:
    """A logger that prints one line when the run loop starts stepping."""

    def __init__(self, line: str):
        self.line = line

    def start(self, step: int, budget: int, unit: str) -> None:
        print(self.line, flush=True)

    def __call__(self, row: dict) -> None:
        pass


def cmd_run(args) -> int:
    from evoplat.api import execute, prepare
    from evoplat.platform.run.loggers import console_logger

    prepared = prepare(args.config, args.run_dir, args.resume, args.overrides, args.data_root, args.overwrite)
    cfg = prepared.cfg
    loggers = console_logger(cfg, quiet=args.quiet)
    # Announced once setup (data, workers) has succeeded: a run that cannot start leaves no directory,
    # and its one error line should not follow a line naming that directory.
    announce = _Announce(f"evoplat: {cfg.algorithm} run in {prepared.run.path}"
                         + (" (resumed)" if prepared.state else ""))
    result = execute(prepared, [announce, *loggers], args.data_root)
    acc = result.summary.get("test_acc")
    if acc is not None:
        print(f"final test accuracy: {100 * acc:.2f}%")
    print(f"run directory: {result.run_dir.resolve()}")
    if (result.run_dir / "model.pt").is_file():
        print(f"trained network: evoplat.load_model({str(result.run_dir.resolve())!r})")
    return 0


def cmd_report(args) -> int:
    from evoplat.platform.run.report import report
    if not (Path(args.run_dir) / "metrics.parquet").is_file():
        raise UsageError(f"report error: no metrics.parquet in {args.run_dir}")
    if args.tensorboard:
        if not (Path(args.run_dir) / "tensorboard").is_dir():
            raise UsageError(f"report error: no tensorboard/ in {args.run_dir} (run.tensorboard was off)")
        from evoplat.platform.run.report import tensorboard_command
        print(tensorboard_command(args.run_dir))
        return 0
    report(args.run_dir)
    return 0


def cmd_tune(args) -> int:
    from evoplat.platform.run.tune import run_tune_cli
    return run_tune_cli(args)


def cmd_options(args) -> int:
    for line in describe_options():
        if not args.section or line.startswith(args.section + "."):
            print(line)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"run": cmd_run, "report": cmd_report, "tune": cmd_tune, "options": cmd_options}
    from evoplat.platform.data import DataError
    from evoplat.platform.registry import RegistryError
    from evoplat.platform.run.rundir import CheckpointError, RunDirError
    from evoplat.platform.runtime.cluster import ClusterError
    try:
        return handlers[args.command](args)
    except (ConfigError, UsageError, DataError, RunDirError, CheckpointError, RegistryError, ClusterError) as err:
        # one line, whatever the message holds (a path or a library's error text may span lines)
        print("evoplat: " + " ".join(s.strip() for s in str(err).splitlines() if s.strip()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
