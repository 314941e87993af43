"""Fixtures for tests that run against a real Synapse homeserver on 127.0.0.1."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.synapse import SynapseServer

MATRIX_TESTS_DIR = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # pytest calls this hook with the items of the whole session, not only this folder's,
    # and a pytestmark in a conftest marks nothing, so the marker is added here by path.
    for item in items:
        if item.path.is_relative_to(MATRIX_TESTS_DIR):
            item.add_marker(pytest.mark.matrix)


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    """A Synapse homeserver shared by the session, stopped at its end."""
    # find_spec locates the package without importing it: the homeserver imports
    # Synapse in its own process.
    if importlib.util.find_spec("synapse") is None:
        pytest.skip("matrix-synapse is not installed; install the test extra: pip install -e '.[test]'")

    server = SynapseServer(tmp_path_factory.mktemp("synapse"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
