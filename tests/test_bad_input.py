"""Every bad input ends in exit code 2 and one line on stderr naming the problem: no traceback, no run
directory left behind, and an existing run directory byte-for-byte unchanged.

Each case builds its tiny input files in a shared workspace and runs `evoplat.cli.main(["run", ...])`
in-process; a handful also run the real command (`python -m evoplat run ...`) in a subprocess, which
sees everything a user would on stderr. The cases that need Ray share the session's local instance.
"""
from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import free_port
from evoplat.platform.runtime import cluster
from test_data import idx_bytes, write_mnist

BASE = {"algorithm": "es", "seed": 1, "name": "bad",
        "data": {"source": "synthetic", "val_size": 16, "synthetic_train": 96, "synthetic_test": 32},
        "model": {"name": "mlp", "hidden": [4]},
        "runtime": {"backend": "local", "chunk_size": 4},
        "run": {"eval_every": 2, "checkpoint_every": 2, "log_every": 100, "tensorboard": False},
        "es": {"popsize": 8, "generations": 2, "batch_size": 16}}


def tree_hash(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Workspace: base.yaml and one finished run in runs/existing (made with the real API)."""
    import evoplat
    root = tmp_path_factory.mktemp("bad_input")
    (root / "base.yaml").write_text(yaml.safe_dump(BASE))
    evoplat.run(BASE, run_dir=root / "runs" / "existing")
    assert (root / "runs" / "existing" / "summary.json").is_file()
    return root


def npz(folder: Path, **replace) -> str:
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.normal(size=(64, 1, 4, 4)).astype(np.float32), y_train=rng.integers(0, 3, 64),
                  x_test=rng.normal(size=(16, 1, 4, 4)).astype(np.float32), y_test=rng.integers(0, 3, 16))
    arrays.update(replace)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "d.npz", **arrays)
    return str(folder / "d.npz")


def mnist(folder: Path, damage) -> str:
    raw = folder / "MNIST" / "raw"
    write_mnist(raw)
    damage(raw)
    return str(folder)


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _copy_run(ws: Path, d: Path, damage) -> str:
    shutil.copytree(ws / "runs" / "existing", d / "run")
    damage(d / "run")
    return str(d / "run")


def _file(path: Path, data: bytes | str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


# a gym run with observation normalization (CartPole: gymnasium's own, no download)
GYM = {**BASE, "data": None, "model": {"name": "mlp", "hidden": [4]},
       "fitness": {"name": "gym", "kwargs": {"env": "CartPole-v1", "eval_episodes": 1, "max_episode_steps": 10,
                                             "observation_normalization": True}}}
GYM = {k: v for k, v in GYM.items() if v is not None}

NPZ = ["--set", "data.source=npz", "--set", "data.val_size=8", "--data-root"]
MNIST = ["--set", "data.source=mnist", "--set", "data.val_size=8", "--set", "data.download=false",
         "--data-root"]
CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
               "batches.meta")

# name -> (argv after `run`, given the workspace and the case's own folder; what stderr must name)
CASES = {
    # the config file
    "config_missing": (lambda ws, d: [str(d / "nope.yaml")], "no config file at"),
    "config_is_a_folder": (lambda ws, d: [str(ws / "runs")], "no config file at"),
    "config_not_utf8": (lambda ws, d: [_file(d / "c.yaml", b"\xff\xfe\x00algorithm: es")], "not UTF-8"),
    "config_latin1": (lambda ws, d: [_file(d / "c.yaml", "name: caf\xe9".encode("latin-1"))], "not UTF-8"),
    "config_bad_yaml": (lambda ws, d: [_file(d / "c.yaml", "data: [1, 2\n")], "not valid YAML"),
    "config_a_list": (lambda ws, d: [_file(d / "c.yaml", "- es\n- 3\n")], "must hold a mapping"),
    "config_unknown_key": (lambda ws, d: [_file(d / "c.yaml", yaml.safe_dump({**BASE, "colour": 1}))],
                           "colour"),
    "unknown_algorithm": (lambda ws, d: [_file(d / "c.yaml", yaml.safe_dump({**BASE, "algorithm": "nope"}))],
                          "nope"),
    # options
    "set_without_value": (lambda ws, d: [str(ws / "base.yaml"), "--set", "es.popsize"], "key=value"),
    "set_unknown_section": (lambda ws, d: [str(ws / "base.yaml"), "--set", "nosuch.key=1"], "nosuch"),
    "wrong_type": (lambda ws, d: [str(ws / "base.yaml"), "--set", "es.popsize=many"], "es.popsize"),
    "negative_sigma": (lambda ws, d: [str(ws / "base.yaml"), "--set", "es.sigma=-1"], "es.sigma"),
    "odd_antithetic_popsize": (lambda ws, d: [str(ws / "base.yaml"), "--set", "es.popsize=7"], "even"),
    "zero_width_layer": (lambda ws, d: [str(ws / "base.yaml"), "--set", "model.hidden=[8,0]"], "at least 1 unit"),
    "unknown_model": (lambda ws, d: [str(ws / "base.yaml"), "--set", "model.name=transformer9"], "transformer9"),
    "unknown_dataset": (lambda ws, d: [str(ws / "base.yaml"), "--set", "data.source=imagenet"], "imagenet"),
    "unknown_fallback": (lambda ws, d: [str(ws / "base.yaml"), "--set", "data.fallback=imagenet"], "imagenet"),
    "target_not_importable": (lambda ws, d: [str(ws / "base.yaml"), "--set", "data.target=no_such_mod:load"],
                              "no_such_mod"),
    "val_size_too_large": (lambda ws, d: [str(ws / "base.yaml"), "--set", "data.val_size=96"],
                           "leaves no training examples"),
    "model_kwargs_unknown": (lambda ws, d: [str(ws / "base.yaml"), "--set", "model.kwargs.depth=3"],
                             r"model\.kwargs\.depth: not an option of mlp \(its options: hidden, activation\)"),
    "data_kwargs_on_registered_source": (lambda ws, d: [str(ws / "base.yaml"), "--set", "data.kwargs.n=3"],
                                         r"data\.kwargs\.n: the registered source 'synthetic' takes no kwargs"),
    "fitness_kwargs_misspelt": (lambda ws, d: [_file(d / "g.yaml", yaml.safe_dump(GYM)), "--set",
                                               "fitness.kwargs.observation_normalisation=true"],
                                r"fitness\.kwargs\.observation_normalisation: not an option of GymTask"),
    "obs_clip_not_positive": (lambda ws, d: [_file(d / "g.yaml", yaml.safe_dump(GYM)), "--set",
                                             "fitness.kwargs.obs_clip=0"],
                              r"fitness\.kwargs\.obs_clip = 0: Input should be greater than 0"),
    "gym_episodes_wrong_type": (lambda ws, d: [_file(d / "g.yaml", yaml.safe_dump(GYM)), "--set",
                                               "fitness.kwargs.episodes=two"],
                                r"fitness\.kwargs\.episodes = 'two': Input should be a valid integer"),
    # MNIST idx files
    "mnist_missing": (lambda ws, d: [str(ws / "base.yaml"), *MNIST, str(d)], "MNIST not found in"),
    "mnist_truncated": (lambda ws, d: [str(ws / "base.yaml"), *MNIST, mnist(
        d, lambda raw: _truncate(raw / "train-images-idx3-ubyte", 20_000))], "MNIST files in .* truncated or corrupt"),
    "mnist_bad_magic": (lambda ws, d: [str(ws / "base.yaml"), *MNIST, mnist(
        d, lambda raw: _file(raw / "t10k-labels-idx1-ubyte", b"GIF89a garbage"))], "truncated or corrupt"),
    "mnist_label_count": (lambda ws, d: [str(ws / "base.yaml"), *MNIST, mnist(
        d, lambda raw: _file(raw / "train-labels-idx1-ubyte", idx_bytes(np.zeros(59))))], r"must be \[N"),
    "mnist_corrupt_gz": (lambda ws, d: [str(ws / "base.yaml"), *MNIST, mnist(
        d, lambda raw: ((raw / "t10k-images-idx3-ubyte").unlink(),
                        _file(raw / "t10k-images-idx3-ubyte.gz", gzip.compress(idx_bytes(np.zeros((20, 28, 28))))[:30])))],
        "cannot unpack"),
    # CIFAR-10: torchvision's batches and the npz copy
    "cifar10_corrupt_batches": (lambda ws, d: [str(ws / "base.yaml"), "--set", "data.source=cifar10",
                                               "--set", "data.download=false", "--data-root", _cifar_junk(d)],
                                "CIFAR-10 files in .* truncated or corrupt"),
    "npz_missing": (lambda ws, d: [str(ws / "base.yaml"), *NPZ, str(d / "none.npz")], "no .npz file"),
    "npz_truncated": (lambda ws, d: [str(ws / "base.yaml"), *NPZ, _file(
        d / "cut.npz", Path(npz(d)).read_bytes()[:400])], "not a readable .npz"),
    "npz_not_a_zip": (lambda ws, d: [str(ws / "base.yaml"), *NPZ, _file(d / "j.npz", b"\x00junk" * 64)],
                      "not a readable .npz"),
    "npz_missing_keys": (lambda ws, d: [str(ws / "base.yaml"), *NPZ, _npz_keys(d)], "lacks keys"),
    "npz_length_mismatch": (lambda ws, d: [str(ws / "base.yaml"), *NPZ, npz(d, y_train=np.zeros(63, int))],
                            r"must be \[N"),
    "npz_nan": (lambda ws, d: [str(ws / "base.yaml"), *NPZ, npz(
        d, x_train=np.full((64, 1, 4, 4), np.nan, np.float32))], "NaN or infinite"),
    "npz_inf": (lambda ws, d: [str(ws / "base.yaml"), *NPZ, npz(
        d, x_test=np.full((16, 1, 4, 4), -np.inf, np.float32))], "NaN or infinite"),
    "npz_negative_label": (lambda ws, d: [str(ws / "base.yaml"), *NPZ, npz(d, y_test=np.full(16, -3))],
                           "labels must lie in"),
    "npz_float_labels": (lambda ws, d: [str(ws / "base.yaml"), *NPZ, npz(d, y_train=np.full(64, 0.5))],
                         "integer class labels"),
    # run directories
    "run_dir_exists": (lambda ws, d: [str(ws / "base.yaml"), "--run-dir", str(ws / "runs" / "existing")],
                       "already exists"),
    "run_dir_is_a_file": (lambda ws, d: [str(ws / "base.yaml"), "--run-dir", _file(d / "f", "x")],
                          "not a directory"),
    "overwrite_then_corrupt_data": (lambda ws, d: [str(ws / "base.yaml"), "--overwrite", "--run-dir",
                                                   str(ws / "runs" / "existing"), *NPZ, npz(
                                                       d, x_train=np.full((64, 1, 4, 4), np.nan, np.float32))],
                                    "NaN or infinite"),
    "resume_missing": (lambda ws, d: ["--resume", str(d / "gone")], "resume error"),
    "resume_no_checkpoint": (lambda ws, d: ["--resume", _copy_run(
        ws, d, lambda r: shutil.rmtree(r / "checkpoints"))], "no checkpoint"),
    "resume_corrupt_checkpoint": (lambda ws, d: ["--resume", _copy_run(
        ws, d, lambda r: [_truncate(c, 100) for c in (r / "checkpoints").iterdir()])], "checkpoint"),
    # where Ray runs
    "address_refused": (lambda ws, d: [str(ws / "base.yaml"), "--set", "runtime.backend=ray", "--set",
                                       f"runtime.address=127.0.0.1:{free_port()}"], "no Ray cluster at"),
    "address_malformed": (lambda ws, d: [str(ws / "base.yaml"), "--set", "runtime.backend=ray", "--set",
                                         "runtime.address=cluster-without-port"], "is not host:port"),
    "address_dashboard_url": (lambda ws, d: [str(ws / "base.yaml"), "--set", "runtime.backend=ray", "--set",
                                             "runtime.address=http://127.0.0.1:8265"], "is a dashboard URL"),
    "address_not_ray": (lambda ws, d: [str(ws / "base.yaml"), "--set", "runtime.backend=ray", "--set",
                                       f"runtime.address=127.0.0.1:{_http_server()}"], "no gRPC answer"),
    "address_on_resume": (lambda ws, d: ["--resume", _copy_run(ws, d, lambda r: None), "--set",
                                         "runtime.backend=ray", "--set",
                                         f"runtime.address=127.0.0.1:{free_port()}"], "no Ray cluster at"),
    "address_silent": (lambda ws, d: [str(ws / "base.yaml"), "--set", "runtime.backend=ray", "--set",
                                      f"runtime.address=127.0.0.1:{_silent_port()}"], "no gRPC answer"),
}

_KEEP: list = []        # servers of the address cases, alive until the module is done


def _http_server() -> int:
    """Something that answers on the port, but not as Ray (a dashboard, another service)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _KEEP.append(srv)
    return srv.server_address[1]


def _silent_port() -> int:
    """A port that accepts connections and never says a word."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    _KEEP.append(s)
    return s.getsockname()[1]


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _cifar_junk(d: Path) -> str:
    for name in CIFAR_FILES:
        _file(d / "cifar-10-batches-py" / name, b"junk")
    return str(d)


def _npz_keys(d: Path) -> str:
    np.savez(d / "k.npz", x_train=np.zeros((4, 2)), y_train=np.zeros(4, int))
    return str(d / "k.npz")


def check_outcome(ws: Path, before: dict, code: int, err: str, expect: str, extra: Path | None = None) -> None:
    lines = [s for s in err.splitlines() if s.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("evoplat: "), err
    assert "Traceback" not in err
    import re
    assert re.search(expect, lines[0]), lines[0]
    assert sorted(p.name for p in (ws / "runs").iterdir()) == ["existing"]     # nothing new, nothing moved
    assert tree_hash(ws / "runs" / "existing") == before["existing"]
    if extra is not None:
        assert tree_hash(extra) == before["extra"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line(name, ws, tmp_path, monkeypatch, capsys):
    from evoplat.cli import main
    build, expect = CASES[name]
    if name.startswith("address"):
        monkeypatch.setattr(cluster, "PROBE_TIMEOUT_S", 1.0)
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()      # a live instance is reused whatever the address says
    monkeypatch.chdir(ws)                      # default run directories would go to ws/runs
    argv = ["run", *build(ws, tmp_path), "--quiet"]
    extra = tmp_path / "run" if (tmp_path / "run").is_dir() else None
    before = {"existing": tree_hash(ws / "runs" / "existing"), "extra": extra and tree_hash(extra)}
    capsys.readouterr()
    code = main(argv)
    out = capsys.readouterr()
    check_outcome(ws, before, code, out.err, expect, extra)
    assert "run in" not in out.out, out.out          # no line naming a directory that is not kept


def test_mnist_without_network_and_no_fallback(ws, tmp_path, monkeypatch, capsys):
    from torchvision.datasets import MNIST

    from evoplat.cli import main
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{free_port()}/"])
    monkeypatch.chdir(ws)
    before = {"existing": tree_hash(ws / "runs" / "existing")}
    code = main(["run", str(ws / "base.yaml"), "--set", "data.source=mnist", "--data-root", str(tmp_path / "d")])
    check_outcome(ws, before, code, capsys.readouterr().err, "MNIST is not in .* cannot be downloaded")
    assert not (tmp_path / "d").exists()


SUBPROCESS = ["config_not_utf8", "mnist_truncated"]


@pytest.mark.parametrize("name", SUBPROCESS)
def test_the_real_command_prints_one_line(name, ws, tmp_path):
    build, expect = CASES[name]
    argv = [sys.executable, "-m", "evoplat", "run", *build(ws, tmp_path), "--quiet"]
    extra = tmp_path / "run" if (tmp_path / "run").is_dir() else None
    before = {"existing": tree_hash(ws / "runs" / "existing"), "extra": extra and tree_hash(extra)}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(argv, cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    check_outcome(ws, before, proc.returncode, proc.stderr, expect, extra)


def test_unreachable_ray_address_env(ws, tmp_path):
    """$RAY_ADDRESS (as `ray job submit` sets it) pointing where nothing listens: one line, no Ray logs."""
    env = dict(os.environ, RAY_ADDRESS=f"127.0.0.1:{free_port()}")
    before = {"existing": tree_hash(ws / "runs" / "existing")}
    proc = subprocess.run([sys.executable, "-m", "evoplat", "run", str(ws / "base.yaml"), "--set",
                           "runtime.backend=ray", "--quiet"], cwd=ws, env=env, capture_output=True, text=True,
                          timeout=300)
    check_outcome(ws, before, proc.returncode, proc.stderr, r"no Ray cluster at 127\.0\.0\.1:\d+ \(from \$RAY_ADDRESS\)")


def test_more_workers_than_the_local_instance_holds(ws):
    """A local Ray instance started for the run never grows: workers it cannot hold are one line at once,
    not a wait of runtime.task_timeout_s for nodes that will never join."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    before = {"existing": tree_hash(ws / "runs" / "existing")}
    proc = subprocess.run([sys.executable, "-m", "evoplat", "run", str(ws / "base.yaml"), "--set", "runtime.backend=ray",
                           "--set", "runtime.num_workers=3", "--set", "runtime.local_num_cpus=2", "--quiet"],
                          cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    # Ray's own start-up notice (token authentication) is not evoplat's to print or to hide
    err = "\n".join(s for s in proc.stderr.splitlines() if not s.startswith("Token authentication is enabled"))
    check_outcome(ws, before, proc.returncode, err,
                  r"runtime\.num_workers=3 x runtime\.cpus_per_worker=1 need 3 CPUs, but the local Ray instance has 2; "
                  r"lower .*, or raise runtime\.local_num_cpus")


def test_more_workers_than_cores_share_them(ws, tmp_path):
    """Without runtime.local_num_cpus the local instance counts at least the CPUs the workers ask for."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cores = os.cpu_count() or 1
    per = cores // 2 + 1                       # 2 workers, whatever the machine: more than its cores together
    proc = subprocess.run([sys.executable, "-m", "evoplat", "run", str(ws / "base.yaml"), "--set", "runtime.backend=ray",
                           "--set", "runtime.num_workers=2", "--set", f"runtime.cpus_per_worker={per}",
                           "--set", "es.generations=2",
                           "--run-dir", str(tmp_path / "shared"), "--quiet"],
                          cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"the workers need {2 * per} CPUs and this machine has {cores} cores" in proc.stderr
    assert json.loads((tmp_path / "shared" / "summary.json").read_text())["steps"] == 2


@pytest.mark.parametrize("setting,expect", [("runtime.cpus_per_worker=64", "cpus_per_worker=64 but no node"),
                                            ("runtime.gpus_per_worker=1", "gpus_per_worker=1 but the Ray cluster")])
def test_resources_no_node_can_give(setting, expect, ws, monkeypatch, capsys, ray_local):
    from evoplat.cli import main
    monkeypatch.chdir(ws)
    if setting.startswith("runtime.gpus") and any(n["Resources"].get("GPU") for n in ray_local.nodes()):
        pytest.skip("this Ray instance has a GPU")
    before = {"existing": tree_hash(ws / "runs" / "existing")}
    capsys.readouterr()                        # Ray's own start-up notice, printed while the fixture ran
    code = main(["run", str(ws / "base.yaml"), "--set", "runtime.backend=ray", "--set", setting, "--quiet"])
    check_outcome(ws, before, code, capsys.readouterr().err, expect)


def test_a_worker_that_cannot_load_its_data_fails_once_with_that_error(ray_local):
    """The hosted object's own error (here: a node without the data file) comes back as itself, at
    once: not retried, not an 'actor died' error."""
    import functools

    from evoplat.platform.config import DataConfig
    from evoplat.platform.data import DataError, load_dataset
    from evoplat.platform.runtime.pool import WorkerPool
    factory = functools.partial(load_dataset, DataConfig(source="npz"), "/nonexistent/evoplat/d.npz")
    pool = WorkerPool(factory, num_workers=2, cpus_per_worker=1, max_task_retries=3)
    try:
        with pytest.raises(DataError, match="no .npz file at /nonexistent/evoplat/d.npz"):
            pool.wait_ready(timeout=120)
        assert pool.stats.replaced == 0
    finally:
        pool.shutdown()


def test_noise_table_smaller_than_the_model(ws, monkeypatch, capsys):
    from evoplat.cli import main
    monkeypatch.chdir(ws)
    before = {"existing": tree_hash(ws / "runs" / "existing")}
    code = main(["run", str(ws / "base.yaml"), "--set", "es.noise=table", "--set", "es.noise_table_size=10"])
    check_outcome(ws, before, code, capsys.readouterr().err, "es.noise_table_size")


def test_the_address_probe_accepts_a_real_cluster(ray_local):
    """The probe must never turn away a live GCS (which refuses the probe's missing auth token, or answers)."""
    cluster.probe_address(ray_local.get_runtime_context().gcs_address, "test")
