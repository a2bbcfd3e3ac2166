"""Every benchmarks/reproduce/<method>.sh runs end to end with --smoke (synthetic data, in-process) and
prints its result lines; each run it reports left a finished run directory."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUM = r"[+-]?\d+\.\d+"
# per script: the lines it must print, and the run directories it must leave
EXPECTED = {
    "rso": ([rf"RESULT rso mnist: test_acc {NUM}% \(best {NUM}%\), \d+ sweep\(s\); paper 99\.1%",
             rf"RESULT rso cifar10: test_acc {NUM}% \(best {NUM}%\), \d+ sweep\(s\); paper 81\.8%"],
            ["mnist", "cifar10"]),
    "hybrid": ([rf"RESULT hybrid hybrid - backprop: {NUM} ± {NUM} \(sd\) points over seeds 0,1 \(paired\); paper \+0\.61"],
               ["hybrid-seed0", "hybrid-seed1", "backprop-seed0", "backprop-seed1"]),
    "rec_lra": ([rf"RESULT rec_lra mnist_mlp member 1: test_acc {NUM}%.*paper 98\.18%",
                 rf"RESULT rec_lra cifar10_resnet20 member 1: test_acc {NUM}%"], ["mnist_mlp", "cifar10_resnet20"]),
    "consequential": ([rf"RESULT consequential mnist - mnist_sgd: {NUM} ± {NUM} \(sd\) points",
                       rf"RESULT consequential cifar10 - cifar10_sgd: {NUM} ± {NUM} \(sd\) points"],
                      ["mnist-seed0", "mnist_sgd-seed1", "cifar10-seed1", "cifar10_sgd-seed0"]),
    "grad_instructor": ([r"RESULT grad_instructor rl: 1 rl_update\(s\) done",
                         rf"RESULT grad_instructor enn - plain: {NUM} ± {NUM} \(sd\) points over seeds 0,1 \(paired\); "
                         r"paper \+2\.8"], ["rl", "plain-seed0", "l1-seed1", "he-seed0", "enn-seed1"]),
    "es": ([rf"RESULT es mnist: test_acc {NUM}%", rf"RESULT es cartpole: test_return {NUM}, 1 generation\(s\)"],
           ["mnist", "cartpole"]),
}


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_reproduce_script_smoke(method, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EVOPLAT_DATA"}
    env["PYTHON"] = sys.executable
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "reproduce" / f"{method}.sh"), "--smoke",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines, dirs = EXPECTED[method]
    for pattern in lines:
        assert any(re.match(pattern, line) for line in proc.stdout.splitlines()), (pattern, proc.stdout)
    for d in dirs:
        summary = json.loads((tmp_path / "out" / d / "summary.json").read_text())
        assert summary["stopped"] == "complete", (d, summary)


def test_reproduce_needs_data_dir_without_smoke(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EVOPLAT_DATA"}
    env["PYTHON"] = sys.executable
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "reproduce" / "rso.sh")], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "EVOPLAT_DATA" in proc.stderr
