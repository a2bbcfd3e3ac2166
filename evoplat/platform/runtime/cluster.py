"""Where Ray connects: an explicit address, else $RAY_ADDRESS (a cluster / `ray job submit`), else a
local instance started in-process. The config and code are the same in all three cases."""
from __future__ import annotations

import os
from typing import Optional

import ray


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None) -> None:
    """Initialise Ray once per process; later calls reuse the connection."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    # Workers import evoplat from the driver's environment; a job's working_dir is shipped by Ray itself.
    kwargs = dict(ignore_reinit_error=True, log_to_driver=True, configure_logging=False)
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local", not None: with None, Ray would join whatever cluster the last `ray start` on this
        # machine recorded in its temp dir (someone else's, on a shared machine) instead of starting one.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)


def node_count() -> int:
    return sum(1 for n in ray.nodes() if n.get("Alive"))
