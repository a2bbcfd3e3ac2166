"""The driver's update does not depend on where the driver runs: its thread count or its process.

Fitness only enters the update through ranks, so a driver that computes the same update from the same
ranks ends with bitwise the same weights in an in-process run (backend local, 1 or 2 threads) and in a
`ray job submit` job on a local cluster.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import synthetic_config
from evoplat.cli import main
from evoplat.platform.population.forward import ParamLayout
from evoplat.platform.population.lowrank import make_perturbation
from evoplat.platform.run.rundir import load_checkpoint
from evoplat.platform.strategies import PGPE, OpenAIES, SNES, StrategyState
from evoplat.platform.strategies.optim import make_optimizer

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PORTS = {"EVOPLAT_RAY_PORT": "6393", "EVOPLAT_DASHBOARD_PORT": "8293", "EVOPLAT_PORT_BASE": "25000"}
ES = {"popsize": 24, "generations": 5, "sigma": 0.05, "lr": 0.05, "batch_size": 128}
MODEL = {"name": "mlp", "hidden": [768]}     # 53,764 parameters: element-wise kernels split over threads


def _tell_bits(strategy, kind: str, threads: int) -> bytes:
    layout = ParamLayout(torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.Linear(128, 10)))
    noise = make_perturbation(kind, "table", layout, rank=2, seed=5)
    center = torch.linspace(-1, 1, layout.size)
    state = strategy.init(center)
    fitness = np.random.default_rng(0).standard_normal(strategy.popsize)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(2):                                     # two steps: the optimizer state is used too
            pop = strategy.ask(state)
            state, _ = strategy.tell(state, fitness, noise, pop)
    finally:
        torch.set_num_threads(before)
    return state.center.numpy().tobytes() + np.asarray(state.sigma, np.float32).tobytes()


@pytest.mark.parametrize("kind", ["full", "lowrank"])
@pytest.mark.parametrize("make", [lambda: OpenAIES(256, 0.02, make_optimizer("adam", 0.01), 0.005),
                                  lambda: SNES(256, 0.02, lr_center=1.0),
                                  lambda: PGPE(256, 0.02, make_optimizer("clipup", 0.01))])
def test_tell_is_bitwise_the_same_on_1_and_2_threads(kind, make):
    assert _tell_bits(make(), kind, 1) == _tell_bits(make(), kind, 2)


def test_tell_leaves_the_callers_thread_count_alone():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _tell_bits(OpenAIES(8, 0.1, make_optimizer("adam", 0.01)), "full", 2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def _final_center(run_dir: Path) -> torch.Tensor:
    ckpt = sorted((run_dir / "checkpoints").glob("*.pt"))[-1]
    state = StrategyState.from_dict(load_checkpoint(ckpt)["strategy"])
    assert state.generation == ES["generations"]
    return state.center


def _config(perturbation: str, **runtime):
    return synthetic_config(model=MODEL, es={**ES, "perturbation": perturbation, "rank": 2},
                            runtime=runtime, run={"eval_every": 5, "checkpoint_every": 5, "log_every": 100})


def _write(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


@pytest.fixture(scope="module")
def cluster_env():
    """Head (1 CPU) + 1 worker node (1 CPU) from cluster/local_cluster.sh on private ports and dirs."""
    state = Path("/tmp") / f"evd-{os.getpid()}"
    env = dict(os.environ, EVOPLAT_CLUSTER_DIR=str(state), EVOPLAT_HEAD_CPUS="1", **PORTS,
               PATH=f"{BIN}:{os.environ['PATH']}", RAY=str(BIN / "ray"))
    for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(var, None)
    script = REPO / "cluster" / "local_cluster.sh"
    try:
        subprocess.run([str(script), "start", "1"], env=env, check=True, timeout=600)
        yield dict(env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(state / "auth_token"),
                   RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{PORTS['EVOPLAT_DASHBOARD_PORT']}")
    finally:
        subprocess.run([str(script), "stop"], env=env, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("perturbation", ["full", "lowrank"])
def test_same_weights_in_process_on_1_and_2_threads_and_as_a_submitted_job(cluster_env, tmp_path, perturbation):
    centers = {}
    for threads in (1, 2):
        cfg = _config(perturbation, backend="local")
        cfg.run.torch_threads = threads
        run = tmp_path / f"local{threads}"
        assert main(["run", str(_write(cfg, tmp_path / f"local{threads}.yaml")), "--run-dir", str(run),
                     "--quiet"]) == 0
        centers[f"local, {threads} thread(s)"] = _final_center(run)
    work = tmp_path / "job"
    work.mkdir()
    _write(_config(perturbation, backend="ray", num_workers=2), work / "job.yaml")
    run = tmp_path / "jobrun"
    sub = subprocess.run([str(BIN / "ray"), "job", "submit", "--submission-id", f"evd-{os.getpid()}-{perturbation}",
                          "--working-dir", str(work), "--", "evoplat", "run", "job.yaml", "--run-dir", str(run)],
                         env=cluster_env, capture_output=True, text=True, timeout=900)
    assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
    centers["ray job submit, 2 workers"] = _final_center(run)
    reference = centers["local, 1 thread(s)"]
    for where, center in centers.items():
        assert torch.equal(center, reference), f"{where}: max difference {float((center - reference).abs().max())}"
