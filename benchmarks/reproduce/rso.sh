#!/usr/bin/env bash
# RSO (Tripathi & Singh 2020): MNIST 99.1% after 50 cycles, CIFAR-10 81.8% after 500 cycles.
# Usage: benchmarks/reproduce/rso.sh [--smoke] [DATA_DIR] [--out DIR]
# Runs experiments/rso_mnist.yaml (the authors' 6-conv net + FC, batch 5000, 50 cycles, all 60k images) and
# experiments/rso_cifar10.yaml (their 9-conv residual net + FC, 500 cycles), sequential RSO in the driver.
# Prints:  RESULT rso mnist: test_acc XX.XX% (best XX.XX%), N sweep(s); paper 99.1% after 50 cycles (98% after 5)
#          RESULT rso cifar10: test_acc XX.XX% (best XX.XX%), N sweep(s); paper 81.8% after 500 cycles
# (one sweep = one layer group; best = best test accuracy over the run, what the authors' code reports).
# Expected time (estimate, benchmarks/reproduce/throughput.md): MNIST about 115 single-core CPU hours
# (measured 0.69 CPU s per weight trial, 12,016 trials per cycle, x 50 cycles); CIFAR-10 (500 cycles) not
# measured (`python benchmarks/reproduce/measure.py --data-dir DATA_DIR --only rso_cifar10`).
# Sequential RSO runs in the driver process, on the CPU; rso.sharded=true
# spreads it over the workers (an approximation of the sequential sweep).
#
# DATA_DIR (argument, default $EVOPLAT_DATA) holds MNIST/raw (torchvision layout) and cifar10.npz.
# Run directories go to --out DIR (default runs/reproduce/rso-<stamp>); every run is an ordinary evoplat run
# directory (config.yaml, metrics.parquet, checkpoints, summary.json); the same command with the same --out
# reads finished runs back and continues a cut-short one from its last checkpoint.
# --smoke: the same plan with tiny settings on synthetic data, in-process (runtime.backend local), in
# seconds; it checks that the command works, its numbers mean nothing. The plan itself (configs and
# overrides) is PLANS["rso"] in benchmarks/reproduce/reproduce.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-$here/../../.venv/bin/python}"
[ -x "$py" ] || py=python3
exec "$py" "$here/reproduce.py" rso "$@"
