"""Observation normalization for gym fitness: each member's observation sums are what it saw, the
statistics and the trained policy do not depend on the worker count and resume bit for bit, and the
exported policy takes raw observations and plays as the run's own evaluation did."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import evoplat
from evoplat.platform.config import build_config
from evoplat.platform.models import build_model
from evoplat.platform.population import obs_norm
from evoplat.platform.population.forward import ParamLayout, PopulationForward
from evoplat.platform.population.gym_task import GymTask, _episode_seed
from evoplat.platform.run.rundir import RunDirectory
from test_gym_fitness import cartpole_raw


def normalized_raw(**runtime) -> dict:
    raw = cartpole_raw(**runtime)
    raw["fitness"]["kwargs"].update(observation_normalization=True, obs_clip=3.0)
    raw["es"]["generations"] = 4
    raw["run"]["checkpoint_every"] = 2
    return raw


def test_member_rows_are_the_observations_each_member_acted_on():
    cfg = build_config(normalized_raw(backend="local"))
    task = GymTask(cfg, **cfg.fitness.kwargs)
    model = build_model(cfg.model, task.input_shape, task.num_outputs)
    theta = ParamLayout(model).flatten(model)
    thetas = theta + 0.5 * torch.randn(3, theta.numel(), generator=torch.Generator().manual_seed(0))
    task.member_fitness(PopulationForward(model, chunk_size=4), thetas, generation=2)
    rows = task.take_member_stats()
    assert rows.shape == (3, 9) and task.take_member_stats() is None

    # member 1 replayed by hand: the same episodes, observations recorded before each action
    layout, seen = ParamLayout(model), []
    layout.load_into(model, thetas[1])
    for e in range(cfg.fitness.kwargs["episodes"]):
        env = task._make()
        obs, _ = env.reset(seed=_episode_seed(cfg.seed, 2, e))
        done = False
        while not done:
            seen.append(np.asarray(obs, np.float32))
            with torch.no_grad():
                action = int(model(task.normalizer(torch.from_numpy(seen[-1]))[None]).argmax())
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    seen = np.stack(seen).astype(np.float64)
    assert rows[1, 0] == len(seen)
    np.testing.assert_allclose(rows[1, 1:5], seen.sum(0), rtol=1e-12)
    np.testing.assert_allclose(rows[1, 5:], (seen ** 2).sum(0), rtol=1e-12)


def test_random_action_episodes_seed_the_statistics():
    cfg = build_config(normalized_raw(backend="local"))
    made = lambda warmup, seed=None: GymTask(cfg if seed is None else build_config(  # noqa: E731
        {**normalized_raw(backend="local"), "seed": seed}), **{**cfg.fitness.kwargs, "warmup_episodes": warmup})
    stats = made(3).initial_state()
    # 3 episodes of at most 60 steps; the same seed gives the same statistics, another seed others
    assert 3 <= stats["count"].item() <= 180 and stats["sumsq"].min() > 0
    assert all(torch.equal(stats[k], made(3).initial_state()[k]) for k in ("count", "sum", "sumsq"))
    assert not torch.equal(stats["sum"], made(3, seed=7).initial_state()["sum"])
    assert made(0).initial_state()["count"].item() == 0
    mean, std = obs_norm.mean_std(stats, (4,))
    assert np.all(np.abs(mean) < 2) and np.all(std >= np.sqrt(obs_norm.MIN_VARIANCE))


def test_statistics_give_the_normalization():
    rng = np.random.default_rng(0)
    obs = rng.normal(3.0, 2.0, size=(500, 4)).astype(np.float32)
    obs[:, 3] = 1.0                                     # a constant feature: the variance floor holds
    rows = obs_norm.member_rows(2, (4,))
    for t in range(0, 500, 2):                          # two members, one step at a time
        obs_norm.accumulate(rows, np.array([0, 1]), obs[t:t + 2])
    stats = obs_norm.merge(obs_norm.merge(obs_norm.empty_stats((4,)), rows[:1]), rows[1:])
    mean, std = obs_norm.mean_std(stats, (4,))
    np.testing.assert_allclose(mean, obs.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(std[:3], obs[:, :3].astype(np.float64).std(0), rtol=1e-5)
    assert std[3] == np.float32(np.sqrt(obs_norm.MIN_VARIANCE))
    ident = obs_norm.mean_std(obs_norm.empty_stats((4,)), (4,))
    assert not ident[0].any() and (ident[1] == 1).all()


def test_workers_resume_and_the_exported_policy(ray_local, tmp_path, monkeypatch):
    local = evoplat.run(normalized_raw(backend="local"), run_dir=tmp_path / "local")
    ray2 = evoplat.run(normalized_raw(backend="ray", num_workers=2), run_dir=tmp_path / "ray")
    a, b = (RunDirectory(r.run_dir).load_latest()["strategy"] for r in (local, ray2))
    assert torch.equal(a["center"], b["center"])
    for k in ("count", "sum", "sumsq"):
        assert torch.equal(a["extra"]["task"][k], b["extra"]["task"][k])
    # 4 generations of 12 members, at least one observation each
    assert a["extra"]["task"]["count"].item() >= 48 and a["extra"]["task"]["sum"].abs().sum() > 0

    part = evoplat.run(normalized_raw(backend="local"), run_dir=tmp_path / "part",
                       overrides={"run.max_steps": 2})
    assert part.summary["steps"] == 2
    with monkeypatch.context() as m:      # resumed, the checkpoint's statistics are used, none built
        m.setattr(GymTask, "initial_state", lambda self: pytest.fail("initial statistics built on resume"))
        done = evoplat.run(resume=tmp_path / "part", overrides={"run.max_steps": None})
    c = RunDirectory(done.run_dir).load_latest()["strategy"]
    assert torch.equal(a["center"], c["center"]) and torch.equal(a["extra"]["task"]["sum"], c["extra"]["task"]["sum"])

    # the exported policy: normalizer + network, raw observations in, the run's evaluation out
    net = local.model()
    assert isinstance(net[0], obs_norm.ObservationNormalizer) and net[0].clip == 3.0
    mean, std = obs_norm.mean_std(a["extra"]["task"], (4,))
    assert torch.equal(net[0].mean, torch.from_numpy(mean)) and torch.equal(net[0].std, torch.from_numpy(std))
    plain = cartpole_raw(backend="local")
    cfg = build_config(plain)
    again = GymTask(cfg, **cfg.fitness.kwargs).evaluate(net, 0)
    assert again["test_return"] == local.summary["test_return"]


def _strategy(run) -> dict:
    return RunDirectory(run.run_dir).load_latest()["strategy"]


def test_the_workers_loop_gathers_the_statistics(ray_local, tmp_path):
    """`runtime.loop: workers`: the workers gather each member's rows and all merge them, so the run
    equals the driver loop's, with a worker that has no members (3 workers, 2 chunks) and when a stop
    inside a span of generations makes the driver replay the merges."""
    local = evoplat.run(normalized_raw(backend="local"), run_dir=tmp_path / "local")
    # chunks of 8: lock-step members score as alone (test_gym_fitness), so only the split differs
    raw = normalized_raw(num_workers=3, chunk_size=8, loop="workers", loop_span_s=1e6)
    loop = evoplat.run(raw, run_dir=tmp_path / "loop")
    a, b = _strategy(local), _strategy(loop)
    assert torch.equal(a["center"], b["center"])
    assert all(torch.equal(a["extra"]["task"][k], b["extra"]["task"][k]) for k in ("count", "sum", "sumsq"))

    best = local.metrics["fitness_max"].tolist()
    stop = {"target_metric": "fitness_max", "target_value": best[1], "checkpoint_every": 4, "eval_every": 4}
    first = next(g for g, v in enumerate(best, 1) if v >= best[1])
    runs = []
    for name, rt in (("driver", {"backend": "local"}), ("span", {"num_workers": 2, "loop": "workers",
                                                                  "loop_span_s": 1e6})):
        raw = normalized_raw(**rt)
        raw["run"].update(stop)
        runs.append(evoplat.run(raw, run_dir=tmp_path / name))
    ref, span = (_strategy(r) for r in runs)
    assert runs[1].summary["steps"] == first == runs[0].summary["steps"]
    assert torch.equal(ref["center"], span["center"]) and torch.equal(ref["extra"]["task"]["sum"],
                                                                      span["extra"]["task"]["sum"])


def test_without_normalization_nothing_changes(tmp_path):
    raw = cartpole_raw(backend="local")
    run = evoplat.run(raw, run_dir=tmp_path / "plain")
    assert "task" not in RunDirectory(run.run_dir).load_latest()["strategy"]["extra"]
    assert not any(isinstance(m, obs_norm.ObservationNormalizer) for m in run.model().modules())
