"""A chunk's evaluation on a device that holds no data ("meta"): any read back to the host (`.item()`,
`.tolist()`, a copy to the CPU) fails there, and a guard refuses any operation given a tensor that is
not on that device (meta kernels accept CPU operands in some ops: a linear layer's weight, say). So
these tests show, on a CPU-only machine, what a GPU worker needs: once a chunk's inputs are on the
device, the population forward and the fitness run wholly there, with no host round trip. Making the
chunk (its member rows and the noise: counter noise is drawn on the host, a table is copied to the
device once; the center once per population) uploads to the device; that is outside the guard.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from evoplat.platform.population.forward import PopulationForward
from evoplat.platform.population.lowrank import make_perturbation
from evoplat.platform.population.noise import Population
from evoplat.platform.population.task import neg_loss

META = torch.device("meta")


class OnlyOnMeta(TorchDispatchMode):
    """Refuses an operation given a tensor (other than a 0-dim scalar) that is not on the meta device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor) and t.device != META and t.dim() > 0:
                raise AssertionError(f"{func} was given a {t.device} tensor of shape {tuple(t.shape)}")
        return func(*args, **(kwargs or {}))


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 3 * 3, 4))


def _not_a_chain():         # batch norm: the vmap forward over materialised members
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))


def _on_meta(make_model, x: torch.Tensor, chain: bool) -> PopulationForward:
    torch.manual_seed(0)
    forward = PopulationForward(make_model(), chunk_size=8)
    # The one-time check that the layers in order are the model's forward compares real outputs.
    assert forward.structured(x) is chain
    forward.model.to(META)
    return forward


@pytest.mark.parametrize("make_model,shape,chain", [(_mlp, (16, 64), True), (_cnn, (16, 1, 8, 8), True),
                                                    (_not_a_chain, (16, 64), False)])
@pytest.mark.parametrize("kind,source", [("full", "table"), ("full", "counter"), ("lowrank", "table"),
                                         ("lowrank", "counter")])
@pytest.mark.parametrize("per_parameter_sigma", [False, True])       # openai_es / pgpe and snes
def test_a_chunk_is_evaluated_without_reading_the_device(make_model, shape, chain, kind, source,
                                                         per_parameter_sigma):
    x = torch.randn(*shape)
    forward = _on_meta(make_model, x, chain)
    noise = make_perturbation(kind, source, forward.layout, rank=2, seed=1)
    center = np.random.default_rng(0).standard_normal(forward.layout.size).astype(np.float32)
    scale = np.full_like(center, 0.1) if per_parameter_sigma else 0.1
    pop = Population(center=center, scale=scale, size=16, generation=3)
    for start in (0, 8):                       # two chunks: nothing carried over from the first is read
        chunk = noise.chunk(pop, start, start + 8, META)
        x_meta, y_meta = x.to(META), torch.zeros(shape[0], dtype=torch.long, device=META)
        with OnlyOnMeta():
            logits = forward.logits(chunk, x_meta)
            fitness = neg_loss(logits, y_meta)
        assert logits.device == META and logits.shape == (8, shape[0], 4)
        assert fitness.device == META and fitness.shape == (8,)
    assert (forward.chain is not None) is chain


def test_meta_tensors_refuse_host_reads_and_the_guard_refuses_cpu_operands():
    """What the tests above lean on: on this torch, reading a meta tensor back to the host fails, and an
    operation mixing a CPU tensor into meta ones (which a meta kernel may accept) is refused by the guard."""
    rows = torch.tensor([0, 1], device=META)
    for read in (rows.tolist, lambda: rows[0].item(), rows.cpu):
        with pytest.raises((NotImplementedError, RuntimeError)):
            read()
    x, weight = torch.randn(4, 3, device=META), torch.randn(2, 3)
    assert torch.nn.functional.linear(x, weight).device == META        # accepted without the guard
    with OnlyOnMeta(), pytest.raises(AssertionError, match="cpu tensor"):
        torch.nn.functional.linear(x, weight)


@pytest.mark.parametrize("per_parameter_sigma", [False, True])
def test_a_population_is_uploaded_once_for_all_its_chunks(per_parameter_sigma):
    layout = PopulationForward(_mlp(), chunk_size=8).layout
    noise = make_perturbation("full", "table", layout, seed=1)
    center = np.zeros(layout.size, np.float32)

    def population(generation):
        scale = np.full_like(center, 0.1) if per_parameter_sigma else 0.1
        return Population(center=center, scale=scale, size=16, generation=generation)

    pop = population(3)
    first, second = noise.chunk(pop, 0, 8, META), noise.chunk(pop, 8, 16, META)
    assert first.center is second.center and first.center.device == META
    if per_parameter_sigma:
        assert first.scale is second.scale and first.scale.device == META
    later = noise.chunk(population(4), 0, 8, META)            # the next generation: uploaded anew
    assert later.center is not first.center
    on_cpu = noise.chunk(pop, 0, 8, torch.device("cpu"))       # the host's chunks read the array itself
    assert on_cpu.center.data_ptr() == center.ctypes.data


class HostCopies(TorchDispatchMode):
    """The sizes of host tensors copied to the meta device while active."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            src = args[1] if func is torch.ops.aten.copy_.default else args[0]
            if src.device.type == "cpu" and any(t.device == META for t in tree_leaves(out)
                                                if isinstance(t, torch.Tensor)):
                self.sizes.append(src.numel())
        return out


@pytest.mark.parametrize("kind,source", [("full", "table"), ("full", "counter"), ("lowrank", "table"),
                                         ("lowrank", "counter")])
def test_a_chunk_uploads_no_noise_the_device_table_holds(kind, source):
    layout = PopulationForward(_mlp(), chunk_size=8).layout
    noise = make_perturbation(kind, source, layout, rank=2, seed=1)
    pop = Population(center=np.zeros(layout.size, np.float32), scale=0.1, size=16, generation=3)
    noise.chunk(pop, 0, 8, META)                 # the first chunk: the table and the center go up once
    with HostCopies() as copies:
        chunk = noise.chunk(pop, 8, 16, META)
    noise_values = chunk.distinct * (noise.base.dim if kind == "lowrank" else layout.size)
    uploaded = max(copies.sizes, default=0)
    # table noise: only the chunk's small description (member rows, signs, key offsets) goes up; counter
    # noise is drawn on the host, so its values do
    assert uploaded < noise_values if source == "table" else uploaded >= noise_values
