"""Desk rooms on the test homeserver, and entraide running against them with the shipped data.

An expert account creates four desk rooms and a room that is no desk, and invites the assistant's
account and a visitor who has no right to use commands. The rooms are shared by the tests of a module,
which run in the module's event loop. The test writes a config.yml that points
at these rooms, and runs the runtime with its Matrix connector on a SQLite file of its own.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nio
import pytest
import pytest_asyncio

from bot._yaml import load_yaml
from bot.config import DATABASE_URL_VARIABLE, Settings, load_settings
from bot.dialogue.events import Event
from bot.errors import ConfigError
from bot.messages import IncomingMessage, OutgoingMessage
from bot.runtime import Runtime
from tests.support.matrix import expect, make_client, send_text
from tests.support.synapse import MatrixAccount, SynapseServer

ROOT = Path(__file__).resolve().parents[2]
DESK_LABELS = {
    "triage": "Référent numérique",
    "technique": "Assistance technique",
    "fonctionnel": "Assistance fonctionnelle",
    "editeur": "Éditeur de l'ENT",
}
# What a user writes to reach a desk through the shipped dialogue (human request, profile, school, description).
TECHNICAL_PROBLEM = "je n'arrive pas à me connecter à pronote, mot de passe refusé"
UNCLEAR_PROBLEM = "c'est compliqué à expliquer"
T = TypeVar("T")


@dataclass
class DeskRooms:
    """The Matrix side of a test: accounts, the expert's and visitor's clients, room ids by desk name."""

    synapse: SynapseServer
    accounts: dict[str, MatrixAccount]
    expert: nio.AsyncClient
    visitor: nio.AsyncClient
    rooms: dict[str, str]
    view: RoomView

    @property
    def bot_id(self) -> str:
        return self.accounts["bot"].user_id


class UserChannel:
    """Stands for the user's connector: keeps every message the assistant sends to a user."""

    def __init__(self, name: str = "rest") -> None:
        self.name = name
        self.received: list[tuple[str, OutgoingMessage]] = []

    async def send(self, recipient_id: str, message: OutgoingMessage) -> None:
        self.received.append((recipient_id, message))

    def messages(self, recipient_id: str) -> list[OutgoingMessage]:
        return [message for recipient, message in self.received if recipient == recipient_id]


