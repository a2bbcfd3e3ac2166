"""Grad-Instructor core, in a plain process: the resize, the guided gradient, one RL update."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from evoplat.platform.config import ConfigError, build_config
from evoplat.methods.grad_instructor.enn import ENN, Instructor, Resize, build_enn, guided_extra_loss, target_image
from evoplat.methods.grad_instructor.rl import (FlatAdam, enn_from_vector, enn_vector, episode_items,
                                             pgpe_gradient, pgpe_noise, value_update)
from evoplat.platform.models import MLP


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("shape", [(100, 784), (37, 53), (16, 64)])
def test_resize_matches_interpolate(shape, antialias):
    x = torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(0))
    got = Resize(0.15, antialias)(x)
    ref = F.interpolate(x, scale_factor=0.15, mode="bilinear", align_corners=False, antialias=antialias)
    assert got.shape == ref.shape == (1, 1, math.floor(0.15 * shape[0]), math.floor(0.15 * shape[1]))
    # torch computes the source coordinate in float32: differences of order 1e-4 on wide images
    torch.testing.assert_close(got, ref, atol=1e-3, rtol=0)


def test_resize_keeps_only_some_weights_without_antialias():
    """Plain bilinear sampling at 0.15 reads few weights; antialias reads every one (why it is the default)."""
    w = torch.randn(1, 1, 100, 784, requires_grad=True)
    reached = {}
    for antialias in (False, True):
        grad, = torch.autograd.grad(Resize(0.15, antialias)(w).sum(), w)
        reached[antialias] = float((grad != 0).float().mean())
    assert reached[False] < 0.2 and reached[True] > 0.95    # (the filter's last edge pixel gets weight 0)


def _mlp_and_instructor(source="first_layer"):
    torch.manual_seed(0)
    model = MLP(64, [16], 4)
    enn = build_enn([4, 8], seed=1)
    with torch.no_grad():                       # a non-trivial ENN (a fresh one has a zero head)
        enn.head.weight.normal_(0, 1.0)
    probe = torch.randn(32, 1, 8, 8)
    return model, Instructor(enn, source, 0.15 if source == "first_layer" else 0.5, True, probe)


@pytest.mark.parametrize("source", ["first_layer", "activations"])
def test_guided_step_increases_enn_score(source):
    model, inst = _mlp_and_instructor(source)
    extra = guided_extra_loss(inst, weight=2.0)
    before = float(inst.score(model).detach())
    params = list(model.parameters())
    grads = torch.autograd.grad(extra(model), params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    with torch.no_grad():                       # a small descent step on  -lambda * score
        for p, g in zip(params, grads):
            if g is not None:
                p -= 1e-3 * g
    assert float(inst.score(model).detach()) > before


def test_guided_loss_gradient_is_task_gradient_minus_lambda_score_gradient():
    model, inst = _mlp_and_instructor()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 4, (16,))
    params = list(model.parameters())
    task = F.cross_entropy(model(x), y)
    full = torch.autograd.grad(task + guided_extra_loss(inst, 3.0)(model), params)
    g_task = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    g_score = torch.autograd.grad(inst.score(model), params, allow_unused=True)
    for f, t, s in zip(full, g_task, g_score):
        torch.testing.assert_close(f, t - 3.0 * (s if s is not None else torch.zeros_like(t)))
    assert all(p.grad is None for p in inst.enn.parameters())     # the ENN stays frozen


def test_weight_image_is_first_layer_scaled_by_sqrt_fan_in():
    model = MLP(64, [16], 4)
    img = target_image(model, "first_layer")
    assert img.shape == (1, 1, 16, 64)
    torch.testing.assert_close(img[0, 0], model.net[1].weight * 8.0)


def test_pgpe_update_moves_enn_toward_rewarded_direction():
    """Reward = one ENN coordinate: an update must increase that coordinate (Adam's first step is
    lr * sign(grad), and the estimate's component there is sum_i eps_ij^2 > 0)."""
    cfg = build_config({"algorithm": "grad_instructor",
                        "grad_instructor": {"episodes_per_update": 8, "pgpe_sigma": 0.1, "enn_lr": 0.01}})
    g = cfg.grad_instructor
    phi = enn_vector(ENN([4, 8]))
    j = 5
    rewards = []
    for update, pair, sign in episode_items(g, 0)[:g.episodes_per_update]:
        member = phi + sign * g.pgpe_sigma * pgpe_noise(cfg.seed, update, pair, phi.numel())
        rewards.append(float(member[j]))
    grad = pgpe_gradient(g, cfg.seed, 0, rewards, phi.numel())
    new = FlatAdam(phi.numel(), g.enn_lr).ascend(phi, grad)
    assert grad[j] > 0
    assert new[j] == pytest.approx(float(phi[j]) + g.enn_lr, rel=1e-4)


def test_pgpe_antithetic_pairs_share_noise_and_target_seed():
    cfg = build_config({"algorithm": "grad_instructor", "grad_instructor": {"episodes_per_update": 4}})
    items = episode_items(cfg.grad_instructor, 3)
    # the centre episode gets a pair index of its own: an independent target, not a copy of pair 0's
    assert items == [(3, 0, 1.0), (3, 0, -1.0), (3, 1, 1.0), (3, 1, -1.0), (3, 4, 0.0)]


def test_value_update_moves_critic_toward_returns():
    cfg = build_config({"algorithm": "grad_instructor",
                        "grad_instructor": {"rl_rule": "value", "value_steps": 5, "enn_lr": 0.01}})
    g = cfg.grad_instructor
    phi = enn_vector(build_enn(g.enn_channels, 0))
    images = torch.randn(6, 1, 3, 12)
    returns = torch.full((6,), 0.9)
    before = (enn_from_vector(g.enn_channels, phi)(images) - returns).pow(2).mean()
    new, _ = value_update(g, g.enn_channels, phi, FlatAdam(phi.numel(), g.enn_lr), images, returns)
    after = (enn_from_vector(g.enn_channels, new)(images) - returns).pow(2).mean()
    assert after < before


def test_config_rejects_odd_pgpe_population():
    with pytest.raises(ConfigError, match="episodes_per_update"):
        build_config({"algorithm": "grad_instructor", "grad_instructor": {"episodes_per_update": 3}})


def test_config_rejects_missing_enn_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="no ENN artefact"):
        build_config({"algorithm": "grad_instructor", "grad_instructor": {"enn_checkpoint": str(tmp_path)}})
