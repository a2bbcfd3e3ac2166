"""`run.device`: where the backprop-based trainers train (hybrid, rec_lra, consequential, grad_instructor).

On the CPU, `cpu` and `auto` must give bit for bit what these trainers gave before they had a device:
the plain CPU loops built from the same parts. `cuda` without CUDA is one line before any work. The
tests that need a GPU are skipped without one; they check that a tiny run on cuda matches the CPU run.
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import yaml

from evoplat.platform.config import ConfigError, build_config
from evoplat.platform.data import load_dataset
from evoplat.platform.device import cpu_state, driver_device
from evoplat.platform.models import build_model

from conftest import run_in

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
# on a GPU machine `auto` is cuda, which is compared within a tolerance below, not bit for bit
CPU_CHOICES = ["cpu"] if CUDA else ["cpu", "auto"]

DATA = {"source": "synthetic", "val_size": 64, "synthetic_train": 320, "synthetic_test": 96}
RUN = {"checkpoint_every": 1, "eval_every": 1, "log_every": 100, "tensorboard": False}
MLP = {"name": "mlp", "hidden": [16]}
CONFIGS = {
    "consequential": {"algorithm": "consequential", "seed": 2, "data": DATA, "model": MLP,
                      "consequential": {"optimizer": "adam", "lr": 0.01, "epochs": 2, "batch_size": 64,
                                        "lr_schedule": "cosine"}},
    "rec_lra": {"algorithm": "rec_lra", "seed": 3, "data": {**DATA, "synthetic_shape": [12]},
                "model": {"name": "mlp", "hidden": [16, 16, 16], "activation": "tanh"},
                "rec_lra": {"epochs": 2, "batch_size": 32, "lr": 0.01, "input_noise": 0.1}},
    "hybrid": {"algorithm": "hybrid", "seed": 2, "data": DATA, "model": MLP,
               "runtime": {"backend": "local", "num_workers": 1, "chunk_size": 4},
               "hybrid": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "lr": 0.01, "es_every": 1,
                          "es_kind": "openai_es", "es_generations": 2, "es_popsize": 4, "sigma": 0.1}},
    "hybrid_control": {"algorithm": "hybrid", "seed": 2, "data": DATA, "model": MLP,
                       "runtime": {"backend": "local"},
                       "hybrid": {"epochs": 2, "batch_size": 64, "es_every": 1, "phase_kind": "backprop",
                                  "es_generations": 2, "es_popsize": 4, "subset": "all"}},
    "grad_instructor": {"algorithm": "grad_instructor", "seed": 2, "data": DATA, "model": MLP,
                        "grad_instructor": {"mode": "deploy", "epochs": 2, "batch_size": 32, "lr": 0.05,
                                            "guidance_weight": 5.0, "l1": 1e-4}},
}
TIMINGS = ("_s", "_ms", "time", "seconds")


@pytest.fixture(scope="module")
def enn(tmp_path_factory) -> str:
    """An ENN artefact that guides (a fresh ENN's head is zero), so the deploy runs the guided loss."""
    from evoplat.methods.grad_instructor.cam import save_enn_artefact
    from evoplat.methods.grad_instructor.enn import build_enn
    gcfg = build_config(CONFIGS["grad_instructor"]).grad_instructor
    net = build_enn(gcfg.enn_channels, seed=0)
    with torch.no_grad():
        net.head.weight.copy_(torch.linspace(-1.0, 1.0, net.head.weight.numel()).view_as(net.head.weight))
    return str(save_enn_artefact(tmp_path_factory.mktemp("enn") / "enn.pt", net, gcfg))


def config(name: str, device=None, enn=None, **runtime):
    raw = copy.deepcopy(CONFIGS[name])
    raw["run"] = dict(RUN, **({"device": device} if device else {}))
    raw["runtime"] = {**raw.get("runtime", {}), **runtime}
    if name == "grad_instructor":
        raw["grad_instructor"]["enn_checkpoint"] = enn
    return build_config(raw)


def outcome(cfg, path) -> tuple[dict, list]:
    """The final checkpoint (loaded as saved: no map_location) and the metric rows, timings left out."""
    _, run = run_in(cfg, path)
    rows = [{k: v for k, v in r.items() if not k.endswith(TIMINGS)} for r in run.rows]
    state = torch.load(run.checkpoints()[-1], weights_only=True)
    state.pop("wall_time")
    return state, rows


def assert_identical(a, b, where="state"):
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.device.type == "cpu" and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), where      # NaN rows compare equal


def assert_close(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert a.device.type == "cpu", where             # checkpoints load without a GPU
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-3, atol=1e-4, msg=where)
    elif isinstance(a, dict):
        for k in a.keys() & b.keys():
            assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-3, abs=1e-3), where


