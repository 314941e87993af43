"""Fixtures for tests that run python-telegram-bot against the local Bot API server."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.fake_bot_api import LOOPBACK, FakeBotApi

_TELEGRAM_TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/telegram with ``telegram``."""
    for item in items:
        if _TELEGRAM_TESTS in item.path.resolve().parents:
            item.add_marker(pytest.mark.telegram)


@pytest.fixture(autouse=True)
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opt in to PTB 22's timedelta durations, such as ``RetryAfter.retry_after``.

    Without it, PTB 22 returns seconds as int and emits a PTBDeprecationWarning.
    """
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
async def bot_api() -> AsyncIterator[FakeBotApi]:
    """Yield a started local Bot API server, stopped after the test."""
    async with FakeBotApi() as fake:
        yield fake


@pytest.fixture
def webhook_port() -> int:
    """Return a loopback port that was free a moment ago, for PTB's webhook server.

    The port goes into the webhook URL before PTB binds it, so it cannot be port 0.
    Another process could take it in between, which is unlikely on a test machine.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]
