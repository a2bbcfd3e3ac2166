"""Without an address, evoplat starts its own local Ray: it never joins a cluster that some `ray start`
on the machine recorded in the default temp dir (on a shared machine, someone else's)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

SNIPPET = """
import ray
from evoplat.platform.runtime.cluster import connect
connect(None, 1)
print("GCS", ray.get_runtime_context().gcs_address)
print("CPUS", ray.cluster_resources().get("CPU"))
ray.shutdown()
"""


def test_no_address_starts_a_local_instance_not_a_recorded_cluster():
    with tempfile.TemporaryDirectory(prefix="evt-", dir="/tmp") as tmp:
        # What `ray start` leaves behind: <temp dir>/ray/ray_current_cluster with its GCS address. Port 9
        # (discard) never has a GCS behind it, so joining it could not succeed.
        (Path(tmp) / "ray").mkdir()
        (Path(tmp) / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
        env = dict(os.environ, RAY_TMPDIR=tmp)
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True,
                              timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.startswith(("GCS", "CPUS")))
    assert lines["GCS"] != "127.0.0.1:9"
    assert float(lines["CPUS"]) == 1.0
