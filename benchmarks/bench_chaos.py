"""Chaos: ES runs on a real multi-node Ray cluster, disturbed at random generations, against an
undisturbed run of the same config on the same cluster.

The cluster is cluster/local_cluster.sh on private ports and a private state dir: a head with no CPUs
plus 3 one-CPU worker nodes, each `ray start` in its own session. Every driver is an `evoplat run`
process connected with RAY_ADDRESS (as a job's driver is) in a session of its own.
- A, worker node killed: once the run's checkpoint of generation g exists (g drawn by a seeded RNG), one
  worker node that hosts a worker actor is SIGKILLed: the process group of its `ray start` and the worker
  processes Ray puts in process groups of their own inside that node's session, i.e. every process of
  the node, as when a machine is lost. The run carries on on its own; afterwards the node is started
  again (`local_cluster.sh restart-node K`) so the next run meets 3 nodes again.
- B, driver killed: once checkpoint g exists the driver's process group is SIGKILLed, then
  `evoplat run --resume RUN_DIR` (a new process) finishes the run.
Per run: is the final checkpoint's strategy.center torch.equal to the reference's; wall time (first
driver start to last driver exit); time lost = wall time - the reference's wall time. Undisturbed
repeats (U) between the disturbed runs show how much wall times move without any fault.

While timing, the machine's long background runs (/work/tools/longruns.pids) are paused with SIGSTOP
and continued afterwards, also on Ctrl-C, SIGTERM, or (through a watchdog process) a SIGKILL of this
script. Writes benchmarks/results/chaos.md.

    python benchmarks/bench_chaos.py [--runs 5] [--generations 30] [--data-root DIR] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from _common import header, write  # noqa: E402

BIN = Path(sys.executable).parent
SCRIPT = REPO / "cluster" / "local_cluster.sh"
LONGRUNS = Path("/work/tools/longruns.pids")
WORKER_NODES = 3


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def proc_stat(pid: int):
    """(state, session id) of a live process, or None once it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in "ZX" else (fields[0], int(fields[3]))


