"""PGPE and ClipUp: each step is the published formula (EvoTorch's symmetric PGPE), written out here
independently in float64; the optimizer's state continues through checkpoints; the config refuses
PGPE without mirrored pairs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evoplat.platform.config import ConfigError, build_config
from evoplat.platform.population.noise import CounterNoise
from evoplat.platform.population.shaping import centered_ranks
from evoplat.platform.strategies import PGPE, OpenAIES, build_strategy
from evoplat.platform.strategies.clipup import ClipUp
from evoplat.platform.strategies.optim import AdamFactory, apply_gradient, make_optimizer


def _pgpe_by_hand(center, sigma, members, fitness, lr, sigma_lr, max_change):
    """EvoTorch's SymmetricSeparableGaussian gradients, a plain gradient step on the center, the
    sigma step clamped to `max_change` of each sigma."""
    mu, s = center.double(), sigma.double()
    u = torch.from_numpy(centered_ranks(fitness))
    plus, minus = u[0::2], u[1::2]
    eps = members[0::2].double() - mu
    pairs = len(plus)
    grad_mu = ((plus - minus) / 2) @ eps / pairs
    grad_sigma = ((plus + minus) / 2) @ ((eps ** 2 - s ** 2) / s) / pairs
    new_sigma = s + sigma_lr * grad_sigma
    if max_change:
        new_sigma = torch.clamp(new_sigma, s - s.abs() * max_change, s + s.abs() * max_change)
    return mu + lr * grad_mu, new_sigma


@pytest.mark.parametrize("max_change", [0.0, 0.2, 0.01])
def test_pgpe_step_is_the_published_formula(max_change):
    dim, popsize = 7, 12
    noise = CounterNoise(3, dim)
    strat = PGPE(popsize, 0.5, make_optimizer("sgd", 0.3, momentum=0.0), sigma_lr=0.2, sigma_max_change=max_change)
    state = strat.init(torch.linspace(-1, 1, dim))
    state.sigma = torch.linspace(0.2, 0.8, dim)                 # per-parameter sigma, not all equal
    for _ in range(3):
        pop = strat.ask(state)
        members = noise.members(pop, 0, pop.size)
        assert torch.allclose(members[1::2] - state.center, -(members[0::2] - state.center), atol=1e-6)
        fitness = -((members - 0.5) ** 2).sum(1).numpy()
        want_center, want_sigma = _pgpe_by_hand(state.center, state.sigma, members, fitness, 0.3, 0.2, max_change)
        state, info = strat.tell(state, fitness, noise, pop)
        assert torch.allclose(state.center.double(), want_center, atol=1e-5)
        assert torch.allclose(state.sigma.double(), want_sigma, atol=1e-6)
        assert info["sigma_mean"] == pytest.approx(float(want_sigma.mean()), abs=1e-6)
    if max_change == 0.01:                                     # the clamp was the binding part
        assert not torch.allclose(state.sigma, torch.linspace(0.2, 0.8, dim))


def test_clipup_steps_are_the_paper_rule_and_the_speed_is_capped():
    lr, momentum, max_speed = 0.1, 0.9, 0.15
    param = torch.nn.Parameter(torch.zeros(3))
    opt = ClipUp([param], lr=lr, momentum=momentum, max_speed=max_speed)
    v, x = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    grads = [torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.0, 0.0, 10.0]), torch.tensor([1.0, 1.0, 1.0]),
             torch.tensor([3.0, 4.0, 0.0]), torch.tensor([3.0, 4.0, 0.0])]
    speeds = []
    for g in grads:
        param.grad = g.clone()
        opt.step()
        v = momentum * v + lr * g.double() / g.double().norm()
        if v.norm() > max_speed:
            v = v * (max_speed / v.norm())
        x = x - v
        speeds.append(float(v.norm()))
        assert torch.allclose(param.detach().double(), x, atol=1e-6)
    assert max(speeds) == pytest.approx(max_speed)             # capped at least once, never above
    assert ClipUp([torch.nn.Parameter(torch.zeros(1))], lr=0.5).defaults["max_speed"] == 1.0


def test_clipup_continues_through_its_state_dict():
    # apply_gradient rebuilds the optimizer from the state it wrote, as a resumed run does
    factory, gen = make_optimizer("clipup", 0.05), torch.Generator().manual_seed(0)
    param = torch.nn.Parameter(torch.randn(50, generator=gen))
    opt = factory([param])
    center, state = param.detach().clone(), {}
    for _ in range(5):
        grad = torch.randn(50, generator=gen)
        center, state = apply_gradient(factory, center, grad, state)
        param.grad = grad
        opt.step()
        assert torch.equal(center, param.detach())


def test_pgpe_optimises_a_quadratic_and_adapts_sigma():
    noise, dim = CounterNoise(0, 20), 20
    strat = PGPE(32, 0.3, make_optimizer("clipup", 0.1))
    state = strat.init(torch.zeros(dim))
    for _ in range(150):
        pop = strat.ask(state)
        fitness = -((noise.members(pop, 0, pop.size) - 1.0) ** 2).sum(1).numpy()
        state, _ = strat.tell(state, fitness, noise, pop)
    assert float((state.center - 1).norm()) < 0.25 * float(torch.ones(dim).norm())
    assert not torch.allclose(state.sigma, torch.full((dim,), 0.3))


def _es(**es):
    return build_config({"algorithm": "es", "data": {"source": "synthetic"}, "es": es}).es


def test_each_strategy_gets_its_own_optimizer_unless_one_is_named():
    assert isinstance(build_strategy(_es()).make_optimizer, AdamFactory)                # openai_es: Adam
    pgpe = build_strategy(_es(strategy="pgpe"))
    assert isinstance(pgpe, PGPE) and isinstance(pgpe.make_optimizer([torch.nn.Parameter(torch.zeros(1))]), ClipUp)
    assert isinstance(build_strategy(_es(strategy="pgpe", optimizer="adam")).make_optimizer, AdamFactory)
    clip = build_strategy(_es(optimizer="clipup", lr=0.02, max_speed=0.03))
    assert isinstance(clip, OpenAIES)
    assert clip.make_optimizer([torch.nn.Parameter(torch.zeros(1))]).defaults["max_speed"] == 0.03


def test_pgpe_needs_mirrored_pairs():
    with pytest.raises(ConfigError, match="es.antithetic must be true with es.strategy pgpe"):
        _es(strategy="pgpe", antithetic=False)


def test_a_resumed_pgpe_run_ends_where_an_unbroken_one_does(tmp_path):
    # sigma and ClipUp's velocity travel in the checkpoint: a run stopped at generation 2 and resumed
    # ends with the unbroken run's center, sigma and velocity, bit for bit
    import evoplat
    from conftest import synthetic_config
    from evoplat.platform.run.rundir import RunDirectory
    cfg = synthetic_config(runtime={"backend": "local"}, es={"strategy": "pgpe", "generations": 4},
                           run={"checkpoint_every": 2, "eval_every": 2})
    whole = evoplat.run(cfg, run_dir=tmp_path / "whole")
    evoplat.run(cfg, run_dir=tmp_path / "part", overrides={"run.max_steps": 2})
    resumed = evoplat.run(resume=tmp_path / "part", overrides={"run.max_steps": None})
    a, b = (RunDirectory(r.run_dir).load_latest()["strategy"] for r in (whole, resumed))
    assert a["generation"] == b["generation"] == 4
    assert torch.equal(a["center"], b["center"]) and torch.equal(a["sigma"], b["sigma"])
    assert not torch.equal(a["sigma"], torch.full_like(a["sigma"], 0.05))
    va, vb = (s["opt_state"]["state"][0]["velocity"] for s in (a, b))
    assert torch.equal(va, vb) and va.abs().sum() > 0
