"""The driver dies: `evoplat run` is SIGKILLed mid-run (a separate process, as on a cluster), then
`evoplat run --resume RUN_DIR` continues from the last checkpoint and ends with exactly the weights of an
uninterrupted run; its metrics table has every generation once.

Both driver processes connect to the session's Ray instance (RAY_ADDRESS), like jobs on a cluster:
their actors die with them, and no second Ray has to start.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq

from evoplat.cli import main as evoplat_main
from evoplat.platform.run.rundir import RunDirectory
from test_faults_support import GUARD_S, same_tensor

GENERATIONS = 20
CONFIG = f"""\
algorithm: es
name: driver_kill
seed: 11
data: {{source: synthetic, val_size: 64, synthetic_train: 512, synthetic_test: 128}}
model: {{name: mlp, hidden: [16]}}
runtime: {{num_workers: 2, chunk_size: 8, cpus_per_worker: 1}}
run: {{eval_every: 10, checkpoint_every: 5, log_every: 100}}
es: {{popsize: 24, generations: {GENERATIONS}, sigma: 0.05, lr: 0.05, batch_size: 128}}
"""


def _final_center(run_dir):
    return RunDirectory(run_dir).load_latest()["strategy"]["center"]


def _evoplat(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "evoplat", "run", *args, "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_driver_killed_then_resumed_ends_with_uninterrupted_weights(ray_local, tmp_path):
    cfg = tmp_path / "es.yaml"
    cfg.write_text(CONFIG)
    reference = tmp_path / "reference"
    assert evoplat_main(["run", str(cfg), "--run-dir", str(reference), "--quiet"]) == 0

    env = dict(os.environ, RAY_ADDRESS=ray_local.get_runtime_context().gcs_address)
    run_dir = tmp_path / "killed"
    first_ckpt = run_dir / "checkpoints" / "step_00000010.pt"
    # Own session, so the kill takes the driver and anything it started.
    proc = _evoplat([str(cfg), "--run-dir", str(run_dir)], env, start_new_session=True)
    try:
        t0 = time.monotonic()
        while not first_ckpt.exists() and proc.poll() is None:
            assert time.monotonic() - t0 < GUARD_S, "no checkpoint appeared"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"driver was not killed mid-run:\n{out[-2000:]}"
    assert not (run_dir / "summary.json").exists()
    killed_at = int(RunDirectory(run_dir).load_latest()["step"])
    assert 10 <= killed_at < GENERATIONS

    resumed = _evoplat(["--resume", str(run_dir)], env)
    out, _ = resumed.communicate(timeout=GUARD_S)
    assert resumed.returncode == 0, out[-3000:]
    assert "(resumed)" in out

    assert same_tensor(_final_center(run_dir), _final_center(reference))
    generations = [r["generation"] for r in pq.read_table(run_dir / "metrics.parquet").to_pylist()]
    assert generations == list(range(1, GENERATIONS + 1))
