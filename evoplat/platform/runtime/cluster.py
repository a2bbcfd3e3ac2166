"""Where Ray connects: an explicit address, else $RAY_ADDRESS (a cluster / `ray job submit`), else a
local instance started in-process. The config and code are the same in all three cases.

An address is probed before `ray.init`, with a plain TCP connect and then one gRPC call to the GCS
(a few seconds each): Ray itself would retry an address where nothing listens, or where some other
server answers, for half a minute or more, printing a log line a second meanwhile.
"""
from __future__ import annotations

import logging
import math
import os
import socket
from typing import Optional

log = logging.getLogger("evoplat.pool")

PROBE_TIMEOUT_S = 5.0


class ClusterError(ConnectionError):
    """No Ray cluster at the given address, or one that can never run the requested workers."""


def _host_port(address: str) -> Optional[tuple[str, int]]:
    """(host, port) of 'host:port' or 'ray://host:port'; None for the names Ray resolves itself."""
    if address in ("auto", "local"):
        return None
    if address.startswith(("http://", "https://")):
        raise ClusterError(f"cluster error: Ray address '{address}' is a dashboard URL (what `ray job submit` "
                           f"takes); a driver joins the GCS at host:port (port 6379 by default) or "
                           f"ray://host:10001")
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"cluster error: Ray address '{address}' is not host:port, ray://host:port, "
                           f"auto or local")
    return host.strip("[]"), int(port)


def probe_address(address: str, source: str, timeout: Optional[float] = None) -> None:
    """Raise ClusterError unless a Ray cluster answers at `address` within `timeout` (PROBE_TIMEOUT_S)."""
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    target = _host_port(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout).close()
        why = None if address.startswith("ray://") else _gcs_answer(f"{target[0]}:{target[1]}", timeout)
    except OSError as err:
        why = f"no answer within {timeout:.0f}s" if isinstance(err, socket.timeout) else \
            (err.strerror or type(err).__name__)
    if why:
        raise ClusterError(f"cluster error: no Ray cluster at {address} (from {source}): {why}; start one "
                           f"(`ray start --head`) or unset it to run locally")


def _gcs_answer(address: str, timeout: float) -> Optional[str]:
    """None if the server at `address` answers like a Ray GCS (a reply, or a refusal of our missing auth
    token), else what it did instead. Skipped (None) where the probe cannot speak the cluster's protocol."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return None
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:     # another Ray layout: the TCP probe has to do
        return None
    with grpc.insecure_channel(address) as channel:
        try:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=timeout)
            return None
        except grpc.RpcError as err:
            code = err.code()
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return "a server answers there, but it is not a Ray cluster's GCS port"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return f"no gRPC answer within {timeout:.0f}s"
    return None


def check_address(runtime_cfg) -> None:
    """Before a run starts: raise ClusterError unless the cluster `connect` would join answers."""
    import sys
    ray = sys.modules.get("ray")
    if runtime_cfg.backend != "ray" or (ray is not None and ray.is_initialized()):
        return      # no Ray, or a connection that connect() reuses whatever the address says
    address = runtime_cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        probe_address(address, "runtime.address" if runtime_cfg.address else "$RAY_ADDRESS")


# The Ray instance connect() started in this process (its GCS address), if it did: one that cannot grow,
# so a pool it can never hold whole is a configuration error, not a wait for nodes to join.
_started_here: Optional[str] = None


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None, min_cpus: float = 0.0) -> bool:
    """Initialise Ray once per process; later calls reuse the connection. A local instance started here
    counts `num_cpus` CPUs (runtime.local_num_cpus), by default the machine's cores, or `min_cpus` (the
    pool's need) if that is more: asked for more workers than cores, they share the cores. True if this
    call started Ray."""
    import ray
    global _started_here
    if ray.is_initialized():
        return False
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
        cores = os.cpu_count() or 1
        if num_cpus is None and min_cpus > cores:
            num_cpus = math.ceil(min_cpus)
            log.warning("the workers need %g CPUs and this machine has %d cores: they will share them", min_cpus,
                        cores)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
        _started_here = ray.get_runtime_context().gcs_address
    return True


def check_resources(cpus_per_worker: float, gpus_per_worker: float, num_workers: int = 1,
                    started_now: bool = True) -> None:
    """Raise ClusterError when no live node could ever host one worker (instead of waiting forever), or
    when the local instance connect() started (`started_now`: for this pool, else for an earlier one)
    cannot hold all `num_workers` (it will never grow)."""
    import ray
    nodes = _live_nodes()
    if _started_here is not None and _started_here == ray.get_runtime_context().gcs_address:
        for kind, per, option in (("CPU", cpus_per_worker, "cpus"), ("GPU", gpus_per_worker, "gpus")):
            have = sum(r.get(kind, 0.0) for r in nodes)
            if per and num_workers * per > have:
                lower = f"lower runtime.num_workers or runtime.{option}_per_worker"
                if not started_now:
                    fix = f"it was started for an earlier run in this process: ray.shutdown() before this one, or {lower}"
                elif kind == "CPU":
                    fix = (f"{lower}, or raise runtime.local_num_cpus (Ray counts CPUs as slots: more than the "
                           f"machine's cores is allowed)")
                else:
                    fix = lower
                raise ClusterError(f"cluster error: runtime.num_workers={num_workers} x runtime.{option}_per_worker="
                                   f"{per:g} need {num_workers * per:g} {kind}s, but the local Ray instance has "
                                   f"{have:g}; {fix}")
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
    if not _hosts(nodes, cpus_per_worker, gpus_per_worker):
        raise ClusterError(f"cluster error: no node of the Ray cluster has both {cpus_per_worker:g} CPUs and "
                           f"{gpus_per_worker:g} GPUs for one worker")


def worker_nodes(runtime_cfg) -> int:
    """How many live nodes could host one of the pool's workers (what `runtime.loop: auto` asks): 1
    when Ray is not running yet and no address is given, since connect() will start a local instance."""
    import ray
    if not ray.is_initialized():
        if not (runtime_cfg.address or os.environ.get("RAY_ADDRESS")):
            return 1
        connect(runtime_cfg.address)
    nodes = _live_nodes()
    return len(_hosts(nodes, runtime_cfg.cpus_per_worker, runtime_cfg.gpus_per_worker))


def _live_nodes() -> list[dict]:
    """The resources of every live node of the Ray cluster this process is connected to."""
    import ray
    return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]


def _hosts(nodes: list[dict], cpus: float, gpus: float) -> list[dict]:
    """The nodes (their resources) with both the CPUs and the GPUs of one worker."""
    return [r for r in nodes if r.get("CPU", 0.0) >= cpus and r.get("GPU", 0.0) >= gpus]
