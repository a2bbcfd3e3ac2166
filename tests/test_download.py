"""Datasets that arrive by themselves, against a real HTTP server on 127.0.0.1 serving tiny MNIST .gz
files (torchvision's MNIST is pointed at it through its `mirrors` and `resources` class attributes), and
the no-network path for real: a port where nothing listens, a server that never answers."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from conftest import free_port
from evoplat.platform import download
from evoplat.platform.config import DataConfig
from evoplat.platform.data import DataError, check_available, load_dataset
from test_data import write_mnist

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local MNIST mirror; returns the folder it serves."""
    from torchvision.datasets import MNIST
    served = tmp_path / "served"
    files = write_mnist(served, gz=True)
    # torchvision checks each downloaded file against the md5 listed with it
    resources = [(f"{n}.gz", hashlib.md5((served / f"{n}.gz").read_bytes()).hexdigest()) for n in files]
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{server.server_address[1]}/"])
    monkeypatch.setattr(MNIST, "resources", resources)
    yield served
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_missing_mnist_is_downloaded_once_with_a_disk_line(mirror, tmp_path, capsys):
    root = tmp_path / "cache" / "data"          # does not exist yet
    cfg = DataConfig(source="mnist", val_size=10, root=str(root))
    check_available(cfg)
    err = capsys.readouterr().err
    assert f"evoplat: downloading MNIST into {root} (needs 70 MB;" in err and " free)" in err
    for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert (root / "MNIST" / "raw" / name).read_bytes() == gzip.decompress((mirror / f"{name}.gz").read_bytes())
    ds = load_dataset(cfg)
    assert ds.x_train.shape == (50, 1, 28, 28) and ds.x_test.shape == (20, 1, 28, 28)
    check_available(cfg)                          # present now: no second download
    assert "downloading" not in capsys.readouterr().err


def test_cli_run_downloads_then_trains(mirror, tmp_path, capsys):
    from evoplat.cli import main
    root, run_dir = tmp_path / "data", tmp_path / "run"
    code = main(["run", str(EXPERIMENTS / "es_mnist.yaml"), "--data-root", str(root), "--run-dir", str(run_dir),
                 "--quiet", "--set", "runtime.backend=local", "--set", "data.val_size=10",
                 "--set", "es.generations=2", "--set", "es.popsize=8", "--set", "es.batch_size=16",
                 "--set", "model.hidden=[4]", "--set", "run.eval_every=2"])
    assert code == 0
    assert "downloading MNIST" in capsys.readouterr().err
    assert "source: mnist" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "summary.json").is_file()


def test_a_corrupt_download_is_one_error(mirror, tmp_path):
    (mirror / "train-labels-idx1-ubyte.gz").write_bytes(b"not what the md5 says")
    with pytest.raises(DataError, match="cannot be downloaded: the download failed"):
        check_available(DataConfig(source="mnist", root=str(tmp_path / "data")))


def test_too_little_disk_is_said_before_anything_is_written(mirror, tmp_path, monkeypatch):
    monkeypatch.setitem(download.NEEDED_BYTES, "mnist", 10**18)
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"needs 1000000 TB but .* free|needs .* but .* free"):
        check_available(DataConfig(source="mnist", root=str(root)))
    assert not root.exists()


def test_no_network_fails_at_once_and_writes_nothing(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST
    port = free_port()
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{port}/b/"])
    root = tmp_path / "data"
    with pytest.raises(DataError, match=rf"MNIST is not in {root / 'MNIST' / 'raw'} and cannot be downloaded: "
                                        rf"no mirror answers \(127\.0\.0\.1:{port}: .*; 1 more\)"):
        check_available(DataConfig(source="mnist", root=str(root)))
    assert not root.exists()


def test_a_mirror_that_never_answers_is_given_up(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)                              # accepts connections, never replies
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{silent.getsockname()[1]}/"])
    monkeypatch.setattr(download, "PROBE_TIMEOUT_S", 0.5)
    try:
        with pytest.raises(DataError, match="no mirror answers .*(timed out|no answer)"):
            check_available(DataConfig(source="mnist", root=str(tmp_path / "data")))
    finally:
        silent.close()


def test_fallback_without_network_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    from torchvision.datasets import MNIST
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{free_port()}/"])
    cfg = DataConfig(source="mnist", root=str(tmp_path / "data"), fallback="digits", val_size=5000,
                     train_subset=50000)
    check_available(cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "using data.fallback=digits instead" in err[0] and "For MNIST" in err[0]
    assert cfg.source == "digits" and cfg.val_size == 1437 // 5 and cfg.train_subset is None
    assert len(load_dataset(cfg).x_train) == 1437 - 287


def test_no_fallback_unless_asked_and_none_on_resume(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{free_port()}/"])
    with pytest.raises(DataError, match="cannot be downloaded"):
        check_available(DataConfig(source="mnist", root=str(tmp_path)))
    cfg = DataConfig(source="mnist", root=str(tmp_path), fallback="digits")
    with pytest.raises(DataError, match="cannot be downloaded"):
        check_available(cfg, fallback=False)
    assert cfg.source == "mnist"
