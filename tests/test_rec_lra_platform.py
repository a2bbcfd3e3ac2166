"""rec-LRA on the platform: conv path, config, exact resume, a 2-seed population on real Ray workers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evoplat.platform.config import ConfigError, build_config, load_config
from evoplat.platform.run.rundir import load_checkpoint
from evoplat.methods.rec_lra.rule import RuleSettings
from evoplat.methods.rec_lra.conv import RecLRAResNet
from evoplat.methods.rec_lra import trainer

from conftest import run_in

ROOT = Path(__file__).resolve().parents[1]


def small_config(**rec):
    raw = {"algorithm": "rec_lra", "seed": 3,
           "data": {"source": "synthetic", "val_size": 32, "synthetic_train": 160, "synthetic_test": 64,
                    "synthetic_shape": [12]},
           "model": {"name": "mlp", "hidden": [16, 16, 16], "activation": "tanh"},
           "runtime": {"num_workers": 2, "cpus_per_worker": 1},
           "run": {"checkpoint_every": 1, "keep_checkpoints": 10},
           "rec_lra": {"epochs": 4, "batch_size": 32, "lr": 0.01, "input_noise": 0.1, **rec}}
    return build_config(raw)


def train(cfg, path, state=None):
    return run_in(cfg, path, state)[0]


def test_conv_updates_match_direct_computation():
    torch.manual_seed(0)
    net = RecLRAResNet((2, 6, 6), 3, width=0.125, blocks_per_stage=1).double()
    x, y = torch.randn(3, 2, 6, 6, dtype=torch.float64), torch.tensor([0, 1, 2])
    rule = RuleSettings(beta=0.2, gamma=0.5, ball_radius=0.0)
    net.compute_updates(x, y, rule)
    with torch.no_grad():
        rec = net.run_model(x)
    p = torch.softmax(rec["logits"], 1)
    eL = (p - F.one_hot(y, 3).double()).numpy()
    pooled = rec["pooled"].numpy()
    np.testing.assert_allclose(net.classifier.weight.grad.numpy(), eL.T @ pooled / 3, rtol=1e-10)
    # stem: target from the output error through the dense skip E, dW = correlation of e with x
    h, z = (t.numpy() for t in rec["stem"])
    d = (eL @ net.skip_E[0].detach().numpy().T).reshape(h.shape)
    e = z - np.maximum(h - 0.2 * d, 0)
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)))
    dW = np.zeros(net.stem.weight.shape)
    for ky in range(3):
        for kx in range(3):
            dW[:, :, ky, kx] = np.einsum("bohw,bihw->oi", e, xp[:, :, ky:ky + 6, kx:kx + 6]) / 3
    np.testing.assert_allclose(net.stem.weight.grad.numpy(), dW, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(net.skip_E[0].grad.numpy(), 0.5 * z.reshape(3, -1).T @ eL / 3, rtol=1e-9)


def test_conv_adjacent_operator_is_adjoint_of_its_kernel():
    """d = conv_transpose(e, E): the transposed conv E acts exactly where W^T would in backprop."""
    torch.manual_seed(1)
    net = RecLRAResNet((3, 8, 8), 4, width=0.25, blocks_per_stage=1)
    E = net.adj_E[0].detach()
    u, e = torch.randn(2, E.shape[1], 8, 8), torch.randn(2, E.shape[0], 8, 8)
    lhs = (F.conv2d(u, E, padding=1) * e).sum()
    rhs = (u * F.conv_transpose2d(e, E, padding=1)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-4)
    assert all(tuple(E.shape) == tuple(b.conv2.weight.shape) for E, b in zip(net.adj_E, net.blocks))


def test_resnet_trainer_runs_both_modes(tmp_path):
    for mode in ("rec_lra", "backprop"):
        cfg = build_config({"algorithm": "rec_lra", "data": {"source": "synthetic", "val_size": 16,
                            "synthetic_train": 64, "synthetic_test": 32, "synthetic_shape": [3, 8, 8]},
                            "model": {"name": "resnet20", "width": 0.25},
                            "rec_lra": {"mode": mode, "epochs": 1, "resnet_blocks": 1, "batch_size": 16,
                                        "augment": True}})
        out = train(cfg, tmp_path / mode)
        assert out["epochs"] == 1 and 0.0 <= out["test_acc"] <= 1.0


def test_exact_resume(tmp_path):
    cfg = small_config()
    full = train(cfg, tmp_path / "full")
    ckpt = load_checkpoint(sorted((tmp_path / "full" / "checkpoints").glob("step_*.pt"))[1])
    assert ckpt["algorithm"] == "rec_lra" and ckpt["learner"]["epoch"] == 2
    resumed = train(cfg, tmp_path / "resumed", ckpt)
    assert resumed["test_acc"] == full["test_acc"] and resumed["train_loss"] == full["train_loss"]
    a = load_checkpoint(sorted((tmp_path / "full" / "checkpoints").glob("step_*.pt"))[-1])["learner"]
    b = load_checkpoint(sorted((tmp_path / "resumed" / "checkpoints").glob("step_*.pt"))[-1])["learner"]
    for k in a["net"]:
        assert torch.equal(a["net"][k], b["net"][k]), k


def test_population_of_two_seeds_on_ray(ray_local, tmp_path):
    cfg = small_config(population=[1, 2], epochs=2)
    out, run = run_in(cfg, tmp_path / "pop")
    assert out["members"] == 2 and len(out["member_test_acc"]) == 2
    rows = [r for r in run.rows if r.get("phase") == "epoch"]
    assert sorted((r["step"], r["member"]) for r in rows) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    state = load_checkpoint(sorted((tmp_path / "pop" / "checkpoints").glob("step_*.pt"))[-1])
    assert len(state["members"]) == 2
    # each member equals the same seed trained alone on the driver: workers change nothing
    alone = small_config(epochs=2)
    alone.seed, alone.model.init_seed = 2, 2
    single = train(alone, tmp_path / "alone")
    assert single["test_acc"] == out["member_test_acc"][1]
    w_pop = state["members"][1]["net"]["layers.0.weight"]
    w_alone = load_checkpoint(sorted((tmp_path / "alone" / "checkpoints").glob("step_*.pt"))[-1])["learner"]
    assert torch.equal(w_pop, w_alone["net"]["layers.0.weight"])


def test_population_override_errors_are_named():
    cfg = small_config(population=[{"rec_lra.nonsense": 1}])
    with pytest.raises(ValueError, match="population.*nonsense"):
        trainer.member_configs(cfg)
    cfg = small_config(population=[{"rec_lra.beta": -1.0}])
    with pytest.raises(ValueError, match=r"population\[0\]"):
        trainer.member_configs(cfg)


def test_config_options_documented_and_experiments_valid():
    from evoplat.methods.rec_lra.config import RecLRAConfig
    assert all(f.description for f in RecLRAConfig.model_fields.values())
    with pytest.raises(ConfigError):
        build_config({"algorithm": "rec_lra", "rec_lra": {"e_rule": "magic"}})
    for name in ("rec_lra_mnist.yaml", "rec_lra_cifar10.yaml"):
        cfg = load_config(ROOT / "experiments" / name)
        assert cfg.algorithm == "rec_lra"
