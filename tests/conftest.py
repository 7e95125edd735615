"""Shared fixtures: real MNIST (fetched once into the user's cache) and an isolated model store."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindspots.data import fetch


@pytest.fixture(scope="session", autouse=True)
def mnist_available() -> None:
    """Fetch and verify genuine MNIST once; every test uses the real data."""
    fetch("mnist")


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh checkpoint folder for this test session, so no test reuses a stale user checkpoint."""
    return tmp_path_factory.mktemp("models")
