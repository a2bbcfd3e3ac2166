"""Security properties: checkpoints never unpickle code, nothing in evoplat deserialises with pickle, and
the shipped cluster configs keep token auth on and the dashboard / job port private."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from evoplat.platform.run.rundir import CheckpointError, RunDirectory, load_checkpoint

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this object creates a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _malicious_checkpoint(path: Path, marker: Path) -> None:
    torch.save({"algorithm": "es", "step": 3, "strategy": {"center": torch.zeros(3)}, "x": _Payload(marker)},
               path)


def test_checkpoint_with_pickled_object_is_rejected_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "step_00000003.pt"
    _malicious_checkpoint(ckpt, marker)
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_checkpoint(ckpt)
    assert not marker.exists()
    # The same file loads (and runs the payload) with plain pickling: the test above is not vacuous.
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


def test_resume_from_malicious_checkpoint_fails_cleanly(tmp_path):
    marker = tmp_path / "code-ran"
    run = RunDirectory.create(tmp_path / "run", "algorithm: es\nseed: 1\n")
    _malicious_checkpoint(run.ckpt_dir / "step_00000003.pt", marker)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.path.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "evoplat", "run", "--resume", str(run.path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "checkpoint error" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.path.rglob("*")) == before


UNSAFE_LOADS = [
    (r"\bpickle\.loads?\(", "pickle.load"),
    (r"\bcloudpickle\.loads?\(", "cloudpickle.load"),
    (r"\b(dill|joblib|marshal|shelve)\.(loads?|open)\(", "pickle-family load"),
    (r"allow_pickle\s*=\s*True", "np.load(allow_pickle=True)"),
    (r"\byaml\.(unsafe_)?load\(", "yaml.load (use yaml.safe_load)"),
    (r"\bpd\.read_pickle\(", "pandas.read_pickle"),
]


def test_no_code_path_unpickles_data():
    """Deserialisation in evoplat is torch.load(weights_only=True), np.load(allow_pickle=False),
    yaml.safe_load, parquet and JSON: none of them can run code from a file."""
    found = []
    for path in sorted((REPO / "evoplat").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, what in UNSAFE_LOADS:
                if re.search(pattern, code):
                    found.append(f"{path.relative_to(REPO)}:{n}: {what}")
            if "torch.load(" in code and "weights_only=True" not in code:
                found.append(f"{path.relative_to(REPO)}:{n}: torch.load without weights_only=True")
    assert not found, "\n".join(found)


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_launcher_config_keeps_auth_on_and_dashboard_private():
    cfg = _docs(REPO / "cluster" / "aws.yaml")[0]
    assert {"head", "cpu_worker", "gpu_worker"} <= set(cfg["available_node_types"])
    assert cfg["available_node_types"]["gpu_worker"]["resources"]["GPU"] >= 1
    assert all("max_workers" in t for n, t in cfg["available_node_types"].items() if n != "head")
    assert any("pip install" in c for c in cfg["setup_commands"])
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        if "ray start" in cmd:
            assert "RAY_AUTH_MODE=token" in cmd
    head = next(c for c in cfg["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head
    opened = {p["FromPort"] for p in cfg["provider"]["security_group"]["IpPermissions"]}
    assert opened == {22}
    for perm in cfg["provider"]["security_group"]["IpPermissions"]:
        assert all(r["CidrIp"] != "0.0.0.0/0" for r in perm.get("IpRanges", []))


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_manifests_keep_auth_on_and_dashboard_private(name):
    docs = _docs(REPO / "cluster" / "kuberay" / name)
    kinds = {d["kind"] for d in docs}
    assert ("RayCluster" if name == "raycluster.yaml" else "RayJob") in kinds
    assert not any(d["kind"] in ("Ingress",) or d.get("spec", {}).get("type") in ("LoadBalancer", "NodePort")
                   for d in docs)
    main = next(d for d in docs if d["kind"] in ("RayCluster", "RayJob"))
    spec = main["spec"] if main["kind"] == "RayCluster" else main["spec"]["rayClusterSpec"]
    assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    if main["kind"] == "RayJob":
        pods.append(main["spec"]["submitterPodTemplate"])
    assert any(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
               for g in spec["workerGroupSpecs"])
    for pod in pods:
        for c in pod["spec"]["containers"]:
            env = {e["name"]: e for e in c["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]   # never a literal in the file


def test_local_cluster_script_binds_loopback_with_token_auth():
    script = (REPO / "cluster" / "local_cluster.sh").read_text()
    assert "export RAY_AUTH_MODE=token" in script
    assert '--dashboard-host "$IP"' in script and "IP=127.0.0.1" in script
    # `ray stop` kills every Ray process on the machine, other users' too: stop goes by recorded pids.
    assert not re.search(r"^[^#]*\bray\"? stop\b", script, re.M)
