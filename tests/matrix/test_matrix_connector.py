"""The Matrix connector: direct chats, startup checks, wiring, and a homeserver that stops responding."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nio
import pytest
import pytest_asyncio
from aiohttp import web

from bot.errors import HandoffError
from bot.handoff.expert_desk import ExpertDesk
from bot.runtime import Runtime
from bot.server import build_connectors
from connectors.matrix import MatrixConnector
from tests.matrix.desks import (
    TECHNICAL_PROBLEM,
    DeskRooms,
    RoomView,
    bot_message,
    body_of,
    card_of,
    desk_rooms,
    eventually,
    module_rooms,
    running_entraide,
    write_config,
)
from tests.support.matrix import expect, make_client, send_text

__all__ = ["desk_rooms", "module_rooms"]
pytestmark = pytest.mark.asyncio(loop_scope="module")
LOOPBACK = "127.0.0.1"


class SwitchableProxy:
    """A reverse proxy on 127.0.0.1 in front of the homeserver that returns 502 while ``down`` is set."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.down = False
        self.port = 0
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def __aenter__(self) -> SwitchableProxy:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()
        await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=502, text="bad gateway")
        headers = {name: value for name, value in request.headers.items() if name.lower() in {"authorization", "content-type"}}
        async with self._session.request(request.method, self.target + request.path_qs, data=await request.read(), headers=headers) as upstream:
            return web.Response(status=upstream.status, body=await upstream.read(), content_type=upstream.content_type)


@pytest_asyncio.fixture(loop_scope="module")
async def proxy(desk_rooms: DeskRooms) -> AsyncIterator[SwitchableProxy]:
    async with SwitchableProxy(desk_rooms.synapse.base_url) as running:
        yield running


@pytest.fixture
def settings(tmp_path: Path, shipped_models: Path, desk_rooms: DeskRooms, monkeypatch: pytest.MonkeyPatch):
    return write_config(tmp_path, shipped_models, desk_rooms, monkeypatch)


def in_room(room_id: str, sender: str, contains: str = ""):
    def matches(event_room: str, source: dict[str, Any]) -> bool:
        return (
            event_room == room_id
            and source.get("type") == "m.room.message"
            and source.get("sender") == sender
            and contains in body_of(source)
        )

    return matches


async def test_runtime_wires_expert_desk(settings):
    async with Runtime(settings, seed=0) as runtime:
        connectors = build_connectors(settings, runtime)

    assert isinstance(runtime.assistant.desk, ExpertDesk)
    assert runtime.assistant.desk.transport is runtime.matrix
    assert any(isinstance(connector, MatrixConnector) for connector in connectors)


async def test_direct_chat_answered_by_assistant(settings, desk_rooms: DeskRooms):
    rooms = desk_rooms
    user = await make_client(rooms.synapse, rooms.accounts["user"])
    view = RoomView(user)
    try:
        async with running_entraide(settings) as entraide:
            created = await user.room_create(is_direct=True, invite=[rooms.bot_id], federate=False)
            room_id = expect(created, nio.RoomCreateResponse).room_id
            await view.wait(
                lambda event_room, source: event_room == room_id
                and source.get("type") == "m.room.member"
                and source.get("state_key") == rooms.bot_id
                and source["content"].get("membership") == "join",
                "the assistant joining the direct chat",
            )

            await send_text(user, room_id, "bonjour")
            greeting = await view.wait(in_room(room_id, rooms.bot_id, "Bonjour"), "the greeting")
            await send_text(user, room_id, "je voudrais parler à une personne de l'assistance svp")
            choices = await view.wait(in_room(room_id, rooms.bot_id, "1. "), "the numbered profile choices")
            await send_text(user, room_id, "2")
            await view.wait(in_room(room_id, rooms.bot_id, "UAI"), "the school question")
            conversation = await entraide.runtime.store.conversation("matrix", room_id)
            tracker = await entraide.runtime.assistant.tracker(conversation.id)
    finally:
        await user.close()

    assert greeting["content"]["m.mentions"] == {}
    assert "Répondez par le numéro de votre choix." in body_of(choices)
    assert tracker.slots["profile"] == "enseignant"


async def test_unjoinable_desk_room_stops_startup(tmp_path, shipped_models, desk_rooms: DeskRooms, monkeypatch):
    rooms = desk_rooms
    closed = expect(await rooms.expert.room_create(name="sans invitation", federate=False), nio.RoomCreateResponse).room_id
    settings = write_config(tmp_path, shipped_models, rooms, monkeypatch)
    settings.handoff.desks[1].room = closed

    with pytest.raises(HandoffError, match=f"desk 'technique': cannot join room {closed}"):
        async with running_entraide(settings):
            pass


