"""evoplat.load_model: the network a run trained, rebuilt from its run directory (model.pt, written with
every checkpoint), for every method whose result is one network; clear errors otherwise."""
from __future__ import annotations

import pytest
import torch

import evoplat
from evoplat.platform.data import load_dataset
from evoplat.platform.population.forward import ParamLayout, accuracy
from evoplat.platform.run.rundir import CheckpointError, RunDirectory, RunDirError

SYNTHETIC = {"source": "synthetic", "val_size": 32, "synthetic_train": 256, "synthetic_test": 96}


def test_es_model_holds_the_last_center_and_gives_the_summarys_test_accuracy(tmp_path):
    res = evoplat.run({"algorithm": "es", "seed": 5, "data": SYNTHETIC, "model": {"name": "mlp", "hidden": [8]},
                       "runtime": {"backend": "local", "chunk_size": 8},
                       "run": {"eval_every": 2, "checkpoint_every": 2, "log_every": 100},
                       "es": {"popsize": 16, "generations": 4, "batch_size": 64, "sigma": 0.05, "lr": 0.05}},
                      run_dir=tmp_path / "es")
    net = res.model()
    assert isinstance(net, torch.nn.Module) and not net.training
    center = RunDirectory(res.run_dir).load_latest()["strategy"]["center"]
    assert torch.equal(ParamLayout(net).flatten(net), center)
    data = load_dataset(res.config.data, None)
    with torch.no_grad():
        acc, _ = accuracy(net, data.x_test, data.y_test)
    assert acc == pytest.approx(res.summary["test_acc"], abs=1e-9)
    assert torch.load(res.run_dir / "model.pt", weights_only=True)["step"] == 4


@pytest.mark.parametrize("algorithm, section", [
    ("consequential", {"optimizer": "adam", "lr": 0.01, "epochs": 2, "batch_size": 64}),
    ("rec_lra", {"epochs": 2, "batch_size": 32, "lr": 0.01}),
    ("hybrid", {"epochs": 2, "batch_size": 64, "lr": 0.05, "augment": False, "es_every": 1, "es_generations": 2,
                "es_popsize": 6, "sigma": 0.1}),
])
def test_other_methods_models_give_the_summarys_test_accuracy(tmp_path, algorithm, section):
    res = evoplat.run({"algorithm": algorithm, "seed": 2, "data": SYNTHETIC,
                       "model": {"name": "mlp", "hidden": [16, 16], "activation": "tanh"},
                       "runtime": {"backend": "local", "chunk_size": 2}, "run": {"checkpoint_every": 1},
                       algorithm: section}, run_dir=tmp_path / algorithm)
    net = evoplat.load_model(res.run_dir)
    data = load_dataset(res.config.data, None)
    with torch.no_grad():
        acc, _ = accuracy(net, data.x_test, data.y_test)
    assert acc == pytest.approx(res.summary["test_acc"], abs=1e-9)


def test_a_directory_without_a_network_is_a_one_line_error(tmp_path):
    with pytest.raises(RunDirError, match="is not a run directory"):
        evoplat.load_model(tmp_path)
    (tmp_path / "config.yaml").write_text("algorithm: es\n")
    with pytest.raises(CheckpointError, match="has no model.pt"):
        evoplat.load_model(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        evoplat.load_model(tmp_path)


def test_a_model_given_as_a_callable_comes_back_with_the_runs_own_config(tmp_path):
    def tiny_net(input_shape, num_outputs):        # not importable: config.yaml cannot name it
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, num_outputs))
    res = evoplat.run({"algorithm": "es", "seed": 1, "data": SYNTHETIC, "model": {"target": tiny_net},
                       "runtime": {"backend": "local", "chunk_size": 8}, "run": {"log_every": 100},
                       "es": {"popsize": 8, "generations": 2, "batch_size": 32}}, run_dir=tmp_path / "r")
    net = res.model()
    assert [p.shape for p in net.parameters()] == [torch.Size([4, 64]), torch.Size([4])]
    with pytest.raises(evoplat.ConfigError, match="pass load_model"):
        evoplat.load_model(res.run_dir)


@pytest.mark.parametrize("model", ["rso_mnist", "rso_cifar10"])
def test_an_rso_network_classifies_with_its_calibration_statistics(tmp_path, model):
    shape = [1, 8, 8] if model == "rso_mnist" else [3, 8, 8]
    res = evoplat.run({"algorithm": "rso", "seed": 5, "model": {"name": model},
                       "data": {"source": "synthetic", "synthetic_shape": shape, "val_size": 0,
                                "synthetic_train": 96, "synthetic_test": 32},
                       "run": {"max_steps": 2}, "rso": {"batch_size": 32, "cycles": 1}},
                      run_dir=tmp_path / "rso")
    net = res.model()
    data = load_dataset(res.config.data, None)
    with torch.no_grad():
        acc, _ = accuracy(net, data.x_test, data.y_test)
        batch_one = net(data.x_test[:1])               # a single image: no batch statistics involved
    assert acc == pytest.approx(res.summary["test_acc"], abs=1e-9)
    assert torch.allclose(batch_one, net(data.x_test[:5])[:1], atol=1e-5)
