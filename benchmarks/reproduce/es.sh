#!/usr/bin/env bash
# ES (OpenAI-ES, the platform's population method): MNIST MLP and CartPole-v1.
# Usage: benchmarks/reproduce/es.sh [--smoke] [DATA_DIR] [--out DIR]
# Runs experiments/es_mnist.yaml (MLP 784-128-10, population 256, 300 generations) and
# experiments/es_cartpole.yaml (policy 4-16-2, population 64, up to 100 generations, stops when solved).
# Prints:  RESULT es mnist: test_acc XX.XX% (best XX.XX%), 300 generation(s)
#          RESULT es cartpole: test_return XXX.X, N generation(s); paper solved = mean return >= 475 ...
# Expected time (estimate, benchmarks/reproduce/throughput.md): a few minutes: MNIST 0.05 single-core CPU
# hours (0.61 CPU s per generation x 300), CartPole 0.12-0.75 CPU s per generation x up to 100.
# Population evaluation runs on the workers (GPUs with runtime.gpus_per_worker > 0).
#
# DATA_DIR (argument, default $EVOPLAT_DATA) holds MNIST/raw (torchvision layout) and cifar10.npz.
# Run directories go to --out DIR (default runs/reproduce/es-<stamp>); every run is an ordinary evoplat run
# directory (config.yaml, metrics.parquet, checkpoints, summary.json); the same command with the same --out
# reads finished runs back and continues a cut-short one from its last checkpoint.
# --smoke: the same plan with tiny settings on synthetic data, in-process (runtime.backend local), in
# seconds; it checks that the command works, its numbers mean nothing. The plan itself (configs and
# overrides) is PLANS["es"] in benchmarks/reproduce/reproduce.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-$here/../../.venv/bin/python}"
[ -x "$py" ] || py=python3
exec "$py" "$here/reproduce.py" es "$@"
