#!/usr/bin/env bash
# Consequentialism weight updates (Paeedeh & Ghiasi-Shirazi 2021): the abstract gives no numbers.
# Usage: benchmarks/reproduce/consequential.sh [--smoke] [DATA_DIR] [--out DIR]
# Runs experiments/consequential_mnist.yaml (MLP 784-256-128-10, momentum SGD, 10 epochs) and
# experiments/consequential_cifar10.yaml (VGG16 width 0.25 with batch norm, 30 epochs), each with the
# consequential (APA) update and without (consequential.enabled=false), seeds 0, 1, 2.
# Prints:  RESULT consequential mnist-seed0: test_acc XX.XX% (best XX.XX%), 10 epoch(s)   (one line per run)
#          RESULT consequential mnist - mnist_sgd: +X.XX ± X.XX (sd) points over seeds 0,1,2 (paired); ...
#          RESULT consequential cifar10 - cifar10_sgd: ...
# Expected time (estimate, benchmarks/reproduce/throughput.md): about 27.5 single-core CPU hours: MNIST
# 0.08 h (4.6 CPU s per epoch), CIFAR-10 27.4 h (548 CPU s per epoch x 30 epochs x 6 runs).
# The training uses the GPU when there is one (`run.device`, default auto; run.device=cpu forces the CPU),
# so there the CPU-hour estimate is an upper bound (see benchmarks/reproduce/throughput.md).
#
# DATA_DIR (argument, default $EVOPLAT_DATA) holds MNIST/raw (torchvision layout) and cifar10.npz.
# Run directories go to --out DIR (default runs/reproduce/consequential-<stamp>); every run is an ordinary evoplat run
# directory (config.yaml, metrics.parquet, checkpoints, summary.json); the same command with the same --out
# reads finished runs back and continues a cut-short one from its last checkpoint.
# --smoke: the same plan with tiny settings on synthetic data, in-process (runtime.backend local), in
# seconds; it checks that the command works, its numbers mean nothing. The plan itself (configs and
# overrides) is PLANS["consequential"] in benchmarks/reproduce/reproduce.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-$here/../../.venv/bin/python}"
[ -x "$py" ] || py=python3
exec "$py" "$here/reproduce.py" consequential "$@"
