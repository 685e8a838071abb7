"""Shared test fixtures: locating the real MNIST copy and CUDA availability.

MNIST is found through ``GLIMPSE_DATA`` or, failing that, ``../shared/data`` beside the
repository. A relative ``GLIMPSE_DATA`` (the README's ``GLIMPSE_DATA=../shared/data``) is
resolved against the working directory pytest started in, and the absolute path is put back
into the environment, so scripts that tests run in other folders (subprocesses, torchrun)
find the same data. Under CI (``CI=true``) a missing copy is an error, not a silent skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def _find_data_root() -> Path | None:
    candidates = [os.environ.get("GLIMPSE_DATA"), REPO.parent / "shared" / "data"]
    for c in candidates:
        if c and (Path(c).expanduser() / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
            return Path(c).expanduser().absolute()
    return None


DATA_ROOT = _find_data_root()
if DATA_ROOT is not None:
    os.environ["GLIMPSE_DATA"] = str(DATA_ROOT)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root holding ``MNIST/raw`` (torchvision layout)."""
    if DATA_ROOT is None:
        msg = "MNIST not found: set GLIMPSE_DATA to a folder holding MNIST/raw"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return DATA_ROOT


def _cap_threads_per_worker() -> None:
    """Under pytest-xdist (the default run, ``-n auto``), share the cores among the
    workers: PyTorch's default of one thread per core in every worker would oversubscribe
    the machine, which on a small shared CPU is many times slower, not just slower."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


_cap_threads_per_worker()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Generated-dataset caches go to one temp folder per session, never to ~/.cache."""
    monkeypatch.setenv("GLIMPSE_CACHE", str(tmp_path_factory.getbasetemp() / "glimpse-cache"))


@pytest.fixture
def one_torch_thread():
    """Tiny models: one thread is faster, and does not fight other jobs for the cores.
    Use it per file with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
