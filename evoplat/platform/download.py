"""Datasets that arrive by themselves: a missing torchvision dataset (mnist, cifar10) is fetched into the
data root on first use, with torchvision's own progress bar.

Before anything is written: the free disk of the data root is compared with what the dataset needs,
and the mirrors are probed with one short request each, so a machine without network fails within
seconds (never torchvision's long connection attempts). Concurrent downloads into one root (several
workers on a node) are serialised by a lock file.
"""
from __future__ import annotations

import shutil
import socket
import sys
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

PROBE_TIMEOUT_S = 5.0      # per mirror; DNS included (it ignores socket timeouts, so a thread bounds it)
READ_TIMEOUT_S = 60.0      # a download that stalls this long fails instead of hanging

# Bytes on disk once downloaded and extracted (torchvision keeps the archives): MNIST's four .gz files
# (11.6 MB) plus the raw idx files (55 MB); CIFAR-10's tar.gz (163 MB) plus its batches (178 MB).
NEEDED_BYTES = {"mnist": 70_000_000, "cifar10": 345_000_000}
TITLES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}


class DownloadError(Exception):
    """A dataset that cannot be fetched; the message says why in a few words (one line)."""


def note(line: str) -> None:
    """A one-line notice on stderr (stdout carries a run's progress lines)."""
    print(line, file=sys.stderr, flush=True)


def mirror_urls(source: str) -> list[str]:
    """One URL per mirror of `source`, as torchvision would fetch them (read at call time, so a test or
    a site-local mirror set on the torchvision class is honoured)."""
    if source == "mnist":
        from torchvision.datasets import MNIST
        return [f"{m}{MNIST.resources[0][0]}" for m in MNIST.mirrors]
    from torchvision.datasets import CIFAR10
    return [CIFAR10.url]


def probe(url: str, timeout: Optional[float] = None) -> Optional[str]:
    """None when `url`'s server answers an HTTP request within `timeout` (default PROBE_TIMEOUT_S; any
    HTTP status counts: the network is there), else why not, in a few words. Environment proxies apply."""
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    outcome: list = []

    def attempt():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)
        except Exception as err:  # URLError, socket errors, bad URLs: all mean "not reachable"
            reason = getattr(err, "reason", err)
            outcome.append(f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if not outcome:
        return f"no answer within {timeout:.0f}s"
    return outcome[0]


def free_bytes(root: Path) -> int:
    """Free bytes of the file system `root` is (or will be) on."""
    path = Path(root).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@contextmanager
def _locked(root: Path):
    import fcntl
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".evoplat-download.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def download(source: str, root: Path, present: Callable[[], bool], fetch: Callable[[], None]) -> None:
    """Fetch `source` into `root` unless `present()`; `fetch()` runs torchvision's download.

    Raises DownloadError (disk too small, no mirror reachable, transfer failed) before writing anything
    in the first two cases."""
    need, title = NEEDED_BYTES[source], TITLES[source]
    free = free_bytes(root)
    if free < need:
        raise DownloadError(f"it needs {human(need)} but {root} has {human(free)} free")
    reasons = []
    for url in mirror_urls(source):
        reason = probe(url)
        if reason is None:
            break
        reasons.append(f"{url.split('/')[2]}: {reason}")
    else:
        raise DownloadError(f"no mirror answers ({reasons[0]}" + (f"; {len(reasons) - 1} more" if
                                                                  len(reasons) > 1 else "") + ")")
    with _locked(root):
        if present():        # another process finished it while this one waited for the lock
            return
        note(f"evoplat: downloading {title} into {root} (needs {human(need)}; {human(free)} free)")
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(READ_TIMEOUT_S)
        try:
            fetch()
        except Exception as err:  # torchvision reports every mirror's failure as one RuntimeError
            lines = [s for s in str(err).splitlines() if s.strip()]
            raise DownloadError(f"the download failed: {lines[-1] if lines else repr(err)}") from None
        finally:
            socket.setdefaulttimeout(old)
