"""RSO core on synthetic data: networks, visiting order, sigma schedule, decisions vs brute force."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evoplat.platform.config import build_config
from evoplat.platform.data import load_dataset
from evoplat.platform.models import build_model
from evoplat.methods.rso.search import RSOSearch, choose
from evoplat.methods.rso.plan import anneal_scale, group_batches, perturbations, visiting_order
from evoplat.methods.rso.shard import MergeGuard, apply_changes, shard_ranges

torch.set_num_threads(1)


def small_cfg(model="rso_mnist", shape=(1, 8, 8), mode="fast", **rso):
    return build_config({
        "algorithm": "rso", "seed": 5,
        "data": {"source": "synthetic", "synthetic_shape": list(shape), "val_size": 0,
                 "synthetic_train": 96, "synthetic_test": 32},
        "model": {"name": model},
        "rso": {"batch_size": 32, "cycles": 3, "mode": mode, **rso}})


def make_search(cfg, data=None, record=True):
    data = data or load_dataset(cfg.data)
    net = build_model(cfg.model, data.input_shape, data.num_classes)
    return RSOSearch(net, data, cfg.rso, cfg.seed, record_decisions=record), data


def test_networks_match_the_paper():
    mnist = build_model(small_cfg().model, (1, 28, 28), 10)
    assert sum(p.numel() for p in mnist.parameters()) == 6 * 16 * 9 * 16 - 15 * 16 * 9 + 6 * 32 + 160  # 12016
    assert all(c.bias is None for c in mnist.convs) and mnist.fc.bias is None
    assert mnist(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    cifar = build_model(small_cfg("rso_cifar10").model, (3, 32, 32), 10)
    assert [c.out_channels for c in cifar.convs] == [16, 16, 16, 32, 32, 32, 32, 32, 32]
    assert list(cifar.projs.keys()) == ["4"] and cifar.projs["4"].weight.shape == (32, 16, 1, 1)
    assert cifar(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("model,shape", [("rso_mnist", (1, 8, 8)), ("rso_cifar10", (3, 8, 8))])
def test_running_from_any_block_equals_the_whole_network(model, shape):
    net = build_model(small_cfg(model).model, shape, 4)
    x = torch.randn(16, *shape)
    full = net(x)
    outs = {-1: x}
    with torch.no_grad():
        for k in range(net.num_blocks):
            tail = net.head(net.run_blocks(k, {j: outs[j] for j in net.needed_outputs(k)}))
            torch.testing.assert_close(tail, full)
            src = outs.get(net.skips[k]) if k in net.skips else None
            outs[k] = net.block(k, outs[k - 1], src)


def test_visiting_order_and_sigmas_follow_the_authors_code():
    net = build_model(small_cfg("rso_cifar10").model, (3, 8, 8), 10)
    order = visiting_order(net)
    names = [s.name for s in order]
    assert names[:4] == ["fc.weight", "convs.8.weight", "bns.8.bias", "bns.8.weight"]
    i = names.index("convs.4.weight")
    assert names[i:i + 6] == ["convs.4.weight", "bns.4.bias", "bns.4.weight", "projs.4.weight",
                              "proj_bns.4.bias", "proj_bns.4.weight"]
    assert names[-3:] == ["convs.0.weight", "bns.0.bias", "bns.0.weight"]
    sig = {s.name: s.sigma for s in order}
    assert sig["fc.weight"] == pytest.approx(math.sqrt(2 / 32))
    assert sig["convs.4.weight"] == pytest.approx(math.sqrt(2 / (32 * 9)))
    assert sig["projs.4.weight"] == sig["convs.4.weight"]          # the main conv's std
    assert sig["convs.0.weight"] == pytest.approx(math.sqrt(2 / (3 * 9)))
    assert sig["bns.3.weight"] == sig["proj_bns.4.bias"] == 0.167
    # offsets: a group's tensors continue one batch cycle
    assert [s.offset for s in order if s.group == 4] == [0, 9216, 9248, 9280, 9792, 9824]


def test_sigma_anneals_linearly_to_the_floor():
    assert anneal_scale(0, 50, 0.1) == 1.0
    assert anneal_scale(49, 50, 0.1) == pytest.approx(0.1 + 0.9 / 50)
    assert anneal_scale(25, 50, 0.1) == pytest.approx(0.55)
    search, _ = make_search(small_cfg())
    assert search.sigma(2, 0) == pytest.approx(search.order[0].sigma * (0.1 + 0.9 * 1 / 3))
    d = perturbations(1, 0, 0, 200_000, 0.5)
    assert float(d.std()) == pytest.approx(0.5, rel=0.01)
    assert torch.equal(d, perturbations(1, 0, 0, 200_000, 0.5))     # a shard redraws the same values


def test_choose_breaks_ties_towards_keeping_w():
    assert choose(torch.tensor([1.0, 1.0, 1.0])) == 0
    assert choose(torch.tensor([2.0, 1.0, 1.0])) == 1
    assert choose(torch.tensor([2.0, 3.0, 1.0])) == 2
    assert choose(torch.tensor([1.0, 3.0, 1.0])) == 0


def brute_force_rso(net, data, cfg, seed, cycle, budget):
    """An independent plain implementation: decay, three whole-network passes, np.argmin."""
    decisions = []
    for ti, spec in enumerate(visiting_order(net)):
        batches = group_batches(seed, cycle, spec.group, len(data.x_train), cfg.batch_size, None)
        sigma = spec.sigma * anneal_scale(cycle, cfg.cycles, cfg.anneal_floor)
        deltas = perturbations(seed, cycle, ti, spec.numel, sigma)
        flat = net.get_parameter(spec.name).data.view(-1)
        for j in range(min(budget, spec.numel)):
            idx = batches[(spec.offset + j) % len(batches)]
            x, y = data.x_train[idx], data.y_train[idx]
            flat[j] = flat[j] * (1 - cfg.weight_decay)
            cands = [flat[j].clone(), flat[j] + deltas[j], flat[j] - deltas[j]]
            losses = []
            for c in cands:
                flat[j] = c
                losses.append(F.cross_entropy(net(x).double(), y, reduction="sum").item())
            win = int(np.argmin(losses))
            flat[j] = cands[win]
            decisions.append(win)
    return decisions


@pytest.mark.parametrize("model,shape", [("rso_mnist", (1, 8, 8)), ("rso_cifar10", (3, 8, 8))])
@pytest.mark.parametrize("mode", ["fast", "cached", "full"])
def test_decisions_equal_brute_force_full_network(model, shape, mode):
    cfg = small_cfg(model, shape, mode)
    search, data = make_search(cfg)
    ref_net = build_model(cfg.model, data.input_shape, data.num_classes)
    for p in ref_net.parameters():
        p.requires_grad_(False)
    budget = 3
    decisions = []
    for cycle in (0, 1):
        for ti in range(len(search.order)):
            decisions += search.sweep(cycle, ti, 0, budget).decisions
    with torch.no_grad():
        ref = brute_force_rso(ref_net, data, cfg.rso, cfg.seed, 0, budget)
        ref += brute_force_rso(ref_net, data, cfg.rso, cfg.seed, 1, budget)
    assert decisions == ref
    assert 0 < sum(d != 0 for d in decisions) < len(decisions)
    for (name, p), q in zip(search.net.named_parameters(), ref_net.parameters()):
        assert torch.equal(p, q), name


def test_ties_keep_the_decayed_weight():
    """Input channel 1 is all zeros: the conv0 weights reading it cannot change any loss."""
    cfg = small_cfg(shape=(2, 8, 8))
    data = load_dataset(cfg.data)
    data.x_train[:, 1] = 0.0
    search, _ = make_search(cfg, data)
    ti = next(i for i, s in enumerate(search.order) if s.name == "convs.0.weight")
    w = search.net.convs[0].weight.detach().clone().view(-1)
    stats = search.sweep(0, ti, 0, 18)            # filter 0: input channel 0 (9 weights), channel 1 (9)
    assert stats.decisions[9:] == [0] * 9
    assert any(d != 0 for d in stats.decisions[:9])
    after = search.net.convs[0].weight.view(-1)
    assert torch.equal(after[9:18], w[9:18] * (1 - 1e-4))


def test_cached_block_outputs_stay_equal_to_a_fresh_forward():
    cfg = small_cfg()
    search, data = make_search(cfg)
    ti = next(i for i, s in enumerate(search.order) if s.name == "convs.2.weight")
    search.sweep(0, ti, 0, 400)                   # crosses several output channels
    cache = search.cache
    for b in range(len(cache.current)):
        cache.refresh(b)
        x = data.x_train[search.batches[b]]
        outs = {-1: x}
        with torch.no_grad():
            for k in range(3):
                outs[k] = search.net.block(k, outs[k - 1])
        torch.testing.assert_close(cache.current[b], outs[2], rtol=1e-5, atol=1e-5)
        with torch.no_grad():   # block 3's pre-BN tensor, kept up to date by one-channel deltas
            pre3 = search.net.block_pre(3, outs[2])
        torch.testing.assert_close(cache.pre_next[b], pre3, rtol=1e-5, atol=1e-5)


def test_fast_path_equals_full_passes_over_long_sweeps():
    """Hundreds of trials per batch on blocks with and without pooling: the next layer's pre-BN
    tensor goes through many delta updates, resyncs and stale-channel refreshes."""
    runs = {}
    for mode in ("fast", "full"):
        search, _ = make_search(small_cfg(mode=mode))
        decisions = []
        for ti, spec in enumerate(search.order):
            if spec.group in (0, 1, 2):
                decisions += search.sweep(0, ti, 0, 200).decisions
        runs[mode] = (search, decisions)
    (fast, fast_dec), (full, full_dec) = runs["fast"], runs["full"]
    assert fast_dec == full_dec and len(fast_dec) == 2 * 200 + 144 + 6 * 16
    assert 0 < fast_dec.count(0) < len(fast_dec)
    for name, p in full.params().items():
        assert torch.equal(p, fast.params()[name]), name


def test_resume_mid_tensor_equals_uninterrupted():
    cfg = small_cfg()
    whole, data = make_search(cfg)
    for ti in range(6):
        whole.sweep(0, ti, 0, 40)
    first, _ = make_search(cfg, data)
    for ti in range(3):
        first.sweep(0, ti, 0, 40)
    first.sweep(0, 3, 0, 17)
    state = {k: v.clone() for k, v in first.params().items()}
    second, _ = make_search(cfg, data)            # a fresh process: new caches, loaded weights
    second.load_params(state)
    second.sweep(0, 3, 17, 40)
    for ti in (4, 5):
        second.sweep(0, ti, 0, 40)
    for name, p in whole.params().items():
        assert torch.equal(p, second.params()[name]), name


def test_load_params_inside_the_group_marks_channels_stale():
    cfg = small_cfg()
    a, data = make_search(cfg)
    ti = next(i for i, s in enumerate(a.order) if s.name == "convs.4.weight")
    a.sweep(0, ti, 0, 10)
    params = a.params()
    params["convs.4.weight"][3] += 0.5            # someone else (another shard) changed channel 3
    a.load_params(params)
    assert all(3 in s for s in a.cache.stale)
    params["convs.1.weight"][0] += 0.5            # a block below: the cache is dropped
    a.load_params(params)
    assert a.cache is None


@pytest.mark.parametrize("name", ["fc.weight", "convs.5.weight", "convs.2.weight", "bns.0.weight"])
def test_merge_guard_picks_what_whole_network_passes_pick(name):
    """The guard reuses the outputs of the blocks below the group; its losses are those of the whole
    network, so it keeps the option a brute-force check would keep."""
    search, data = make_search(small_cfg())
    param = search.net.get_parameter(name)
    base = param.detach().clone()
    gen = torch.Generator().manual_seed(3)
    results = []
    for a, b in ((0, 8), (8, 16)):
        idx = torch.arange(a, b)
        results.append({"indices": idx.tolist(), "values": base.view(-1)[idx] + torch.randn(b - a, generator=gen)})
    guard = MergeGuard(search)
    for r in range(3):
        chosen, which = guard.choose(name, base, results, 0, r)
        options = [apply_changes(base, results)] + [apply_changes(base, [x]) for x in results] + [base]
        spec = next(s for s in search.order if s.name == name)
        batches = group_batches(search.seed + 7919, 0, spec.group, len(data.x_train), 32, None)
        idx = batches[r % len(batches)]
        losses = []
        with torch.no_grad():
            for opt in options:
                param.data.copy_(opt)
                losses.append(F.cross_entropy(search.net(data.x_train[idx]).double(), data.y_train[idx],
                                              reduction="sum"))
        assert which == int(np.argmin([float(v) for v in losses]))
        param.data.copy_(chosen)
        assert torch.equal(chosen, options[which])
        base = chosen.clone()


def test_shard_ranges_split_a_short_remainder_evenly():
    assert shard_ranges(0, 2304, 2, 64) == [(0, 64), (64, 128)]
    assert shard_ranges(2240, 2304, 2, 64) == [(2240, 2272), (2272, 2304)]
    assert shard_ranges(0, 16, 2, 64) == [(0, 8), (8, 16)]
    assert shard_ranges(0, 5, 3, 64) == [(0, 2), (2, 4), (4, 5)]
    assert shard_ranges(0, 1, 2, 64) == [(0, 1)]