def session_pids(sid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            st = proc_stat(int(p.name))
            if st and st[1] == sid:
                out.append(int(p.name))
    return out


def wait_gone(pids: list[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(proc_stat(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def hosts_worker(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::HostActor")
    except OSError:
        return False


class Cluster:
    """cluster/local_cluster.sh with private ports and state dir; only what it started is touched."""

    def __init__(self, ports: dict):
        self.state = Path(tempfile.mkdtemp(prefix="evc-", dir="/tmp"))  # short: unix socket paths
        self.env = dict(os.environ, EVOPLAT_CLUSTER_DIR=str(self.state), EVOPLAT_HEAD_CPUS="0",
                        EVOPLAT_WORKER_CPUS="1", PATH=f"{BIN}:{os.environ['PATH']}", RAY=str(BIN / "ray"), **ports)
        for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            self.env.pop(var, None)
        self.client = dict(self.env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.state / "auth_token"),
                           RAY_ADDRESS=f"127.0.0.1:{ports['EVOPLAT_RAY_PORT']}")
        self.api = f"http://127.0.0.1:{ports['EVOPLAT_DASHBOARD_PORT']}"

    def script(self, *args: str) -> None:
        subprocess.run([str(SCRIPT), *args], env=self.env, check=True, timeout=900)

    def node_pid(self, k: int) -> int:
        return int((self.state / f"worker{k}.pid").read_text())

    def nodes_hosting_workers(self) -> list[int]:
        return [k for k in range(1, WORKER_NODES + 1)
                if any(hosts_worker(p) for p in session_pids(self.node_pid(k)))]

    def kill_node(self, k: int, pids: list[int]) -> list[int]:
        """SIGKILL node k: `pids` (its processes, listed beforehand so that the kill itself is quick),
        then whatever else turned up in its session meanwhile; returns all it signalled."""
        sid = self.node_pid(k)
        os.killpg(sid, signal.SIGKILL)              # `ray start`, raylet, agents...
        for p in pids + session_pids(sid):          # ...and the workers in process groups of their own
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return session_pids(sid) + pids

    def alive_workers(self) -> int:
        out = subprocess.run([str(BIN / "ray"), "list", "nodes", "--format", "json", "--address", self.api],
                             env=self.client, capture_output=True, text=True, timeout=300).stdout
        try:
            return sum(n["state"] == "ALIVE" and not n.get("is_head_node") for n in json.loads(out))
        except ValueError:
            return -1

    def wait_full(self, timeout: float = 600) -> None:
        """Until the GCS sees exactly the 3 worker nodes alive (a killed node marked dead, its
        replacement registered): every run starts on the same cluster."""
        deadline = time.monotonic() + timeout
        while (n := self.alive_workers()) != WORKER_NODES:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster has {n} live worker nodes, expected {WORKER_NODES}")
            time.sleep(2)


class Driver:
    """One `evoplat run` process in a session of its own (a kill takes it and all it started)."""
    live: set = set()

    def __init__(self, cluster: Cluster, args: list[str], log: Path):
        self.log = log.open("a")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "evoplat", "run", *args, "--quiet"], env=cluster.client,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
        Driver.live.add(self)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait()

    def wait(self, timeout: float = 3600) -> float:
        """Exit code checked by the caller; returns this driver's wall time."""
        self.proc.wait(timeout=timeout)
        self.log.close()
        Driver.live.discard(self)
        return time.monotonic() - self.t0


def latest_step(run_dir: Path) -> int:
    steps = [int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*.pt")]
    return max(steps, default=0)


def wait_for_step(run_dir: Path, g: int, driver: Driver) -> bool:
    while latest_step(run_dir) < g:
        if driver.proc.poll() is not None:
            return False
        time.sleep(0.01)
    return True


def generation_times(run_dir: Path) -> dict:
    """{generation: seconds since the previous generation's row} from metrics.parquet, and the pool
    retries of each generation's row."""
    import pyarrow.parquet as pq
    if not (run_dir / "metrics.parquet").is_file():
        return {}
    rows = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    return {b["generation"]: (b["wall_time"] - a["wall_time"], b["retries"]) for a, b in zip(rows, rows[1:])}


def final_center(run_dir: Path):
    from evoplat.platform.run.rundir import RunDirectory
    state = RunDirectory(run_dir).load_latest()
    return None if state is None else state["strategy"]["center"]


def compare(center, ref) -> tuple[bool, float]:
    import torch
    if center is None:
        return False, float("nan")
    return bool(torch.equal(center, ref)), float((center - ref).abs().max())


def config_yaml(args) -> str:
    if args.data_root:
        data = "{source: mnist, download: false, val_size: 5000}"
    else:
        data = ("{source: synthetic, synthetic_shape: [1, 28, 28], synthetic_classes: 10, synthetic_train: 12000, "
                "synthetic_test: 2000, val_size: 2000}")
    return (f"algorithm: es\nname: chaos\nseed: {args.run_seed}\ndata: {data}\n"
            f"model: {{name: mlp, hidden: [{args.hidden}]}}\n"
            f"runtime: {{num_workers: 2, chunk_size: 16, cpus_per_worker: 1}}\n"
            f"run: {{eval_every: {args.generations}, checkpoint_every: 1, log_every: 1, tensorboard: false}}\n"
            f"es: {{popsize: {args.popsize}, generations: {args.generations}, sigma: 0.05, lr: 0.02, "
            f"batch_size: {args.batch_size}}}\n")


class Bench:
    def __init__(self, args, cluster: Cluster, work: Path):
        self.args, self.cluster, self.work = args, cluster, work
        self.cfg = work / "es.yaml"
        self.cfg.write_text(config_yaml(args))
        self.data = ["--data-root", args.data_root] if args.data_root else []
        self.ref = None
        self.ref_times: dict = {}

    def fresh(self, name: str, extra=()) -> tuple[Driver, Path]:
        run_dir = self.work / name
        return Driver(self.cluster, [str(self.cfg), "--run-dir", str(run_dir), *self.data, *extra],
                      self.work / f"{name}.log"), run_dir

    def finished(self, driver: Driver, name: str, row=None) -> float:
        """The driver's wall time once it exits; a failure is noted in the run's row (a disturbed run that
        fails is a result), or raised for an undisturbed one."""
        wall = driver.wait()
        if driver.proc.returncode != 0:
            with open(driver.log.name) as f:
                last = (f.read().strip().splitlines() or ["(no output)"])[-1][:200]
            if row is None:
                raise RuntimeError(f"{name}: evoplat exited {driver.proc.returncode}: {last}")
            row["note"] = f"{name}: evoplat exited {driver.proc.returncode}: {last}"
        return wall

    def undisturbed(self, name: str, extra=()) -> tuple[float, object]:
        driver, run_dir = self.fresh(name, extra)
        wall = self.finished(driver, name)
        return wall, final_center(run_dir)

    def repeat(self, i: int) -> dict:
        wall, center = self.undisturbed(f"U{i}")
        equal, diff = compare(center, self.ref)
        return dict(run=i, wall=wall, equal=equal, diff=diff)

    def node_run(self, i: int, g: int, rng: random.Random) -> dict:
        name = f"A{i}"
        driver, run_dir = self.fresh(name)
        row = dict(run=i, gen=g, after=g, at=float("nan"), node="-", hit=None, recovery=0.0, note="")
        # the victim and its processes are picked a generation early, so the kill lands right after
        # checkpoint g (a generation takes a fraction of a second here)
        if wait_for_step(run_dir, g - 1, driver) and (hosts := self.cluster.nodes_hosting_workers()):
            k = rng.choice(hosts)
            pids = session_pids(self.cluster.node_pid(k))
            if wait_for_step(run_dir, g, driver):
                row["gen"] = latest_step(run_dir)
                row["at"] = time.monotonic() - driver.t0
                killed = self.cluster.kill_node(k, pids)
                row["after"] = latest_step(run_dir)
                wait_gone(killed)
                row["node"] = f"worker{k}"
        if row["node"] == "-":
            row["note"] = "run ended before the kill point" if driver.proc.poll() is not None else \
                "no node hosted a worker at the kill point"
        row["wall"] = self.finished(driver, name, row)
        if row["node"] != "-":
            self.cluster.script("restart-node", row["node"].removeprefix("worker"))
        times = generation_times(run_dir)
        row["retries"] = max((r for _, r in times.values()), default=0)
        # the generation in which the pool saw the loss and re-ran items, and what that cost it
        row["hit"] = next((g for g, (_, r) in sorted(times.items()) if r), None)
        row["recovery"] = times[row["hit"]][0] - self.ref_times[row["hit"]][0] if row["hit"] else 0.0
        row["equal"], row["diff"] = compare(final_center(run_dir), self.ref)
        return row

    def driver_run(self, i: int, g: int) -> dict:
        name = f"B{i}"
        driver, run_dir = self.fresh(name)
        row = dict(run=i, gen=g, at=float("nan"), note="")
        t0 = driver.t0
        if wait_for_step(run_dir, g, driver):
            row["at"] = time.monotonic() - t0
            driver.kill()
            row["gen"] = latest_step(run_dir)
            if driver.proc.returncode != -signal.SIGKILL:
                row["note"] = f"driver exited {driver.proc.returncode} before the kill"
            resumed = Driver(self.cluster, ["--resume", str(run_dir), *self.data], self.work / f"{name}.log")
            row["second"] = self.finished(resumed, name + " resumed", row)
        else:
            self.finished(driver, name, row)
            row["second"] = 0.0
            row["note"] = "run ended before the kill point"
        row["wall"] = time.monotonic() - t0
        row["equal"], row["diff"] = compare(final_center(run_dir), self.ref)
        return row


class Pause:
    """SIGSTOP the background long runs while timing; SIGCONT on exit, or from a watchdog if this
    process is SIGKILLed (the watchdog also stops the cluster then)."""

    def __init__(self, enabled: bool, cluster: Cluster):
        self.enabled, self.pids = enabled, []
        self.record = cluster.state / "paused.pids"        # what the watchdog continues
        self.watchdog = subprocess.Popen(
            ["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 2; done; "
                         f"[ -s '{self.record}' ] && kill -CONT $(cat '{self.record}') 2>/dev/null; "
                         f"'{SCRIPT}' stop >/dev/null 2>&1"], env=cluster.env, start_new_session=True)

    def stop(self) -> None:
        if self.enabled and LONGRUNS.is_file():           # read now: the list changes over time
            self.pids = [int(p) for p in LONGRUNS.read_text().split() if p.isdigit()]
            self.record.write_text(" ".join(map(str, self.pids)))
            self.signal(signal.SIGSTOP)

    def signal(self, sig) -> None:
        for p in self.pids:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        self.signal(signal.SIGCONT)
        self.watchdog.kill()
        self.watchdog.wait()


def fmt_table(head: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
           ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def report(args, ref_wall: float, rows: dict, loads, threads, paused: str) -> str:
    a_rows, b_rows, u_rows = rows["A"], rows["B"], rows["U"]
    typical = statistics.median([ref_wall] + [r["wall"] for r in u_rows])    # every undisturbed run
    yes = lambda r: "yes" if r["equal"] else "**NO**"  # noqa: E731
    same_round = {r["run"]: r["wall"] for r in u_rows}      # the load drifts: compare within a round too

    def lost(r, rounds=True):
        out = [f"{r['wall'] - ref_wall:+.1f}", f"{r['wall'] - typical:+.1f}"]
        return out + [f"{r['wall'] - same_round[r['run']]:+.1f}" if r["run"] in same_round else "-"] * rounds
    data = (f"MNIST (`--data-root {args.data_root}`)" if args.data_root
            else "synthetic 28x28 data, 10 classes (no --data-root given)")
    lines = [header("Chaos: worker nodes and drivers SIGKILLed at random generations (issue 15)"),
             f"- cluster: `cluster/local_cluster.sh start {WORKER_NODES}` on private ports: head with 0 CPUs + "
             f"{WORKER_NODES} one-CPU worker nodes, token auth; a killed node is started again with "
             f"`local_cluster.sh restart-node K` after its run",
             f"- run: ES (openai_es) on {data}, MLP 784-{args.hidden}-10, popsize {args.popsize}, batch "
             f"{args.batch_size}, {args.generations} generations, 2 worker actors (chunk 16), checkpoint every "
             f"generation, config seed {args.run_seed}; every driver an `evoplat run` process with RAY_ADDRESS",
             f"- kill points: after the checkpoint of generation g, g uniform in [2, {args.generations - 2}] from "
             f"`random.Random({args.seed})`; A kills a node that hosts a worker actor (SIGKILL to every process of "
             f"the node: its `ray start` process group and Ray's workers, which sit in process groups of their "
             f"own inside the node's session); B kills the driver's process group and resumes with "
             f"`evoplat run --resume RUN_DIR`; rounds run in the order {args.scenarios}",
             f"- background long runs paused (SIGSTOP) while timing: {paused or 'no'}",
             f"- load before timing: `{loads[0]}`; after: `{loads[1]}`",
             f"- wall time = first driver start to last driver exit, including Ray connect, data loading and "
             f"the worker actors' start. Reference (undisturbed, after {args.warmup} uncounted warm-up "
             f"run(s)): {ref_wall:.1f} s; median of all "
             f"{1 + len(u_rows)} undisturbed runs: {typical:.1f} s. Time lost = wall time - reference wall time; "
             f"\"vs median\": wall time - the undisturbed median; \"vs U of its round\": wall time - the wall "
             f"time of the undisturbed run of the same round (closest in time, so least moved by the load)", ""]

    def verdict(rows, what="Time lost", rounds=True):
        out = [f"**{sum(r['equal'] for r in rows)} of {len(rows)} runs ended bitwise equal to the undisturbed "
               f"run.**"]
        bases = [(lambda r: ref_wall, "the reference"), (lambda r: typical, "the undisturbed median")]
        if rounds and all(r["run"] in same_round for r in rows):
            bases.append((lambda r: same_round[r["run"]], "the undisturbed run of its round"))
        for base, name in bases:
            d = sorted(r["wall"] - base(r) for r in rows)
            out.append(f"{what} vs {name}: median {statistics.median(d):+.1f} s, range {d[0]:+.1f} to "
                       f"{d[-1]:+.1f} s.")
        return ["", " ".join(out), ""]

    if a_rows:
        lines += [f"### A: a worker node SIGKILLed ({len(a_rows)} runs)", ""] + fmt_table(
            ["run", "checkpoints before / after the kill", "killed at (s)", "node killed",
             "generation that re-ran items", "its extra time (s)", "pool retries", "bitwise equal", "max abs diff",
             "wall (s)", "time lost (s)", "vs median (s)", "vs U of its round (s)", "note"],
            [[r["run"], f"{r['gen']} / {r['after']}", f"{r['at']:.1f}", r["node"], r["hit"] or "-",
              f"{r['recovery']:+.2f}", r["retries"], yes(r), f"{r['diff']:.3g}", f"{r['wall']:.1f}", *lost(r),
              r["note"]] for r in a_rows]) + verdict(a_rows) + [
            "\"killed at\" counts from the driver's start; \"its extra time\": that generation's time minus the "
            "same generation's time in the reference run (detecting the loss, re-running the lost items).", ""]
    if b_rows:
        lines += [f"### B: the driver SIGKILLed and resumed ({len(b_rows)} runs)", ""] + fmt_table(
            ["run", "killed at (s)", "resumed from checkpoint", "resumed driver (s)", "bitwise equal",
             "max abs diff", "wall (s)", "time lost (s)", "vs median (s)", "vs U of its round (s)", "note"],
            [[r["run"], f"{r['at']:.1f}", r["gen"], f"{r['second']:.1f}", yes(r), f"{r['diff']:.3g}",
              f"{r['wall']:.1f}", *lost(r), r["note"]] for r in b_rows]) + verdict(b_rows)
    if u_rows:
        lines += [f"### U: undisturbed repeats ({len(u_rows)} runs, between the disturbed ones)", ""] + fmt_table(
            ["run", "bitwise equal", "max abs diff", "wall (s)", "minus reference (s)", "vs median (s)"],
            [[r["run"], yes(r), f"{r['diff']:.3g}", f"{r['wall']:.1f}", *lost(r, False)] for r in u_rows]) + \
            verdict(u_rows, "Wall time", False) + [
            "These runs had no fault: their spread is the noise in every \"time lost\" above.", ""]
    if threads:
        lines += [f"- check: an undisturbed run with the driver on 1 torch thread vs the reference (torch's "
                  f"default, {threads[2]} threads): bitwise equal {'yes' if threads[0] else 'NO'}, max abs diff "
                  f"{threads[1]:.3g}", ""]
    disturbed = a_rows + b_rows
    lines += [f"**Summary: {sum(r['equal'] for r in disturbed)} of {len(disturbed)} runs ended bitwise equal to "
              f"the undisturbed run.**"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per scenario")
    ap.add_argument("--scenarios", default="ABU", help="letters, run in this order each round: A (worker node "
                    "killed), B (driver killed), U (undisturbed repeat)")
    ap.add_argument("--generations", type=int, default=40)
    ap.add_argument("--popsize", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    ap.add_argument("--warmup", type=int, default=1, help="undisturbed runs before the reference, not counted")
    ap.add_argument("--run-seed", type=int, default=3, help="the ES run's seed")
    ap.add_argument("--data-root", default=os.environ.get("EVOPLAT_DATA"), help="MNIST root (default "
                    "$EVOPLAT_DATA); without one, synthetic data")
    ap.add_argument("--no-pause", dest="pause", action="store_false", help="do not SIGSTOP the long runs")
    ap.add_argument("--thread-check", action="store_true", help="also compare an undisturbed run on 1 driver "
                    "thread (done anyway when a resumed run differs)")
    ap.add_argument("--ray-port", default="6397")
    ap.add_argument("--dashboard-port", default="8297")
    ap.add_argument("--port-base", default="11000", help="per-node ports; keep below the ephemeral range")
    ap.add_argument("--keep", action="store_true", help="keep run directories and cluster logs")
    ap.add_argument("--out", default="chaos")
    args = ap.parse_args()
    if args.generations < 5:
        ap.error("--generations must be at least 5")
    if not args.scenarios or set(args.scenarios) - set("ABU"):
        ap.error("--scenarios takes the letters A, B and U")

    def terminate(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)

    cluster = Cluster({"EVOPLAT_RAY_PORT": args.ray_port, "EVOPLAT_DASHBOARD_PORT": args.dashboard_port,
                       "EVOPLAT_PORT_BASE": args.port_base})
    work = Path(tempfile.mkdtemp(prefix="evchaos-"))
    pause = Pause(args.pause, cluster)
    rng = random.Random(args.seed)
    rows, threads = {"A": [], "B": [], "U": []}, None
    try:
        cluster.script("start", str(WORKER_NODES))
        b = Bench(args, cluster, work)
        pause.stop()
        loads = [uptime()]
        for w in range(args.warmup):         # a fresh cluster's first run is slow (cold caches, fresh nodes)
            b.undisturbed(f"warmup{w}")
        ref_wall, b.ref = b.undisturbed("reference")
        b.ref_times = generation_times(work / "reference")
        print(f"reference: {ref_wall:.1f} s", flush=True)
        for i in range(1, args.runs + 1):
            for scenario in args.scenarios:
                cluster.wait_full()
                if scenario == "U":
                    row = b.repeat(i)
                else:
                    g = rng.randint(2, args.generations - 2)
                    row = b.node_run(i, g, rng) if scenario == "A" else b.driver_run(i, g)
                rows[scenario].append(row)
                print(scenario, row, flush=True)
        if args.thread_check or not all(r["equal"] for r in rows["B"]):
            cluster.wait_full()
            import torch
            threads = (*compare(b.undisturbed("threads1", ["--set", "run.torch_threads=1"])[1], b.ref),
                       torch.get_num_threads())
        loads.append(uptime())
    finally:
        pause.close()
        for d in list(Driver.live):
            d.kill()
        try:
            subprocess.run([str(SCRIPT), "stop"], env=cluster.env, timeout=300)
        finally:
            if args.keep:
                print(f"kept: {work} (runs), {cluster.state} (cluster logs)")
            else:
                shutil.rmtree(work, ignore_errors=True)
                shutil.rmtree(cluster.state, ignore_errors=True)
    paused = f"yes, pids {' '.join(map(str, pause.pids))}" if pause.pids else ""
    write(args.out, report(args, ref_wall, rows, loads, threads, paused))
    return 0 if all(r["equal"] for r in rows["A"] + rows["B"] + rows["U"]) else 1


if __name__ == "__main__":
    sys.exit(main())
