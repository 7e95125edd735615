"""Shared fixtures: real MNIST (fetched once into the user's cache), a temporary BLINDSPOTS_HOME for the whole
test session (so no test trains into, or reuses a model of, the user's store) and an isolated model store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from blindspots.data import fetch
from blindspots.models import train


def home_sharing_data(folder: Path, data: Path) -> Path:
    """`folder` as a fresh BLINDSPOTS_HOME whose data/ is the verified data folder `data` (a symlink, no copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").symlink_to(data, target_is_directory=True)
    return folder


@pytest.fixture(scope="session", autouse=True)
def mnist_available(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Fetch and verify genuine MNIST once into the user's real data cache (a fresh machine fetches it here),
    then point BLINDSPOTS_HOME at a temporary folder that shares those files for the rest of the session."""
    mnist = next(iter(fetch("mnist").values())).parent  # the real home's data/mnist, or $BLINDSPOTS_DATA
    data = mnist.parent if mnist.name == "mnist" else tmp_path_factory.mktemp("data")
    if not (data / "mnist").exists():  # $BLINDSPOTS_DATA points elsewhere: link its folder in as data/mnist
        (data / "mnist").symlink_to(mnist, target_is_directory=True)
    before = os.environ.get("BLINDSPOTS_HOME")
    os.environ["BLINDSPOTS_HOME"] = str(home_sharing_data(tmp_path_factory.mktemp("home"), data))
    yield Path(os.environ["BLINDSPOTS_HOME"])
    if before is None:
        del os.environ["BLINDSPOTS_HOME"]
    else:
        os.environ["BLINDSPOTS_HOME"] = before


@pytest.fixture(scope="session")
def fashion_mnist(mnist_available: Path) -> dict[str, Path]:
    """Genuine Fashion-MNIST, fetched once (Debian's package via `apt-get download`) into the shared data cache."""
    return fetch("fashion-mnist")


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh checkpoint folder for this test session, so no test reuses a stale user checkpoint."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist_available: Path) -> Path:
    """A fresh BLINDSPOTS_HOME for one test (an empty model store), sharing the verified MNIST files."""
    monkeypatch.setenv("BLINDSPOTS_HOME", str(home_sharing_data(tmp_path / "home", mnist_available / "data")))
    return tmp_path


# The linear model of the attack tests: softmax regression on 1,000 training images (exact answers exist for it).
LINEAR = dict(spec="FC10(1e-4)", train_subset=1000)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Small tensors: torch's thread pool costs more than it gains on a shared 2-core machine. A module opts in
    with `pytestmark = pytest.mark.usefixtures("one_thread")` (module fixtures that train run under it too)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def linear(one_thread: None) -> torch.nn.Module:
    return train(LINEAR["spec"], train_subset=LINEAR["train_subset"], progress=False).model


@pytest.fixture(scope="module")
def mlp(one_thread: None) -> torch.nn.Module:
    return train("FC100-100-10", train_subset=2000, epochs=3, progress=False).model
