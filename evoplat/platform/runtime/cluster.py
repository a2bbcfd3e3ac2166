"""Where Ray connects: an explicit address, else $RAY_ADDRESS (a cluster / `ray job submit`), else a
local instance started in-process. The config and code are the same in all three cases.

An address is probed with a plain TCP connect (a few seconds) before `ray.init`: Ray itself would
retry an address where nothing listens for a minute or more, printing its own log lines meanwhile.
"""
from __future__ import annotations

import os
import socket
from typing import Optional

PROBE_TIMEOUT_S = 5.0


class ClusterError(ConnectionError):
    """No Ray cluster at the given address, or one that can never run the requested workers."""


def _host_port(address: str) -> Optional[tuple[str, int]]:
    """(host, port) of 'host:port' or 'ray://host:port'; None for the names Ray resolves itself."""
    if address in ("auto", "local"):
        return None
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"cluster error: Ray address '{address}' is not host:port, ray://host:port, "
                           f"auto or local")
    return host.strip("[]"), int(port)


def probe_address(address: str, source: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise ClusterError unless something accepts TCP connections at `address` within `timeout`."""
    target = _host_port(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout).close()
    except OSError as err:
        why = f"no answer within {timeout:.0f}s" if isinstance(err, socket.timeout) else \
            (err.strerror or type(err).__name__)
        raise ClusterError(f"cluster error: no Ray cluster at {address} (from {source}): {why}; start one "
                           f"(`ray start --head`) or unset it to run locally") from None


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None) -> None:
    """Initialise Ray once per process; later calls reuse the connection."""
    import ray
    if ray.is_initialized():
        return
    source = "runtime.address" if address else "$RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS")
    # Workers import evoplat from the driver's environment; a job's working_dir is shipped by Ray itself.
    kwargs = dict(ignore_reinit_error=True, log_to_driver=True, configure_logging=False)
    if address:
        probe_address(address, source)
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as err:
            lines = [s for s in str(err).splitlines() if s.strip()]
            raise ClusterError(f"cluster error: cannot join the Ray cluster at {address} (from {source}): "
                               f"{lines[0][:200] if lines else type(err).__name__}") from None
    else:
        # "local", not None: with None, Ray would join whatever cluster the last `ray start` on this
        # machine recorded in its temp dir (someone else's, on a shared machine) instead of starting one.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)


def node_count() -> int:
    import ray
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def check_resources(cpus_per_worker: float, gpus_per_worker: float) -> None:
    """Raise ClusterError when no live node could ever host one worker (instead of waiting forever)."""
    import ray
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    most_cpus = max((r.get("CPU", 0.0) for r in nodes), default=0.0)
    most_gpus = max((r.get("GPU", 0.0) for r in nodes), default=0.0)
    if gpus_per_worker > most_gpus:
        have = f"at most {most_gpus:g} GPUs on a node" if most_gpus else "no GPUs"
        raise ClusterError(f"cluster error: runtime.gpus_per_worker={gpus_per_worker:g} but the Ray cluster has "
                           f"{have} ({len(nodes)} nodes); set runtime.gpus_per_worker=0")
    if cpus_per_worker > most_cpus:
        raise ClusterError(f"cluster error: runtime.cpus_per_worker={cpus_per_worker:g} but no node of the Ray "
                           f"cluster has more than {most_cpus:g} CPUs ({len(nodes)} nodes); lower it")
    # a node with enough CPUs and one with enough GPUs may still differ: require one with both
    if not any(r.get("CPU", 0.0) >= cpus_per_worker and r.get("GPU", 0.0) >= gpus_per_worker for r in nodes):
        raise ClusterError(f"cluster error: no node of the Ray cluster has both {cpus_per_worker:g} CPUs and "
                           f"{gpus_per_worker:g} GPUs for one worker")