async def test_desk_room_given_by_alias(tmp_path, shipped_models, desk_rooms: DeskRooms, monkeypatch):
    rooms = desk_rooms
    alias = f"guichet-{secrets.token_hex(3)}"
    created = await rooms.expert.room_create(alias=alias, invite=[rooms.bot_id], federate=False)
    room_id = expect(created, nio.RoomCreateResponse).room_id
    settings = write_config(tmp_path, shipped_models, rooms, monkeypatch)
    settings.handoff.desks[1].room = f"#{alias}:{rooms.synapse.server_name}"

    async with running_entraide(settings) as entraide:
        reference = await entraide.ask_for_human("alias", "enseignant", TECHNICAL_PROBLEM)
        card = await rooms.view.wait(in_room(room_id, rooms.bot_id, f"Nouvelle demande {reference}"), "the card in the aliased room")

    assert "Assistance technique" in body_of(card)


async def test_unreachable_homeserver_then_recovery(tmp_path, shipped_models, desk_rooms: DeskRooms, monkeypatch, proxy):
    rooms = desk_rooms
    settings = write_config(tmp_path, shipped_models, rooms, monkeypatch, homeserver=proxy.url)
    sender = "outage"
    async with running_entraide(settings, poll_timeout_ms=500) as entraide:
        proxy.down = True
        await entraide.say(sender, "je voudrais parler à une personne de l'assistance svp")
        await entraide.say(sender, "je suis enseignant")
        await entraide.say(sender, "0451234N")
        replies = await entraide.say(sender, TECHNICAL_PROBLEM)
        waiting = await entraide.request_of(sender)
        await entraide.say(sender, "Je précise : depuis ce matin.")

        proxy.down = False
        card = await card_of(rooms, "technique", waiting.reference)

        async def told_posted() -> bool:
            return any("maintenant transmise" in message.text for message in entraide.user_channel.messages(sender))

        await eventually(told_posted, "the user told that the request went out", timeout=20)
        posted = await entraide.request_of(sender)

    assert waiting.posted is False
    assert any("ne peut pas être joint" in reply.text for reply in replies)
    assert posted.posted is True
    assert posted.thread_root == card["event_id"]
    assert "Je précise : depuis ce matin." in body_of(card)


async def test_user_file_posted_in_thread(tmp_path, shipped_models, desk_rooms: DeskRooms, monkeypatch):
    rooms = desk_rooms
    settings = write_config(tmp_path, shipped_models, rooms, monkeypatch)
    settings.handoff.desks[1].allow_attachments = True
    async with running_entraide(settings) as entraide:
        reference = await entraide.ask_for_human("file", "enseignant", TECHNICAL_PROBLEM)
        root = (await card_of(rooms, "technique", reference))["event_id"]
        conversation = await entraide.runtime.store.conversation("rest", "file")

        accepted = await entraide.runtime.assistant.desk.relay_attachment(
            conversation.id, "capture écran.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(64), conversation.last_seq
        )
        # The desk rooms are shared by the module's tests: look for this request's image only.
        posted = await rooms.view.wait(
            lambda room_id, source: room_id == rooms.rooms["technique"]
            and source["content"].get("msgtype") == "m.image"
            and source["content"].get("m.relates_to", {}).get("event_id") == root,
            "the image in the thread",
        )

    assert accepted is True
    assert posted["content"]["url"].startswith("mxc://")
    assert posted["content"]["body"] == "capture écran.png"
    assert posted["content"]["m.relates_to"]["event_id"] == root


async def test_encrypted_direct_chat_gets_notice(settings, desk_rooms: DeskRooms):
    rooms = desk_rooms
    user = await make_client(rooms.synapse, rooms.accounts["user"])
    view = RoomView(user)
    encryption = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
    try:
        async with running_entraide(settings) as entraide:
            created = await user.room_create(is_direct=True, invite=[rooms.bot_id], federate=False, initial_state=[encryption])
            room_id = expect(created, nio.RoomCreateResponse).room_id
            notice = await view.wait(in_room(room_id, rooms.bot_id, "Cette conversation est chiffrée"), "the notice")
            direct = await entraide.runtime.store.get_state(f"matrix:direct:{room_id}")
    finally:
        await user.close()

    assert "non chiffrée" in body_of(notice)
    assert direct is None
