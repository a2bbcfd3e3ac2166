"""Shared fixtures. One local Ray instance serves the whole session; tests that need their own
cluster shut it down first, and the next test that asks for `ray_local` starts it again."""
from __future__ import annotations

import os
import socket
import time

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_local():
    import ray
    if not ray.is_initialized():
        # 4 logical CPUs on a 2-core machine: lets 3-worker tests schedule; work is small.
        # address="local": never join a cluster someone's `ray start` recorded on this machine.
        # Retried: on a heavily loaded machine the raylet can miss Ray's start-up deadline.
        for attempt in range(3):
            try:
                ray.init(address="local", num_cpus=4, include_dashboard=False, configure_logging=False,
                         log_to_driver=False)
                break
            except Exception:
                ray.shutdown()
                if attempt == 2:
                    raise
                time.sleep(10)
    yield ray


@pytest.fixture(scope="session", autouse=True)
def _shutdown_ray_at_end():
    yield
    import ray
    if ray.is_initialized():
        ray.shutdown()


def synthetic_config(**sections):
    """A small, fast ES config on synthetic data; keyword arguments override whole sections' keys."""
    from evoplat.platform.config import build_config
    raw = {
        "algorithm": "es", "seed": 3,
        "data": {"source": "synthetic", "val_size": 64, "synthetic_train": 512, "synthetic_test": 128},
        "model": {"name": "mlp", "hidden": [16]},
        "runtime": {"num_workers": 2, "chunk_size": 8, "cpus_per_worker": 1},
        "run": {"eval_every": 3, "checkpoint_every": 3, "log_every": 100},
        "es": {"popsize": 24, "generations": 6, "sigma": 0.05, "lr": 0.05, "batch_size": 128},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(name, {}).update(values)
        else:
            raw[name] = values
    return build_config(raw)


def run_in(cfg, path, resume_state=None, **kwargs):
    """`evoplat.run` in `path` (replaced if present); with `resume_state` (a checkpoint dict, e.g. from
    another run), that checkpoint is written into `path` and the run resumes from it.

    Returns (summary, RunDirectory with the metrics rows read back)."""
    from pathlib import Path

    import evoplat
    from evoplat.platform.config import to_yaml
    from evoplat.platform.run.rundir import RunDirectory
    path = Path(path)
    if resume_state is None:
        result = evoplat.run(cfg, run_dir=path, overwrite=True, **kwargs)
    else:
        step = int(resume_state["step"])
        run = RunDirectory.open_existing(path) if (path / "config.yaml").is_file() else \
            RunDirectory.create(path, to_yaml(cfg))
        for ckpt in run.checkpoints():
            if int(ckpt.stem.split("_")[1]) >= step:
                ckpt.unlink()
        run.save_checkpoint(step, resume_state, keep=10**6)
        result = evoplat.run(cfg, resume=path, **kwargs)
    return result.summary, RunDirectory.open_existing(path)
