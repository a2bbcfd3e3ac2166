#!/usr/bin/env bash
# rec-LRA (Ororbia et al.): MNIST MLP 98.18% and a ResNet on CIFAR-10 (93.88%, as cited), 'as good as backprop'.
# Usage: benchmarks/reproduce/rec_lra.sh [--smoke] [DATA_DIR] [--out DIR]
# Runs experiments/rec_lra_mnist_long.yaml (784-256x3-10 tanh, 20 epochs, the settings chosen on the
# validation split, 3 rec-LRA seeds + the same-budget backprop line as one population) and
# experiments/rec_lra_cifar10.yaml at ResNet-20 size (3 blocks per stage, width 1, no batch norm, tanh,
# augmentation, 100 epochs; 3 rec-LRA + 3 backprop members).
# Prints:  RESULT rec_lra mnist_mlp member K: test_acc XX.XX% (best XX.XX%), 20 epoch(s); paper 98.18% (MLP)
#          RESULT rec_lra cifar10_resnet20 member K: ...; paper 93.88% (ResNet, as cited)
# (members 0-2: rec-LRA seeds 0-2; members 3-5: backprop seeds 0-2).
# Expected time (estimate, benchmarks/reproduce/throughput.md): about 66 single-core CPU hours, 33 h of
# wall on 2 idle cores: the MNIST part 0.18 h (measured in a full run: 6.0 / 4.5 CPU s per rec-LRA /
# backprop member-epoch), the ResNet-20 part 65 h (0.0079 CPU s per training image, 392 s per epoch,
# x 100 epochs x 6 members).
# The members train on the pool's workers, which use a GPU only with runtime.gpus_per_worker > 0 (these
# configs set none), so this runs on the CPU; a single run (no population) uses the GPU (`run.device`).
#
# DATA_DIR (argument, default $EVOPLAT_DATA) holds MNIST/raw (torchvision layout) and cifar10.npz.
# Run directories go to --out DIR (default runs/reproduce/rec_lra-<stamp>); every run is an ordinary evoplat run
# directory (config.yaml, metrics.parquet, checkpoints, summary.json); the same command with the same --out
# reads finished runs back and continues a cut-short one from its last checkpoint.
# --smoke: the same plan with tiny settings on synthetic data, in-process (runtime.backend local), in
# seconds; it checks that the command works, its numbers mean nothing. The plan itself (configs and
# overrides) is PLANS["rec_lra"] in benchmarks/reproduce/reproduce.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-$here/../../.venv/bin/python}"
[ -x "$py" ] || py=python3
exec "$py" "$here/reproduce.py" rec_lra "$@"
