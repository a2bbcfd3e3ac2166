"""Keyed noise and the ask/tell strategies (pure processes, no Ray)."""
from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch

from evoplat.platform.population.noise import CounterNoise, NoiseTable, Population
from evoplat.platform.population.shaping import centered_ranks, nes_utilities, sanitize
from evoplat.platform.strategies import PGPE, ElitistES, OpenAIES, SNES, StrategyState
from evoplat.platform.strategies.optim import AdamFactory, make_optimizer


def test_noise_is_identical_in_another_process():
    here = CounterNoise(seed=11, dim=1000).vector(generation=3, key=5)
    code = ("import numpy as np, sys; from evoplat.platform.population.noise import CounterNoise;"
            "sys.stdout.buffer.write(CounterNoise(11, 1000).vector(3, 5).tobytes())")
    there = np.frombuffer(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout,
                          dtype=np.float32)
    assert np.array_equal(here, there)
    assert not np.array_equal(here, CounterNoise(11, 1000).vector(4, 5))
    assert not np.array_equal(here, CounterNoise(12, 1000).vector(3, 5))


def test_noise_table_slices_are_keyed():
    table = NoiseTable(seed=2, dim=100, size=5000)
    v = table.vector(1, 3)
    assert v.shape == (100,) and np.array_equal(v, NoiseTable(2, 100, 5000).vector(1, 3))
    assert not np.array_equal(v, table.vector(1, 4))
    assert abs(float(table.table.std()) - 1.0) < 0.05
    with pytest.raises(ValueError, match="holds fewer values than"):
        NoiseTable(0, 100, 50)


@pytest.mark.parametrize("make", [lambda: CounterNoise(0, 50), lambda: NoiseTable(0, 50, 4096)])
def test_antithetic_pairs_and_parent(make):
    noise = make()
    pop = Population(center=np.zeros(50, np.float32), scale=0.5, size=6, generation=2)
    m = noise.members(pop, 0, 6)
    torch.testing.assert_close(m[0], -m[1])
    torch.testing.assert_close(m[2], -m[3])
    assert not torch.allclose(m[0], m[2])
    elit = Population(center=np.ones(50, np.float32), scale=0.1, size=3, generation=0, antithetic=False,
                      parent_first=True)
    e = noise.members(elit, 0, 3)
    assert torch.equal(e[0], torch.ones(50))
    # members are the same whichever sub-range computes them
    torch.testing.assert_close(noise.members(pop, 3, 5), m[3:5], rtol=0, atol=0)


def test_combine_equals_explicit_sum():
    noise = CounterNoise(4, 30)
    pop = Population(center=np.zeros(30, np.float32), scale=1.0, size=8, generation=1)
    coeffs = np.linspace(-1, 1, 8)
    explicit = (torch.tensor(coeffs, dtype=torch.float32).unsqueeze(1) * noise.members(pop, 0, 8)).sum(0)
    np.testing.assert_allclose(noise.combine(pop, coeffs, chunk=3), explicit.numpy(), rtol=1e-5, atol=1e-5)
    squares = (torch.tensor(coeffs, dtype=torch.float32).unsqueeze(1) * noise.members(pop, 0, 8) ** 2).sum(0)
    np.testing.assert_allclose(noise.combine(pop, coeffs, power=2), squares.numpy(), rtol=1e-5, atol=1e-5)



@pytest.mark.parametrize("antithetic", [True, False])
@pytest.mark.parametrize("make", [lambda: CounterNoise(4, 30), lambda: NoiseTable(4, 30, 4096)])
def test_combine_both_is_the_two_combines_to_the_bit(make, antithetic):
    noise = make()
    pop = Population(center=np.zeros(30, np.float32), scale=1.0, size=10, generation=3, antithetic=antithetic)
    coeffs = np.linspace(-1, 1, 10)
    if antithetic:
        coeffs[5] = coeffs[4]        # a pair whose weight vanishes in the first power only
    first, second = noise.combine_both(pop, coeffs, chunk=3)
    assert np.array_equal(first, noise.combine(pop, coeffs, chunk=3))
    assert np.array_equal(second, noise.combine(pop, coeffs, power=2, chunk=3))
    assert not np.array_equal(first, second)

def test_nonfinite_fitness_ranks_worst():
    f = np.array([0.5, np.nan, 2.0, -np.inf, np.inf, 1.0])
    clean, bad = sanitize(f)
    assert bad == 3 and np.isfinite(clean).all()
    r = centered_ranks(f)
    assert r[2] == r.max() and set(np.argsort(r)[:3]) == {1, 3, 4}
    u = nes_utilities([3.0, 1.0, 2.0, 0.0])
    assert abs(u.sum()) < 1e-12 and u[0] == u.max()


