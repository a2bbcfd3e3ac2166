"""Low-rank perturbations and the structured (shared-base) forward, pure torch (no Ray)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from evoplat.platform.population.forward import ParamLayout, PopulationForward
from evoplat.platform.population.kept import KeptValue
from evoplat.platform.population.lowrank import LowRankNoise, RecentFactors, make_perturbation
from evoplat.platform.population.noise import Population
from evoplat.platform.strategies import OpenAIES, SNES
from evoplat.platform.strategies.optim import make_optimizer


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5))


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2), nn.Tanh(),
                         nn.Flatten(), nn.Linear(24, 3))


def test_lowrank_directions_have_rank_r_and_unit_variance():
    layout = ParamLayout(nn.Sequential(nn.Linear(300, 200), nn.Conv2d(3, 8, 3)))
    noise = make_perturbation("lowrank", "counter", layout, rank=3, seed=1)
    assert isinstance(noise, LowRankNoise)
    d = noise.directions(0, [4, 5])
    views = layout.unflatten(d[0])
    assert torch.linalg.matrix_rank(views["0.weight"]) == 3
    assert torch.linalg.matrix_rank(views["1.weight"].reshape(8, 27)) == 3
    assert views["0.bias"].shape == (200,) and torch.linalg.matrix_rank(d[:, :60000].T) == 2  # keys differ
    assert abs(float(views["0.weight"].std()) - 1.0) < 0.1
    assert torch.equal(d[1], noise.directions(0, [5])[0])                    # a pure function of the key
    assert not torch.equal(d[0], noise.directions(1, [4])[0])                # ...and of the generation


def test_lowrank_noise_is_identical_in_another_process():
    layout = ParamLayout(_mlp())
    here = make_perturbation("lowrank", "table", layout, rank=2, seed=7).vector(3, 11)
    code = ("import sys, torch; from torch import nn; from evoplat.platform.population.forward import ParamLayout;"
            "from evoplat.platform.population.lowrank import make_perturbation; torch.manual_seed(0);"
            "m = nn.Sequential(nn.Flatten(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5));"
            "sys.stdout.buffer.write(make_perturbation('lowrank', 'table', ParamLayout(m), 2, seed=7)"
            ".vector(3, 11).tobytes())")
    there = np.frombuffer(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout,
                          dtype=np.float32)
    assert np.array_equal(here, there)


def _linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(20, 5))        # one weight layer: first and last


@pytest.mark.parametrize("make,shape", [(_mlp, (7, 20)), (_cnn, (5, 3, 6, 6)), (_linear, (7, 20))])
@pytest.mark.parametrize("kind", ["full", "lowrank"])
@pytest.mark.parametrize("source", ["counter", "table"])
@pytest.mark.parametrize("vector_sigma", [False, True])
@pytest.mark.parametrize("block", [None, 2, 3])
@pytest.mark.parametrize("parent_first", [False, True])    # member 0 without noise (key -1)
def test_structured_forward_equals_materialised_members(make, shape, kind, source, vector_sigma, block,
                                                        parent_first):
    model = make()
    forward = PopulationForward(model, chunk_size=8)
    forward.chain.block_members = block          # blocks that keep antithetic pairs (2) and split them (3)
    layout = forward.layout
    noise = make_perturbation(kind, source, layout, rank=2, table_size=5000 if source == "table" else 0, seed=3)
    scale = np.random.default_rng(0).uniform(0.05, 0.2, layout.size).astype(np.float32) if vector_sigma else 0.1
    pop = Population(center=layout.flatten(model).numpy(), scale=scale, size=10, generation=2,
                     parent_first=parent_first)
    x = torch.randn(*shape)
    for start, stop, paired in ((0, 8, True), (1, 9, False)):   # pairs in order; a member without its pair
        chunk = noise.chunk(pop, start, stop)
        assert chunk.paired == (paired != parent_first)      # the parent shifts the pairs by one
        if parent_first and start == 0:     # the parent's noise is zero, not only multiplied by a zero sign
            for off, shape in zip(layout.offsets, layout.shapes):
                assert not chunk.member_noise(off, shape)[0].any()
        structured = forward.logits(chunk, x)
        assert forward.chain is not None                   # the chain path really ran
        torch.testing.assert_close(structured, forward.logits(chunk.materialize(), x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make,shape", [(_mlp, (5, 20)), (_cnn, (5, 3, 6, 6))])
def test_the_first_layers_base_is_shared_by_a_populations_chunks_only(make, shape):
    model = make()
    forward = PopulationForward(model, chunk_size=4)
    noise = make_perturbation("full", "counter", forward.layout, seed=0)
    center = forward.layout.flatten(model).numpy()
    x = torch.randn(*shape)
    a = Population(center=center, scale=0.1, size=8, generation=0)
    forward.logits(noise.chunk(a, 0, 4), x)
    base = forward.chain._base._value
    forward.logits(noise.chunk(a, 4, 8), x)
    assert forward.chain._base._value is base                          # the population's second chunk reuses it
    for pop, batch in ((Population(center=center + 0.5, scale=0.1, size=8, generation=0), x),  # another center
                       (a, torch.randn(*shape))):                                            # another batch
        chunk = noise.chunk(pop, 0, 4)
        torch.testing.assert_close(forward.logits(chunk, batch), forward.logits(chunk.materialize(), batch),
                                   rtol=1e-4, atol=1e-5)


def test_unsupported_models_fall_back_to_materialised_members():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    forward = PopulationForward(model, chunk_size=4)
    noise = make_perturbation("lowrank", "counter", forward.layout, rank=1, seed=0)
    pop = Population(center=forward.layout.flatten(model).numpy(), scale=0.1, size=4, generation=0)
    x = torch.randn(5, 6)
    chunk = noise.chunk(pop, 0, 4)
    assert forward.chain is None
    assert torch.equal(forward.logits(chunk, x), forward.logits(chunk.materialize(), x))


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("power", [1, 2])        # 2: the square as a product of rank r(r+1)/2
@pytest.mark.parametrize("chunk", [256, 1])      # one key block; blocks of 16 keys added to the first
def test_lowrank_combine_equals_explicit_sum(power, chunk, rank):
    layout = ParamLayout(_cnn())
    noise = make_perturbation("lowrank", "counter", layout, rank=rank, seed=4)
    pop = Population(center=np.zeros(layout.size, np.float32), scale=1.0, size=70, generation=1)
    coeffs = np.linspace(-1, 1, 70)
    members = noise.members(pop, 0, 70)
    explicit = (torch.tensor(coeffs, dtype=torch.float32).unsqueeze(1) * members ** power).sum(0)
    np.testing.assert_allclose(noise.combine(pop, coeffs, power=power, chunk=chunk), explicit.numpy(),
                               rtol=1e-4, atol=1e-4)



def test_lowrank_combine_both_is_the_two_combines_to_the_bit():
    layout = ParamLayout(_cnn())
    noise = make_perturbation("lowrank", "table", layout, rank=2, seed=4)
    pop = Population(center=np.zeros(layout.size, np.float32), scale=1.0, size=12, generation=2)
    coeffs = np.linspace(-1, 1, 12)
    first, second = noise.combine_both(pop, coeffs)
    assert np.array_equal(first, noise.combine(pop, coeffs))
    assert np.array_equal(second, noise.combine(pop, coeffs, power=2))

@pytest.mark.parametrize("source", ["counter", "table"])
def test_update_reads_the_evaluations_factors_to_the_bit(source):
    """The update reuses factor rows this process drew for its evaluation (RecentFactors): the same bits
    as drawing them all, whether the evaluation covered every key, some of them, or another generation."""
    layout = ParamLayout(_cnn())
    make = lambda: make_perturbation("lowrank", source, layout, rank=2,  # noqa: E731
                                     table_size=9000 if source == "table" else 0, seed=3)
    pop = Population(center=np.zeros(layout.size, np.float32), scale=0.1, size=20, generation=4)
    coeffs = np.random.default_rng(1).normal(size=20)
    RecentFactors._current.clear()
    drawn = make().combine(pop, coeffs)
    evaluator = make()                    # the evaluator's own instance, as in a worker
    for ranges in ([(0, 8), (8, 16), (16, 20)], [(4, 10), (14, 18)], [(0, 20)]):
        RecentFactors._current.clear()
        for a, b in ranges:
            evaluator.chunk(pop, a, b)
        buf, filled = RecentFactors.buffer(evaluator._base_id(), 4)
        assert filled == [(a // 2, b // 2) for a, b in ranges]
        assert np.array_equal(make().combine(pop, coeffs), drawn)
    RecentFactors._current.clear()
    evaluator.chunk(Population(pop.center, 0.1, 20, generation=5), 0, 20)    # another generation's rows
    assert RecentFactors.buffer(evaluator._base_id(), 4) == (None, [])
    assert np.array_equal(make().combine(pop, coeffs), drawn)


def test_update_reads_the_rows_other_workers_wrote_into_shared_memory():
    """With the rows in memory the workers share, the update takes the rows another worker wrote (its
    stamps say which) and draws only the keys nobody evaluated; rows of two generations ago in the
    same half of the memory are not taken for this generation's."""
    layout = ParamLayout(_cnn())
    make = lambda: make_perturbation("lowrank", "table", layout, rank=2, table_size=9000, seed=3)  # noqa: E731
    noise = make()
    pop = Population(center=np.zeros(layout.size, np.float32), scale=0.1, size=20, generation=4)
    coeffs = np.random.default_rng(1).normal(size=20)
    RecentFactors.share(None)
    drawn = make().combine(pop, coeffs)
    memory = np.zeros(RecentFactors.shared_bytes(pop.num_keys, noise.base.dim), dtype=np.uint8)
    try:
        RecentFactors.share(memory, pop.num_keys, noise.base.dim)
        noise.chunk(Population(pop.center, 0.1, 20, generation=2), 0, 20)    # generation 2: the same half
        noise.chunk(pop, 8, 16)                     # "the other worker": keys 4-7
        RecentFactors.share(memory, pop.num_keys, noise.base.dim)           # this worker forgets its own
        noise.chunk(pop, 0, 8)                      # this worker: keys 0-3; keys 8-9 nobody evaluated
        _, filled = RecentFactors.buffer(noise._base_id(), 4)
        assert filled == [(0, 8)]
        drawn_here = []
        block = noise.base.block
        noise.base.block = lambda g, keys, out=None: drawn_here.append(list(keys)) or block(g, keys, out=out)
        assert np.array_equal(noise.combine(pop, coeffs), drawn)
        assert drawn_here == [[8, 9]]
    finally:
        RecentFactors.share(None)


