#!/usr/bin/env bash
# Grad-Instructor (Ino 2024): MLPs trained with an RL-trained ENN, 93.02% test accuracy, +2.8 points over
# backprop and L1, comparable to He init.
# Usage: benchmarks/reproduce/grad_instructor.sh [--smoke] [DATA_DIR] [--out DIR]
# Runs experiments/grad_instructor_mnist.yaml with 100 PGPE updates of 4 antithetic pairs (+1 centre
# episode), every episode one epoch of a 784-100-10 MLP on all 55,000 training images, then
# experiments/grad_instructor_mnist_deploy.yaml for seeds 0-4 in four ways: plain, L1 (1e-4), He init and
# the trained ENN (paired seeds).
# Prints:  RESULT grad_instructor rl: 100 rl_update(s) done, ENN in .../enn.pt; centre ENN episode test_acc XX.XX%
#          RESULT grad_instructor enn-seed0: test_acc XX.XX% (best XX.XX%), 1 epoch(s); paper 93.02%   (per run)
#          RESULT grad_instructor enn - plain: +X.XX ± X.XX (sd) points over seeds 0,1,2,3,4 (paired); paper +2.8
# Expected time (estimate, benchmarks/reproduce/throughput.md): about 0.6 single-core CPU hours (2.4 CPU s
# per full-data episode x 900 episodes + 20 deploy runs), about 20 minutes on 2 idle cores.
# The deploy runs use the GPU when there is one (`run.device`, default auto); the RL episodes run on the
# pool's workers, on a GPU only with runtime.gpus_per_worker > 0 (the config sets none).
#
# DATA_DIR (argument, default $EVOPLAT_DATA) holds MNIST/raw (torchvision layout) and cifar10.npz.
# Run directories go to --out DIR (default runs/reproduce/grad_instructor-<stamp>); every run is an ordinary evoplat run
# directory (config.yaml, metrics.parquet, checkpoints, summary.json); the same command with the same --out
# reads finished runs back and continues a cut-short one from its last checkpoint.
# --smoke: the same plan with tiny settings on synthetic data, in-process (runtime.backend local), in
# seconds; it checks that the command works, its numbers mean nothing. The plan itself (configs and
# overrides) is PLANS["grad_instructor"] in benchmarks/reproduce/reproduce.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-$here/../../.venv/bin/python}"
[ -x "$py" ] || py=python3
exec "$py" "$here/reproduce.py" grad_instructor "$@"