def test_tied_members_share_their_weight_and_a_tied_population_does_not_move():
    np.testing.assert_allclose(centered_ranks([2.0, 1.0, 2.0, 0.0]), [1 / 3, -1 / 6, 1 / 3, -1 / 2])
    u = nes_utilities([3.0, 3.0, 1.0, 0.0])
    assert u[0] == u[1] and abs(u.sum()) < 1e-12 and u[0] > u[2]
    # every antithetic pair tied (a discrete fitness: episode returns at their cap, say): no step at all,
    # where ties ranked by member order would move the center along the pairs' noise every generation
    strat = OpenAIES(8, 0.1, make_optimizer("adam", 0.05))
    noise = CounterNoise(0, 6)
    state = strat.init(torch.zeros(6))
    for fitness in (np.full(8, 500.0), np.array([9.0, 9.0, 10.0, 10.0, 9.0, 9.0, 12.0, 12.0])):
        after, _ = strat.tell(state, fitness, noise, strat.ask(state))
        assert torch.equal(after.center, state.center)


@pytest.mark.parametrize("world", [2, 3])
def test_workers_summing_their_own_parameter_ranges_get_the_whole_sums_bits(world):
    # The workers' loop at full rank: each worker sums its range of the parameters over all keys (SplitSums);
    # the ranges put together must be the whole sum to the bit, first and second powers, odd dims included.
    from evoplat.platform.population.split_sums import parameter_ranges
    for dim in (101_770, 1_001, 70):
        noise = NoiseTable(4, dim, 4 * dim)
        pop = Population(center=np.zeros(dim, np.float32), scale=0.1, size=64, generation=3, antithetic=True)
        coeffs = np.random.default_rng(dim).normal(size=64)
        whole = noise.combine_both(pop, coeffs)
        ranges = parameter_ranges(dim, world)
        assert ranges[0][0] == 0 and ranges[-1][1] == dim and all(a % 64 == 0 for a, b in ranges if b > a)
        parts = [noise._sums(pop, coeffs, (1, 2), 256, a, b) for a, b in ranges]
        for power in (0, 1):
            assert np.array_equal(np.concatenate([p[power] for p in parts]), whole[power]), (dim, power)


@pytest.mark.parametrize("popsize", [64, 1100])
def test_long_table_vectors_start_on_rows_and_sum_as_key_by_key_adds_do(popsize):
    # A full-rank table's vectors start at multiples of its row length, inside the table, and its sums
    # (embedding_bag, by row; over several key blocks at the larger popsize) are the sums of the keys'
    # vectors added one by one; short vectors (low-rank factors) keep offsets at any value.
    from evoplat.platform.population.noise import KeyedNoise
    dim = 40_001
    noise = NoiseTable(4, dim, 1 << 22)
    for g in range(20):
        offs = noise.offsets(g, range(popsize))
        assert (offs % NoiseTable.ROW == 0).all() and (offs + dim <= noise.size).all() and len(np.unique(offs)) > 0.95 * popsize
    assert (NoiseTable(4, 1_188).offsets(3, range(4096)) % NoiseTable.ROW != 0).any()
    pop = Population(center=np.zeros(dim, np.float32), scale=0.1, size=popsize, generation=3, antithetic=True)
    coeffs = np.random.default_rng(popsize).normal(size=popsize)
    rows = noise.combine_both(pop, coeffs)
    one_by_one = KeyedNoise._sums(noise, pop, coeffs, (1, 2), 256)
    for power in (0, 1):
        np.testing.assert_allclose(rows[power], one_by_one[power], rtol=1e-4, atol=1e-4 * np.sqrt(popsize))


def _drive(strategy, steps, dim=20, seed=0):
    """Maximise -||x - 1||^2 with exact fitness; returns the final distance to the optimum."""
    noise = CounterNoise(seed, dim)
    state = strategy.init(torch.zeros(dim))
    for _ in range(steps):
        pop = strategy.ask(state)
        thetas = noise.members(pop, 0, pop.size)
        fitness = -((thetas - 1.0) ** 2).sum(1).numpy()
        state, _ = strategy.tell(state, fitness, noise, pop)
    return float((state.center - 1).norm()), state


@pytest.mark.parametrize("make", [
    lambda: OpenAIES(32, 0.1, make_optimizer("adam", 0.05)),
    lambda: OpenAIES(32, 0.1, make_optimizer("sgd", 0.05)),
    lambda: SNES(32, 0.3, lr_center=1.0),
    lambda: ElitistES(16, 0.1, success_rule=True),
])
def test_strategies_optimise_a_quadratic(make):
    start = float(torch.ones(20).norm())
    final, state = _drive(make(), 150)
    assert final < 0.5 * start


def test_elitist_never_worsens_and_state_roundtrips(tmp_path):
    strat = ElitistES(4, 0.5)
    noise = CounterNoise(1, 10)
    state = strat.init(torch.zeros(10))
    best = -np.inf
    for _ in range(30):
        pop = strat.ask(state)
        fitness = -((noise.members(pop, 0, pop.size) - 1) ** 2).sum(1).numpy()
        state, info = strat.tell(state, fitness, noise, pop)
        now = -float(((state.center - 1) ** 2).sum())
        assert now >= best - 1e-6
        best = now
    torch.save(state.to_dict(), tmp_path / "s.pt")
    again = StrategyState.from_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert torch.equal(again.center, state.center) and again.generation == 30