@pytest.mark.parametrize("make", [lambda: OpenAIES(32, 0.1, make_optimizer("adam", 0.05)),
                                  lambda: SNES(32, 0.3, lr_center=1.0)])
def test_strategies_optimise_with_lowrank_noise(make):
    """-||W - 1||^2 over a 10x10 matrix and a bias: rank-1 noise still finds the optimum."""
    layout = ParamLayout(nn.Linear(10, 10))
    noise = make_perturbation("lowrank", "counter", layout, rank=1, seed=0)
    strategy = make()
    state = strategy.init(torch.zeros(layout.size))
    for _ in range(200):
        pop = strategy.ask(state)
        fitness = -((noise.members(pop, 0, pop.size) - 1.0) ** 2).sum(1).numpy()
        state, _ = strategy.tell(state, fitness, noise, pop)
    assert float((state.center - 1).norm()) < 0.5 * float(torch.ones(layout.size).norm())


@pytest.mark.parametrize("kind,source", [("full", "table"), ("full", "counter"), ("lowrank", "table"),
                                         ("lowrank", "counter")])
@pytest.mark.parametrize("population", ["antithetic", "plain", "parent_first", "per_parameter_sigma"])
def test_a_chunk_materialises_its_members_as_the_noise_does_to_the_bit(kind, source, population):
    layout = ParamLayout(_cnn())
    noise = make_perturbation(kind, source, layout, rank=2, seed=5)
    center = np.random.default_rng(1).standard_normal(layout.size).astype(np.float32)
    scale = np.full(layout.size, 0.03, np.float32) if population == "per_parameter_sigma" else 0.07
    pop = Population(center=center, scale=scale, size=11, generation=4, antithetic=population != "plain",
                     parent_first=population == "parent_first")
    for start, stop in ((0, 11), (3, 8)):          # a range that starts and ends inside antithetic pairs
        assert torch.equal(noise.chunk(pop, start, stop).materialize(), noise.members(pop, start, stop))


def test_a_kept_value_is_reused_only_for_the_same_objects_and_an_equal_tag():
    kept, calls = KeptValue(), []

    def compute():
        calls.append(1)
        return len(calls)

    a, b = torch.zeros(2), torch.zeros(2)          # equal, but not the same object
    assert kept.get((a,), compute, tag="cpu") == 1
    assert kept.get((a,), compute, tag="cpu") == 1
    assert kept.get((b,), compute, tag="cpu") == 2
    assert kept.get((b,), compute, tag="meta") == 3
    assert kept.get((), compute) == 4 and kept.get((), compute) == 5      # nothing to key on: never kept


@pytest.mark.parametrize("source", ["counter", "table"])
def test_a_base_chunk_holds_the_keys_vectors_to_the_bit(source):
    # what a low-rank chunk's factor rows are gathered from off the CPU (LowRankNoise.chunk_noise)
    base = make_perturbation("full", source, ParamLayout(_mlp()), table_size=5000 if source == "table" else 0,
                             seed=2)
    keys = [-1, 0, 3, 4]                                     # a parent (key -1) has a zero vector
    assert torch.equal(base.chunk_noise(7, keys, "cpu").directions(), torch.from_numpy(base.block(7, keys)))
