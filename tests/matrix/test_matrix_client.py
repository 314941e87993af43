"""MatrixClient's bounded retries against a scripted homeserver on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.config import MatrixSettings
from connectors.matrix import client as client_module
from connectors.matrix.client import MatrixClient, MatrixRateLimited, MatrixRequestError, MatrixUnavailable

LOOPBACK = "127.0.0.1"
ROOM = "!room:test"


class ScriptedHomeserver:
    """Respond to each send request with the next scripted (status, body); record the paths requested."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict]] = []
        self.paths: list[str] = []
        self.url = ""

    async def send(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        status, body = self.script.pop(0) if self.script else (200, {"event_id": "$sent"})
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")


@pytest.fixture
async def homeserver() -> AsyncIterator[ScriptedHomeserver]:
    fake = ScriptedHomeserver()
    app = web.Application()
    app.router.add_put("/_matrix/client/v3/rooms/{room}/send/{type}/{txn}", fake.send)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    fake.url = f"http://{LOOPBACK}:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "BACKOFF_BASE", 0.01)


def make_client(url: str, **options) -> MatrixClient:
    settings = MatrixSettings(enabled=True, homeserver=url, user_id="@bot:test", access_token="token", device_id="DEVICE")
    return MatrixClient(settings, **options)


async def test_rate_limit_honoured_then_sent(homeserver):
    homeserver.script = [(429, {"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests", "retry_after_ms": 50})]
    client = make_client(homeserver.url)
    try:
        event_id = await client.send(ROOM, "m.room.message", {"msgtype": "m.text", "body": "bonjour"})
    finally:
        await client.close()

    assert event_id == "$sent"
    assert len(homeserver.paths) == 2


async def test_long_rate_limit_raises_at_once(homeserver):
    homeserver.script = [(429, {"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests", "retry_after_ms": 333_000})]
    client = make_client(homeserver.url)
    try:
        with pytest.raises(MatrixRateLimited) as caught:
            await client.send(ROOM, "m.room.message", {"msgtype": "m.text", "body": "bonjour"})
    finally:
        await client.close()

    assert caught.value.retry_after == 333.0
    assert len(homeserver.paths) == 1


async def test_server_errors_retried_with_one_transaction(homeserver):
    homeserver.script = [(502, {}), (503, {})]
    client = make_client(homeserver.url)
    try:
        event_id = await client.send(ROOM, "m.room.message", {"msgtype": "m.text", "body": "bonjour"})
    finally:
        await client.close()

    assert event_id == "$sent"
    assert len(homeserver.paths) == 3
    assert len(set(homeserver.paths)) == 1


async def test_server_errors_bounded(homeserver):
    homeserver.script = [(502, {})] * 5
    client = make_client(homeserver.url, attempts=3)
    try:
        with pytest.raises(MatrixRequestError) as caught:
            await client.send(ROOM, "m.room.message", {"msgtype": "m.text", "body": "bonjour"})
    finally:
        await client.close()

    assert caught.value.status == 502
    assert len(homeserver.paths) == 3


async def test_forbidden_not_retried(homeserver):
    homeserver.script = [(403, {"errcode": "M_FORBIDDEN", "error": "You are not in this room"})]
    client = make_client(homeserver.url)
    try:
        with pytest.raises(MatrixRequestError) as caught:
            await client.send(ROOM, "m.room.message", {"msgtype": "m.text", "body": "bonjour"})
    finally:
        await client.close()

    assert caught.value.errcode == "M_FORBIDDEN"
    assert len(homeserver.paths) == 1


async def test_closed_port_is_unavailable():
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port once the probe is closed.
    client = make_client(f"http://{LOOPBACK}:{port}", attempts=2)
    try:
        with pytest.raises(MatrixUnavailable, match="did not respond"):
            await client.send(ROOM, "m.room.message", {"msgtype": "m.text", "body": "bonjour"})
    finally:
        await client.close()
