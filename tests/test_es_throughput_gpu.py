"""The batched ES evaluation on CUDA (runtime.gpus_per_worker > 0), alone and in the workers' loop. Skipped
where torch sees no GPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import synthetic_config
from evoplat.platform.population.evaluator import ESEvaluator
from evoplat.platform.population.forward import PopulationForward
from evoplat.platform.population.lowrank import make_perturbation
from evoplat.platform.population.noise import Population

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("kind", ["full", "lowrank"])
@pytest.mark.parametrize("source", ["table", "counter"])
def test_structured_forward_on_cuda_matches_cpu(kind, source):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(16, 64)
    out = {}
    for device in ("cpu", "cuda"):
        forward = PopulationForward(model.to(device), chunk_size=8)
        noise = make_perturbation(kind, source, forward.layout, rank=2, seed=1)
        pop = Population(center=forward.layout.flatten(model.cpu()).numpy(), scale=0.1, size=8, generation=3)
        chunk = noise.chunk(pop, 0, 8, device)
        assert chunk.center.device.type == device and chunk.rows.device.type == device
        logits = forward.logits(chunk, x.to(device))
        assert forward.chain is not None and logits.device.type == device
        out[device] = logits.cpu()
    torch.testing.assert_close(out["cuda"], out["cpu"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kind", ["full", "lowrank"])
def test_evaluator_on_cuda_ranks_like_cpu(kind):
    cfg = synthetic_config(es={"perturbation": kind, "popsize": 16}, runtime={"backend": "local", "chunk_size": 8})
    cpu = ESEvaluator(cfg, device="cpu")
    cfg_gpu = synthetic_config(es={"perturbation": kind, "popsize": 16},
                               runtime={"backend": "local", "chunk_size": 8, "gpus_per_worker": 1})
    gpu = ESEvaluator(cfg_gpu)
    assert gpu.device.type == "cuda"
    if hasattr(gpu.noise, "device_table"):
        assert gpu.noise.device_table("cuda").device.type == "cuda"
    pop = Population(center=cpu.forward.layout.flatten(cpu.forward.model).numpy(), scale=0.05, size=16, generation=1)
    a, b = cpu.evaluate(pop, 0, 16)["fitness"], gpu.evaluate(pop, 0, 16)["fitness"]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["full", "lowrank"])
def test_the_workers_loop_on_cuda_reaches_the_cpu_center(kind):
    """`runtime.loop: auto` runs the workers' loop on a one-GPU machine: evaluation on the GPU, the update
    on the host, the same center as on the CPU up to float rounding."""
    import functools
    from evoplat.platform.population.worker_loop import ESLoopHost
    from evoplat.platform.runtime.pool import LocalPool
    from test_worker_loop import span_center
    cfg = synthetic_config(es={"perturbation": kind, "popsize": 16, "rank": 2}, runtime={"chunk_size": 8})
    cpu, gpu = (span_center(cfg, LocalPool(functools.partial(ESLoopHost, cfg, None, device)), 3)
                for device in ("cpu", "cuda"))
    assert gpu.device.type == "cpu"
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-4)
