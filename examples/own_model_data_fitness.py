"""Evolve your own nn.Module on your own tensors with your own fitness function.

    python examples/own_model_data_fitness.py [--generations 150] [--run-dir runs/own]
"""
import argparse

import torch
import torch.nn.functional as F
from torch import nn

import evoplat


def make_net(input_shape, num_outputs, width=32):          # any builder (input_shape, num_outputs, **kw)
    return nn.Sequential(nn.Linear(input_shape[0], width), nn.Tanh(), nn.Linear(width, num_outputs))


def make_data(n=3000):                                      # any tensors: (x_train, y_train, x_test, y_test)
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] * x[:, 1] > 0).long()                      # the XOR quadrants
    return x[:2500], y[:2500], x[2500:], y[2500:]


def margin(logits, y):                                      # [K members, B, C], [B] -> [K], higher is better
    true = logits.gather(-1, y.expand(len(logits), -1).unsqueeze(-1)).squeeze(-1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[-1]).bool(), float("-inf")).amax(-1)
    return (true - other).clamp(max=2.0).mean(-1)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--generations", type=int, default=150)
    p.add_argument("--run-dir", default="runs/own_model_data_fitness")
    args = p.parse_args()
    result = evoplat.run({
        "algorithm": "es", "model": {"target": make_net, "kwargs": {"width": 32}},
        "data": {"target": make_data, "val_size": 250}, "fitness": {"target": margin},
        "es": {"generations": args.generations, "popsize": 64, "sigma": 0.1, "lr": 0.05, "batch_size": 250},
        "runtime": {"num_workers": 2}}, run_dir=args.run_dir, overwrite=True)
    print(f"test accuracy {100 * result.summary['test_acc']:.1f}% after {result.summary['steps']} generations")
    net = result.model()              # the trained make_net module, rebuilt from the run directory
    print(f"trained network: {sum(p.numel() for p in net.parameters())} parameters in {args.run_dir}/model.pt")
