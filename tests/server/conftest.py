"""Fixtures that run ``entraide run``'s application on 127.0.0.1 with the shipped data.

The NLU model is trained once per session into a temporary folder (``shipped_models`` of
tests/conftest.py), so every Runtime here loads it. One server is shared by the session's tests. A test that needs other settings
(low rate limits) starts its own server with ``start_server``.

Async tests here run in the session's event loop, so that they can use the shared server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from bot.config import Settings, load_settings
from bot.runtime import Runtime
from bot.server import CONNECTORS, build_app, make_runner
from connectors.web import WebConnector

SERVER_TESTS_DIR = Path(__file__).parent
CONFIG = Path(__file__).resolve().parents[2] / "config.yml"
LOOPBACK = "127.0.0.1"

# The ENT signs identity tokens with this HS256 secret. PyJWT warns about HMAC keys shorter
# than the hash's digest, which is 32 bytes for SHA-256.
JWT_SECRET = "entraide-tests-shared-secret-for-hs256"
ALLOWED_ORIGIN = "https://ent.example.fr"
OTHER_ORIGIN = "https://autre-ent.example.org"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # pytest calls this hook with the items of the whole session, so only this folder's are marked.
    session_loop = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if item.path.is_relative_to(SERVER_TESTS_DIR) and pytest_asyncio.is_async_test(item):
            item.add_marker(session_loop, append=False)


@dataclass
class LiveServer:
    """A running application: its runtime, its app and the port it is bound to."""

    runtime: Runtime
    app: web.Application
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/widget/ws"

    @property
    def web_connector(self) -> WebConnector:
        for connector in self.app[CONNECTORS]:
            if isinstance(connector, WebConnector):
                return connector
        raise LookupError("the web channel is not enabled in these settings")


def build_settings(models: Path, database: Path) -> Settings:
    """Read the shipped config.yml and point it at a test database and model folder.

    The limits are raised because every test client connects from 127.0.0.1: a test of a limit
    starts its own server with the limit lowered again.
    """
    settings = load_settings(CONFIG)
    settings.storage.url = f"sqlite+aiosqlite:///{database}"
    settings.data.models = models
    settings.server.requests_per_minute = 10_000
    web_settings = settings.channels.web
    web_settings.jwt_secret = JWT_SECRET
    web_settings.allowed_origins = [ALLOWED_ORIGIN]
    web_settings.connections_per_minute = 10_000
    web_settings.messages_per_minute = 10_000
    return settings


@asynccontextmanager
async def running_server(settings: Settings) -> AsyncIterator[LiveServer]:
    """Serve ``build_app`` on 127.0.0.1 at a free port until the block ends."""
    async with Runtime(settings) as runtime:
        app = build_app(runtime)
        runner = make_runner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, LOOPBACK, 0)
            await site.start()
            port = runner.addresses[0][1]
            yield LiveServer(runtime, app, port)
        finally:
            await runner.cleanup()


@pytest.fixture
def settings(shipped_models: Path, tmp_path: Path) -> Settings:
    """Settings from the shipped config.yml with a fresh SQLite database for this test."""
    return build_settings(shipped_models, tmp_path / "entraide.db")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def server(shipped_models: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    """The server shared by the session's tests, so each test uses senders and sessions of its own."""
    database = tmp_path_factory.mktemp("shared-server") / "entraide.db"
    async with running_server(build_settings(shipped_models, database)) as live:
        yield live


@pytest_asyncio.fixture(loop_scope="session")
async def start_server() -> AsyncIterator[Callable[[Settings], Awaitable[LiveServer]]]:
    """Return a function that starts a server with the given settings, stopped after the test."""
    async with AsyncExitStack() as stack:

        async def start(settings: Settings) -> LiveServer:
            return await stack.enter_async_context(running_server(settings))

        yield start


@pytest_asyncio.fixture(loop_scope="session")
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP and WebSocket client, as an ENT page or an integration would use."""
    async with aiohttp.ClientSession() as session:
        yield session
