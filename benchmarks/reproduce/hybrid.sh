#!/usr/bin/env bash
# Hybrid BP+ES (Lopes & Fazendeiro 2020): VGG16 on CIFAR-10, +0.61 points of test accuracy over backprop.
# Usage: benchmarks/reproduce/hybrid.sh [--smoke] [DATA_DIR] [--out DIR]
# Runs experiments/hybrid_vgg16_cifar10.yaml (VGG16 width 1 with batch norm, 100 epochs, momentum 0.05 cosine,
# augmentation; a (1+10) elitist ES phase on the classifier every 10 epochs, fitness on 5,000 held-out images)
# for seeds 0, 1, 2, the same with hybrid.es_enabled=false (the paired backprop baseline), and the fair control
# (hybrid.phase_kind=backprop: each ES phase's budget spent by gradient descent on the same held-out images).
# Prints:  RESULT hybrid hybrid-seed0: test_acc XX.XX% (best XX.XX%), 100 epoch(s)   (one line per run)
#          RESULT hybrid hybrid - backprop: +X.XX ± X.XX (sd) points over seeds 0,1,2 (paired); paper +0.61 ...
# Expected time (estimate, benchmarks/reproduce/throughput.md): about 345 single-core CPU hours, from the
# measured 0.027 CPU s per training image (VGG16 width 1, forward+backward) and 0.011 s per evaluated
# image, x 45,000 + 15,000 images x 100 epochs x 9 runs; ES and control phases not included.
# The backprop epochs and the control use the GPU when there is one (`run.device`, default auto), so there
# the CPU-hour estimate is an upper bound; the ES phases run on CPU workers (runtime.gpus_per_worker: 0).
#
# DATA_DIR (argument, default $EVOPLAT_DATA) holds MNIST/raw (torchvision layout) and cifar10.npz.
# Run directories go to --out DIR (default runs/reproduce/hybrid-<stamp>); every run is an ordinary evoplat run
# directory (config.yaml, metrics.parquet, checkpoints, summary.json); the same command with the same --out
# reads finished runs back and continues a cut-short one from its last checkpoint.
# --smoke: the same plan with tiny settings on synthetic data, in-process (runtime.backend local), in
# seconds; it checks that the command works, its numbers mean nothing. The plan itself (configs and
# overrides) is PLANS["hybrid"] in benchmarks/reproduce/reproduce.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-$here/../../.venv/bin/python}"
[ -x "$py" ] || py=python3
exec "$py" "$here/reproduce.py" hybrid "$@"