@dataclass
class Entraide:
    runtime: Runtime
    user_channel: UserChannel

    async def say(self, sender: str, text: str, message_id: str | None = None) -> list[OutgoingMessage]:
        return await self.runtime.assistant.handle(IncomingMessage(channel="rest", sender_id=sender, text=text, message_id=message_id))

    async def ask_for_human(self, sender: str, profile: str, problem: str) -> str:
        """Go through the shipped handoff form and return the new request's reference."""
        for text in ("je voudrais parler à une personne de l'assistance svp", f"je suis {profile}", "0451234N", problem):
            await self.say(sender, text)
        request = await self.request_of(sender)
        assert request is not None, "the conversation did not reach a desk"
        return request.reference

    async def request_of(self, sender: str):
        conversation = await self.runtime.store.conversation("rest", sender)
        return await self.runtime.book.latest_for_conversation(conversation.id)

    async def events_of(self, sender: str, kind: type[Event]) -> list[Event]:
        conversation = await self.runtime.store.conversation("rest", sender)
        return [item.event for item in await self.runtime.store.events(conversation.id) if isinstance(item.event, kind)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_rooms(synapse: SynapseServer) -> AsyncIterator[DeskRooms]:
    """Accounts and rooms shared by one test module; creating rooms is the slow part of a test."""
    tag = secrets.token_hex(3)
    accounts = {role: synapse.register(f"{role}_{tag}") for role in ("bot", "expert", "visitor", "user")}
    expert = await make_client(synapse, accounts["expert"])
    visitor = await make_client(synapse, accounts["visitor"])
    try:
        rooms = {}
        for name in (*DESK_LABELS, "cafe"):
            created = await expert.room_create(
                name=f"{name} {tag}", invite=[accounts["bot"].user_id, accounts["visitor"].user_id], federate=False
            )
            rooms[name] = expect(created, nio.RoomCreateResponse).room_id
            expect(await visitor.join(rooms[name]), nio.JoinResponse)
        yield DeskRooms(synapse, accounts, expert, visitor, rooms, RoomView(expert))
    finally:
        await expert.close()
        await visitor.close()


@pytest_asyncio.fixture(loop_scope="module")
async def desk_rooms(module_rooms: DeskRooms) -> DeskRooms:
    """The module's rooms with a view of the expert that starts now, so earlier tests' events stay out."""
    expect(await module_rooms.expert.sync(timeout=0, since=module_rooms.expert.next_batch), nio.SyncResponse)
    return DeskRooms(
        module_rooms.synapse, module_rooms.accounts, module_rooms.expert, module_rooms.visitor, module_rooms.rooms, RoomView(module_rooms.expert)
    )


def write_config(
    folder: Path, models: Path, rooms: DeskRooms, monkeypatch: pytest.MonkeyPatch, homeserver: str | None = None
) -> Settings:
    """Write a config.yml for the shipped data with the test's desk rooms and routing, and load it.

    JSON is valid YAML, so the shipped file is read, changed and written back as JSON.
    """
    monkeypatch.delenv(DATABASE_URL_VARIABLE, raising=False)
    bot = rooms.accounts["bot"]
    monkeypatch.setenv("MATRIX_ACCESS_TOKEN", bot.access_token)
    raw: dict[str, Any] = json.loads(json.dumps(load_yaml(ROOT / "config.yml", ConfigError)))
    raw["data"] = {key: str(ROOT / value) for key, value in raw["data"].items()}
    raw["data"]["models"] = str(models)
    raw["storage"]["url"] = f"sqlite+aiosqlite:///{folder / 'entraide.db'}"
    raw["channels"]["matrix"] = {
        "enabled": True,
        "homeserver": homeserver or rooms.synapse.base_url,
        "user_id": bot.user_id,
        "access_token": "${MATRIX_ACCESS_TOKEN}",
        "device_id": bot.device_id,
        "command_power_level": 50,
    }
    raw["handoff"]["desks"] = [
        {"name": "triage", "level": 1, "room": rooms.rooms["triage"], "label": DESK_LABELS["triage"]},
        {"name": "technique", "level": 2, "room": rooms.rooms["technique"], "label": DESK_LABELS["technique"]},
        {
            "name": "fonctionnel",
            "level": 2,
            "room": rooms.rooms["fonctionnel"],
            "label": DESK_LABELS["fonctionnel"],
            "relay_mode": "reply",
        },
        {"name": "editeur", "level": 3, "room": rooms.rooms["editeur"], "label": DESK_LABELS["editeur"]},
    ]
    raw["handoff"]["routing"] = [
        {"match": {"profile": ["parent"]}, "desk": "fonctionnel"},
        {"match": {"expertise": ["technique"]}, "desk": "technique"},
        {"match": {"level": [1]}, "desk": "triage"},
    ]
    raw["handoff"]["default_desk"] = "triage"
    # Every test starts numbering from 1 in its own database: a prefix of its own keeps references unique in shared rooms.
    raw["handoff"]["reference_prefix"] = "T" + secrets.token_hex(3).upper()
    path = folder / "config.yml"
    path.write_text(json.dumps(raw, ensure_ascii=False, indent=2), encoding="utf-8")
    return load_settings(path)


@asynccontextmanager
async def running_entraide(settings: Settings, poll_timeout_ms: int | None = None, timeline_limit: int | None = None) -> AsyncIterator[Entraide]:
    """Run the runtime and its Matrix connector until the block ends; stop them in reverse order."""
    async with Runtime(settings, seed=0) as runtime:
        user_channel = UserChannel()
        runtime.outbox.register(user_channel)
        runtime.outbox.register(runtime.matrix)
        if poll_timeout_ms is not None:
            runtime.matrix.poll_timeout_ms = poll_timeout_ms
        if timeline_limit is not None:
            runtime.matrix.timeline_limit = timeline_limit
        await runtime.matrix.start()
        try:
            yield Entraide(runtime, user_channel)
        finally:
            await runtime.matrix.stop()


async def eventually(check: Callable[[], Awaitable[T]], description: str, timeout: float = 10.0) -> T:
    """Call ``check`` until it returns a true value, and return that value; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"{description}: not true within {timeout:g} s")
        await asyncio.sleep(0.05)


class RoomView:
    """Everything one account received through sync, by room, kept so that no check misses an event."""

    def __init__(self, client: nio.AsyncClient) -> None:
        self.client = client
        self.seen: list[tuple[str, dict[str, Any]]] = []

    async def wait(self, predicate: Callable[[str, dict[str, Any]], bool], description: str, timeout: float = 10.0) -> dict[str, Any]:
        """Return the first event received so far or later for which ``predicate(room_id, source)`` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        checked = 0
        while True:
            for room_id, source in self.seen[checked:]:
                if predicate(room_id, source):
                    return source
            checked = len(self.seen)
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"{self.client.user_id} did not receive {description} within {timeout:g} s")
            response = expect(await self.client.sync(timeout=max(1, int(left * 1000)), since=self.client.next_batch), nio.SyncResponse)
            for room_id, info in response.rooms.join.items():
                self.seen.extend((room_id, event.source) for event in info.timeline.events)

    def all(self, predicate: Callable[[str, dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [source for room_id, source in self.seen if predicate(room_id, source)]


def body_of(source: dict[str, Any]) -> str:
    return str((source.get("content") or {}).get("body", ""))


def relation_of(source: dict[str, Any]) -> dict[str, Any]:
    return (source.get("content") or {}).get("m.relates_to") or {}


def bot_message(rooms: DeskRooms, room: str, contains: str = "", thread_root: str | None = None) -> Callable[[str, dict[str, Any]], bool]:
    """Match a message of the assistant's account in the room named ``room`` whose body contains ``contains``."""

    def matches(room_id: str, source: dict[str, Any]) -> bool:
        if room_id != rooms.rooms[room] or source.get("type") != "m.room.message" or source.get("sender") != rooms.bot_id:
            return False
        if thread_root is not None and relation_of(source).get("event_id") != thread_root:
            return False
        return contains in body_of(source)

    return matches


def reaction_to(event_id: str, key: str = "✅") -> Callable[[str, dict[str, Any]], bool]:
    def matches(room_id: str, source: dict[str, Any]) -> bool:
        relation = relation_of(source)
        return source.get("type") == "m.reaction" and relation.get("event_id") == event_id and relation.get("key") == key

    return matches


async def card_of(rooms: DeskRooms, desk: str, reference: str) -> dict[str, Any]:
    """Wait for the card of ``reference`` in the desk's room, in the expert's view."""
    return await rooms.view.wait(bot_message(rooms, desk, f"Nouvelle demande {reference}"), f"the card of {reference} in {desk}")


async def expert_says(rooms: DeskRooms, desk: str, body: str, thread_root: str | None = None, in_reply_to: str | None = None) -> str:
    return await send_text(rooms.expert, rooms.rooms[desk], body, thread_root=thread_root, in_reply_to=in_reply_to)