def test_openai_es_state_roundtrip_gives_same_next_step(tmp_path):
    strat = OpenAIES(8, 0.1, make_optimizer("adam", 0.01))
    _, state = _drive(strat, 3, dim=6)
    torch.save(state.to_dict(), tmp_path / "s.pt")
    restored = StrategyState.from_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    noise = CounterNoise(0, 6)
    f = np.arange(8, dtype=np.float32)
    a, _ = strat.tell(state, f, noise, strat.ask(state))
    b, _ = strat.tell(restored, f, noise, strat.ask(restored))
    assert torch.equal(a.center, b.center)


@pytest.mark.parametrize("antithetic,parent_first", [(True, False), (True, True), (False, False), (False, True)])
@pytest.mark.parametrize("power", [1, 2])
def test_key_weights_merge_members_by_key_in_member_order(antithetic, parent_first, power):
    noise = CounterNoise(0, 4)
    for size in (1, 2, 9, 256):
        pop = Population(center=np.zeros(4, np.float32), scale=0.1, size=size, generation=0,
                         antithetic=antithetic, parent_first=parent_first)
        coeffs = np.random.default_rng(size).standard_normal(size).astype(np.float32)
        expected = np.zeros(pop.num_keys)
        for i, c in enumerate(coeffs.astype(np.float64)):
            key, sign = pop.key_sign(i)
            if key >= 0:
                expected[key] += c * (sign if power % 2 else 1.0)
        assert np.array_equal(noise.key_weights(pop, coeffs, power), expected)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_tell_leaves_the_state_it_is_given_as_it_was(optimizer):
    # A state is a value: telling it twice gives the same next state, and an earlier generation's
    # state kept by a caller (to compare, restart or checkpoint later) is not moved along.
    strat = OpenAIES(8, 0.1, make_optimizer(optimizer, 0.01))
    _, state = _drive(strat, 3, dim=6)
    before = copy.deepcopy(state.to_dict())
    noise, f = CounterNoise(0, 6), np.arange(8, dtype=np.float32)
    a, _ = strat.tell(state, f, noise, strat.ask(state))
    b, _ = strat.tell(state, f, noise, strat.ask(state))
    assert torch.equal(a.center, b.center)
    for k, v in before["opt_state"]["state"][0].items():
        assert torch.equal(state.opt_state["state"][0][k], v), k


@pytest.mark.parametrize("make", [
    lambda: OpenAIES(8, 0.1, make_optimizer("adam", 0.01), weight_decay=0.01),
    lambda: OpenAIES(8, 0.1, make_optimizer("sgd", 0.01)),
    lambda: PGPE(8, 0.1, make_optimizer("adam", 0.01)),
    lambda: SNES(8, 0.1),
])
def test_an_owned_state_advances_in_place_to_the_same_bits(make):
    # The ES loops hand over the states they made themselves (owned): a strategy that can then updates
    # their tensors rather than copies, to the same next state as from a state kept elsewhere.
    from evoplat.platform.population.generation import advance
    strat = make()
    _, state = _drive(strat, 3, dim=6)
    noise = CounterNoise(0, 6)
    for f in (np.arange(8, dtype=np.float32), np.arange(8, 0, -1, dtype=np.float32)):
        kept = copy.deepcopy(state)
        pure, _ = advance(strat, kept, f, noise, strat.ask(kept))
        owned, _ = advance(strat, state, f, noise, strat.ask(state), owned=True)
        assert torch.equal(pure.center, owned.center) and torch.equal(torch.as_tensor(pure.sigma),
                                                                     torch.as_tensor(owned.sigma))
        for k, v in pure.opt_state.get("state", {}).get(0, {}).items():
            assert torch.equal(owned.opt_state["state"][0][k], v), k
        # with Adam's fused step, in place indeed: the owned state's center is the new one
        assert (owned.center is state.center) == isinstance(getattr(strat, "make_optimizer", None), AdamFactory)
        state = owned


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_shortcut_takes_torch_adams_steps_bit_for_bit(weight_decay):
    # The flat-center shortcut must be the step torch.optim.Adam takes, state dict included, so that a
    # run's numbers and its checkpoints do not depend on which of the two paths made them. It continues
    # whatever state torch wrote, hyperparameters included (here a weight decay its factory lacks).
    from evoplat.platform.strategies.optim import AdamFactory, apply_gradient
    factory = AdamFactory(0.01)
    gen = torch.Generator().manual_seed(0)
    param = torch.nn.Parameter(torch.randn(1000, generator=gen))
    opt = torch.optim.Adam([param], lr=0.01, weight_decay=weight_decay, fused=True)
    param.grad = torch.randn(1000, generator=gen)
    opt.step()
    center, state = param.detach().clone(), copy.deepcopy(opt.state_dict())
    for _ in range(4):
        grad = torch.randn(1000, generator=gen)
        assert factory.step(center, grad, state) is not None
        center, state = apply_gradient(factory, center, grad, state)
        param.grad = grad
        opt.step()
        assert torch.equal(center, param.detach())
        expected = opt.state_dict()
        assert state["param_groups"] == expected["param_groups"]
        for k, v in expected["state"][0].items():
            assert torch.equal(state["state"][0][k], v), k