# -- on the CPU: what the trainers did before ---------------------------------------------------------
@pytest.mark.parametrize("choice", CPU_CHOICES)
def test_consequential_on_the_cpu_is_the_plain_cpu_loop(tmp_path, choice):
    from evoplat.platform.backprop import train_epoch
    from evoplat.methods.consequential.trainer import build_optimizer, make_scheduler
    cfg = config("consequential", choice)
    state, _ = outcome(cfg, tmp_path / "run")
    cc = cfg.consequential
    data = load_dataset(cfg.data)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    opt = build_optimizer(model, cc)
    scheduler = make_scheduler(opt, cc, -(-len(data.x_train) // cc.batch_size))
    for epoch in range(cc.epochs):
        train_epoch(model, opt, data.x_train, data.y_train, cc.batch_size, cfg.seed, epoch, scheduler=scheduler)
    assert_identical(state["model"], model.state_dict())


@pytest.mark.parametrize("choice", CPU_CHOICES)
def test_rec_lra_on_the_cpu_is_the_plain_cpu_learner(tmp_path, choice):
    from evoplat.methods.rec_lra.learner import RecLRALearner
    cfg = config("rec_lra", choice)
    state, _ = outcome(cfg, tmp_path / "run")
    learner = RecLRALearner(cfg, load_dataset(cfg.data))
    for _ in range(cfg.rec_lra.epochs):
        learner.train_epoch()
    assert_identical(state["learner"]["net"], learner.state_dict()["net"])
    assert_identical(state["learner"]["optimizer"], learner.state_dict()["optimizer"])


@pytest.mark.parametrize("name", ["hybrid", "hybrid_control", "grad_instructor"])
def test_cpu_and_auto_are_the_default_bit_for_bit(tmp_path, name, enn):
    """Every choice that means the CPU gives the run without the option: checkpoints and metric rows."""
    default = outcome(config(name, enn=enn), tmp_path / "default")
    for choice in CPU_CHOICES:
        assert_identical(outcome(config(name, choice, enn), tmp_path / choice), default, choice)


def test_driver_device_resolves_the_option():
    assert driver_device("cpu") == torch.device("cpu")
    assert driver_device("auto").type == ("cuda" if CUDA else "cpu")
    if CUDA:
        assert driver_device("cuda").type == "cuda"


def test_cpu_state_keeps_cpu_tensors_and_container_types():
    model = torch.nn.BatchNorm1d(3)
    sd = model.state_dict()
    out = cpu_state({"model": sd, "rows": [sd["weight"], (1, "a")], "n": 3})
    assert type(out["model"]) is OrderedDict and out["model"]._metadata == sd._metadata
    assert all(out["model"][k] is v for k, v in sd.items())     # the same tensors: the same bytes saved
    assert out["rows"][0] is sd["weight"] and out["rows"][1] == (1, "a") and out["n"] == 3


# -- run.device: cuda without CUDA ----------------------------------------------------------------------
def test_an_unknown_device_names_the_option():
    with pytest.raises(ConfigError, match=r"^config error: run\.device = 'gpu'"):
        config("consequential", "gpu")


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("resume", [False, True])
def test_cuda_without_cuda_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, resume):
    from evoplat.cli import main
    monkeypatch.chdir(tmp_path)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({**CONFIGS["consequential"], "run": RUN}))
    existing = tmp_path / "runs" / "existing"
    assert main(["run", str(cfg_path), "--run-dir", str(existing), "--quiet"]) == 0
    before = {p: p.read_bytes() for p in existing.rglob("*") if p.is_file()}
    capsys.readouterr()
    argv = ["--resume", str(existing)] if resume else [str(cfg_path), "--run-dir", str(tmp_path / "runs" / "new")]
    code = main(["run", *argv, "--set", "run.device=cuda", "--quiet"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("evoplat: config error: run.device = 'cuda'") and "no CUDA device" in err[0]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["existing"]       # no new run directory
    assert {p: p.read_bytes() for p in existing.rglob("*") if p.is_file()} == before


# -- on a GPU ----------------------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_run_on_cuda_matches_the_cpu_run(tmp_path, name, enn):
    """Same run on the GPU (the hybrid's ES workers too): the same numbers up to float rounding, and a
    checkpoint of CPU tensors."""
    cpu_state_, cpu_rows = outcome(config(name, "cpu", enn), tmp_path / "cpu")
    gpu_state, gpu_rows = outcome(config(name, "cuda", enn, gpus_per_worker=1), tmp_path / "cuda")
    assert_close(gpu_state, cpu_state_)
    assert_close(gpu_rows, cpu_rows, "rows")


@needs_cuda
def test_a_cuda_run_resumes_from_its_checkpoint(tmp_path):
    cfg = config("consequential", "cuda")
    _, full = run_in(cfg, tmp_path / "full")
    first = torch.load(full.checkpoints()[0], weights_only=True)     # no map_location: CPU tensors
    assert first["epoch"] == 1
    _, resumed = run_in(cfg, tmp_path / "resumed", resume_state=first)
    assert_close(resumed.load_latest()["model"], full.load_latest()["model"])


@needs_cuda
def test_the_hybrid_phase_evaluator_takes_the_workers_gpu():
    from evoplat.methods.hybrid.es_phase import HybridPhaseEvaluator, PhasePopulation, coordinate_scale, make_base
    cpu = HybridPhaseEvaluator(config("hybrid"))
    gpu = HybridPhaseEvaluator(config("hybrid", gpus_per_worker=1))
    assert cpu.device.type == "cpu" and gpu.device.type == "cuda" and gpu.x.device.type == "cuda"
    base = make_base(cpu.model, coordinate_scale(cpu.model, cpu.layout, relative=True))
    pop = PhasePopulation(center=torch.zeros(cpu.layout.size).numpy(), scale=0.2, size=4, generation=1,
                          antithetic=False, parent_first=True, phase=0, base=base)
    torch.testing.assert_close(torch.from_numpy(gpu.evaluate(pop, 0, 4)["fitness"]),
                               torch.from_numpy(cpu.evaluate(pop, 0, 4)["fitness"]), rtol=1e-4, atol=1e-5)
