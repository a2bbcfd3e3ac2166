"""Shared by the benchmark scripts: machine description and a results-file writer."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    return (f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.machine()}, Python "
            f"{platform.python_version()}, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}")


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def header(title: str) -> str:
    return (f"## {title}\n\n- date: {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
            f"- machine: {machine()}\n- command: `{command()}`\n")


def write(name: str, text: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    print(text)
    return path


def git_rev(where: Path | None = None) -> str:
    """The short commit of the checkout holding `where` (default: these benchmarks), with "+uncommitted"
    when tracked files under `where` differ from it (what ran is then not that commit)."""
    cwd = where or Path(__file__).parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=cwd).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
                                 capture_output=True, text=True, cwd=cwd).stdout.strip()
    except OSError:
        return "?"
    return rev + ("+uncommitted" if changed else "")


def put_section(name: str, key: str, section: str, earlier: str) -> Path:
    """Put `section` at the top of results/<name>.md between markers named `key`; a later call replaces it.
    The file's older content stays below, under the heading `earlier` (added once)."""
    path = RESULTS / f"{name}.md"
    begin, end = f"<!-- {key}: begin -->", f"<!-- {key}: end -->"
    text = path.read_text() if path.is_file() else f"# {name}\n"
    block = f"{begin}\n{section}\n{end}"
    if begin in text:
        text = text.split(begin)[0] + block + text.split(end, 1)[1]
    else:
        title, _, rest = text.partition("\n")
        text = f"{title}\n\n{block}\n" + (rest if earlier in text else f"\n{earlier}\n{rest}")
    path.write_text(text)
    return path


def alternate(script: str, child_args: list, rounds: int, compare: str | None) -> dict:
    """Run `python script --child *child_args` once per round for this checkout and (`compare`) another
    one, checkouts in alternation, each a fresh process with its checkout first on PYTHONPATH, so both are
    measured in the same sitting on the same machine. Each child prints a JSON object as its last line:
    {checkout name: [one object per round]} ("this checkout", "compared")."""
    if compare and not (Path(compare) / "evoplat").is_dir():
        sys.exit(f"{Path(script).name}: --compare {compare}: no evoplat package there (give a checkout's root)")
    checkouts = [("this checkout", None)] + ([("compared", compare)] if compare else [])
    runs = {name: [] for name, _ in checkouts}
    for _ in range(rounds):
        for name, path in checkouts:
            env = dict(os.environ, **({"PYTHONPATH": str(Path(path).resolve())} if path else {}))
            res = subprocess.run([sys.executable, script, "--child", *child_args], env=env,
                                 capture_output=True, text=True, check=True)
            runs[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(name, runs[name][-1], flush=True)
    return runs


def checkout_table(runs: dict) -> list[str]:
    """Table lines of `alternate`'s runs whose children report ms for "full" and "lowrank": per checkout,
    its commit and the median over rounds [min-max]."""
    lines = ["| checkout | commit | full rank (ms) | low rank r=1 (ms) |", "|---|---|---:|---:|"]
    for name, rs in runs.items():
        lines.append(f"| {name} | {rs[0]['commit']} | {median_range(r['full'] for r in rs)} | "
                     f"{median_range(r['lowrank'] for r in rs)} |")
    return lines


def median_range(values, fmt: str = "{:.2f}") -> str:
    """'median [min-max]' of `values`."""
    import statistics
    values = list(values)
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"
