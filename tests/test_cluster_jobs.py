"""An experiment submitted with `ray job submit` to a real multi-node cluster started by
cluster/local_cluster.sh (`ray start --head` plus a worker node), as a user would; and the cluster's
security settings: token authentication on, job API on loopback only.

The cluster uses its own ports, state directory and temp dirs, so it never meets anyone else's Ray.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "cluster" / "local_cluster.sh"
BIN = Path(sys.executable).parent
PORTS = {"EVOPLAT_RAY_PORT": "6391", "EVOPLAT_DASHBOARD_PORT": "8291", "EVOPLAT_PORT_BASE": "24000"}
JOB_CONFIG = """\
algorithm: es
name: job_test
seed: 5
data: {source: synthetic, val_size: 64, synthetic_train: 512, synthetic_test: 128}
model: {target: "usernets:net", kwargs: {width: 12}}
runtime: {num_workers: 2, chunk_size: 8, cpus_per_worker: 1}
run: {eval_every: 2, checkpoint_every: 2, log_every: 1}
es: {popsize: 24, generations: 4, sigma: 0.05, lr: 0.05, batch_size: 128}
"""
USER_MODULE = """\
from torch import nn
def net(input_shape, num_outputs, width=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_outputs))
"""
STATUS_SNIPPET = """
import os, sys
from ray.job_submission import JobSubmissionClient
client = JobSubmissionClient(os.environ["RAY_API_SERVER_ADDRESS"])
print(client.get_job_status(sys.argv[1]).value)
"""


@pytest.fixture(scope="module")
def local_cluster():
    """Head (1 CPU) + 1 worker node (1 CPU); yields the client environment (token, job API address)."""
    state = Path("/tmp") / f"evj-{os.getpid()}"       # short: unix socket paths are length-limited
    env = dict(os.environ, EVOPLAT_CLUSTER_DIR=str(state), EVOPLAT_HEAD_CPUS="1", **PORTS,
               PATH=f"{BIN}:{os.environ['PATH']}", RAY=str(BIN / "ray"))
    for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(var, None)
    try:
        subprocess.run([str(SCRIPT), "start", "1"], env=env, check=True, timeout=600)
        client = dict(env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(state / "auth_token"),
                      RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{PORTS['EVOPLAT_DASHBOARD_PORT']}")
        yield client
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, timeout=120)
        shutil.rmtree(state, ignore_errors=True)      # logs, temp dirs and the token


def _ray(client, *args, **kw):
    return subprocess.run([str(BIN / "ray"), *args], env=client, capture_output=True, text=True,
                          timeout=600, **kw)


def test_ray_job_submit_runs_experiment_on_cluster(local_cluster, tmp_path):
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "job.yaml").write_text(JOB_CONFIG)
    (workdir / "usernets.py").write_text(USER_MODULE)   # the user's model, shipped with --working-dir
    run_dir = tmp_path / "run"
    job_id = f"evoplat-test-{os.getpid()}"
    sub = _ray(local_cluster, "job", "submit", "--submission-id", job_id, "--working-dir", str(workdir),
               "--", "evoplat", "run", "job.yaml", "--run-dir", str(run_dir))
    assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
    # The SDK's view (in a child process: the token settings stay out of this test process).
    status = subprocess.run([sys.executable, "-c", STATUS_SNIPPET, job_id], env=local_cluster,
                            capture_output=True, text=True, timeout=300)
    assert status.stdout.strip().splitlines()[-1] == "SUCCEEDED", status.stderr[-2000:]

    rows = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    assert [r["generation"] for r in rows] == [1, 2, 3, 4]
    assert all(r["popsize"] == 24 and r["nonfinite"] == 0 for r in rows)
    assert rows[-1]["test_acc"] is not None and 0.0 <= rows[-1]["test_acc"] <= 1.0
    assert (run_dir / "summary.json").is_file() and (run_dir / "checkpoints").is_dir()
    import json
    assert json.loads((run_dir / "summary.json").read_text())["num_params"] == 64 * 12 + 12 + 12 * 4 + 4
    logs = _ray(local_cluster, "job", "logs", job_id).stdout
    assert "final test accuracy" in logs


def test_job_api_needs_the_token(local_cluster):
    wrong = dict(local_cluster, RAY_AUTH_TOKEN="0" * 64)
    wrong.pop("RAY_AUTH_TOKEN_PATH")
    denied = _ray(wrong, "job", "list")
    assert denied.returncode != 0
    allowed = _ray(local_cluster, "job", "list")
    assert allowed.returncode == 0, allowed.stderr[-2000:]


def test_job_api_listens_on_loopback_only(local_cluster):
    port = int(PORTS["EVOPLAT_DASHBOARD_PORT"])
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass                                        # reachable here...
    external = [a for a in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
                if "." in a and not a.startswith("127.")]
    if not external:
        pytest.skip("this machine has no non-loopback IPv4 address to probe")
    with pytest.raises(OSError):                    # ...and refused on the machine's network address
        socket.create_connection((external[0], port), timeout=10).close()
