"""Several workers sharing a database and Redis: exclusive turns and fan-out delivery."""

from __future__ import annotations

import asyncio
import os

import pytest

from bot.coordination import LocalCoordinator, decode, encode
from bot.data.domain import Button
from bot.dialogue.events import ActionExecuted, ExpertUttered, UserUttered
from bot.messages import IncomingMessage, OutgoingMessage, Role
from bot.runtime import Runtime

REDIS_VARIABLE = "ENTRAIDE_TEST_REDIS_URL"


class Probe:
    """A channel whose connections live in one worker, like the widget's WebSockets."""

    fan_out = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.received: list[tuple[str, OutgoingMessage]] = []

    async def send(self, recipient_id: str, message: OutgoingMessage) -> None:
        self.received.append((recipient_id, message))


@pytest.fixture
def redis_url():
    url = os.environ.get(REDIS_VARIABLE)
    if not url:
        pytest.skip(f"{REDIS_VARIABLE} is not set; these tests need a Redis server")
    return url


@pytest.fixture
async def workers(shipped_settings, redis_url):
    shipped_settings.storage.redis_url = redis_url
    async with Runtime(shipped_settings, seed=0) as first, Runtime(shipped_settings, seed=0) as second:
        probes = (Probe("probe"), Probe("probe"))
        first.outbox.register(probes[0])
        second.outbox.register(probes[1])
        yield (first, second), probes


def test_fanout_message_round_trip():
    message = OutgoingMessage(text="Bonjour", buttons=(Button("Oui", "/affirm"),), role=Role.EXPERT, label="Niveau 2", seq=7)
    channel, recipient, decoded = decode(encode("web", "session-1", message))
    assert channel == "web"
    assert recipient == "session-1"
    assert decoded == message


async def test_local_coordinator_delivers_directly():
    received = []

    async def deliver(channel, recipient, message):
        received.append((channel, recipient, message.text))

    coordinator = LocalCoordinator()
    await coordinator.start(deliver)
    await coordinator.fan_out("web", "s", OutgoingMessage(text="x"))
    assert received == [("web", "s", "x")]


async def test_two_workers_keep_turns_whole(workers):
    (first, second), _ = workers
    texts = [f"question {index}" for index in range(20)]
    await asyncio.gather(
        *(
            (first if index % 2 else second).assistant.handle(IncomingMessage(channel="probe", sender_id="u", text=text, message_id=f"m{index}"))
            for index, text in enumerate(texts)
        )
    )
    conversation = await first.store.conversation("probe", "u")
    events = [item.event for item in await first.store.events(conversation.id)]
    turns_complete = True
    waiting_for_listen = False
    for event in events:
        if isinstance(event, UserUttered):
            turns_complete = turns_complete and not waiting_for_listen
            waiting_for_listen = True
        elif isinstance(event, ActionExecuted) and event.name == "action_listen":
            waiting_for_listen = False
    assert sorted(event.text for event in events if isinstance(event, UserUttered)) == sorted(texts)
    assert turns_complete


async def test_message_reaches_other_worker(workers):
    (first, second), probes = workers
    await second.assistant.handle(IncomingMessage(channel="probe", sender_id="u", text="bonjour"))
    conversation = await first.store.conversation("probe", "u")
    for probe in probes:
        probe.received.clear()
    await first.assistant.deliver(conversation.id, ExpertUttered(text="Je regarde votre compte.", label="Conseiller ENT"))
    for _ in range(100):
        if probes[1].received:
            break
        await asyncio.sleep(0.02)
    assert [message.text for _, message in probes[1].received] == ["Je regarde votre compte."]
    assert probes[1].received[0][0] == "u"
