"""The examples a user copies run as shipped, on tiny settings, in their own processes (real Ray).

They join the session's Ray instance through $RAY_ADDRESS, as a script on a cluster does: a Ray instance
of their own costs each ~10 s of start-up, and the fresh-start path is the demo's and the killed-driver
test's."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script, args, expect", [
    ("own_model_data_fitness.py", ["--generations", "3"], "trained network"),
    ("gym_policy.py", ["--generations", "2", "--eval-episodes", "3", "--normalize"], "mean return"),
    ("own_method.py", ["--steps", "5"], "test accuracy"),
])
def test_example_runs(ray_local, tmp_path, script, args, expect):
    env = dict(os.environ, RAY_ADDRESS=ray_local.get_runtime_context().gcs_address)
    out = subprocess.run([sys.executable, str(EXAMPLES / script), *args, "--run-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert expect in out.stdout.splitlines()[-1]
    if script == "own_model_data_fitness.py":     # the model came back from the run directory
        assert "test accuracy" in out.stdout and (tmp_path / "run" / "model.pt").is_file()
    if script == "gym_policy.py":                 # and the policy played an episode on its own
        assert "the loaded policy, one more episode: return" in out.stdout
    assert (tmp_path / "run" / "metrics.parquet").is_file() and (tmp_path / "run" / "summary.json").is_file()
