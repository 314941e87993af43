"""Handoff relay benchmark: expert to user and user to expert, through a real Synapse on 127.0.0.1.

Run it by hand from the repository root. It is never part of the test suite, and it needs the
test extra (matrix-synapse, matrix-nio):

    python -m bench.handoff --messages 100

The script starts a Synapse homeserver (``tests.support.synapse.SynapseServer``), registers the
assistant's and an expert's accounts, and has the expert create a desk room. It then spawns
``entraide run`` with the Matrix channel and that one desk, and plays both sides in this process:

- the user, on the widget WebSocket, requests a person and fills the handoff form, so that a card
  appears in the desk room. The expert's first reply in the card's thread claims the request;
- expert to user: the time from the expert's ``room_send`` call to the widget frame that carries
  the same text;
- user to expert: the time from sending a widget message to the expert's sync returning the
  assistant's relay of it in the thread.

Messages go one at a time, ``--pause`` seconds apart. Both clocks are this process's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import aiohttp

from bench.load import SpawnedServer, bench_config, load_text, machine, machine_text, percentile

logger = logging.getLogger("bench.handoff")

DESK_LABEL = "Référent numérique"
# Messages that reach a desk with the shipped dialogue: a request for a person, then the handoff
# form's profile, school and description.
HANDOFF_TURNS = (
    "je voudrais parler à une personne de l'assistance svp",
    "je suis enseignant",
    "0451234N",
    "la page des devoirs reste blanche depuis hier soir",
)
FRAME_TIMEOUT = 30.0


class Inbox:
    """Items received by a background reader, each with its arrival time, and a wait for one that matches."""

    def __init__(self) -> None:
        self.items: list[tuple[float, Any]] = []
        self._changed = asyncio.Event()

    def add(self, item: Any) -> None:
        self.items.append((time.perf_counter(), item))
        self._changed.set()

    async def wait(self, predicate: Callable[[Any], bool], what: str, timeout: float = FRAME_TIMEOUT, start: int = 0) -> tuple[float, Any]:
        """Return (arrival time, item) of the first item from index ``start`` on that matches."""
        deadline = time.monotonic() + timeout
        checked = start
        while True:
            for arrived, item in self.items[checked:]:
                if predicate(item):
                    return arrived, item
            checked = max(checked, len(self.items))
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what}: nothing matched within {timeout:g} s")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass


async def read_widget(socket: aiohttp.ClientWebSocketResponse, inbox: Inbox) -> None:
    async for message in socket:
        if message.type == aiohttp.WSMsgType.TEXT:
            inbox.add(json.loads(message.data))


async def read_room(client, room_id: str, inbox: Inbox) -> None:
    """Long-poll the expert's sync and add every timeline event of ``room_id`` to ``inbox``."""
    import nio

    while True:
        response = await client.sync(timeout=30_000, since=client.next_batch)
        if not isinstance(response, nio.SyncResponse):
            logger.warning("expert sync failed: %s; retrying", response)
            await asyncio.sleep(0.5)
            continue
        room = response.rooms.join.get(room_id)
        if room is not None:
            for event in room.timeline.events:
                inbox.add(event.source)


def room_message(sender: str, contains: str) -> Callable[[dict[str, Any]], bool]:
    def matches(source: dict[str, Any]) -> bool:
        body = str((source.get("content") or {}).get("body", ""))
        return source.get("type") == "m.room.message" and source.get("sender") == sender and contains in body

    return matches


def widget_message(role: str, text: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def matches(frame: dict[str, Any]) -> bool:
        return frame.get("type") == "message" and frame.get("role") == role and (text is None or frame.get("text") == text)

    return matches


async def say(socket: aiohttp.ClientWebSocketResponse, inbox: Inbox, text: str) -> None:
    """Send a widget message and wait for the bot's first reply after its echo."""
    client_id = str(uuid.uuid4())
    start = len(inbox.items)
    await socket.send_json({"type": "message", "client_id": client_id, "text": text})
    _, echo = await inbox.wait(lambda frame: frame.get("type") == "message" and frame.get("client_id") == client_id, "the echo", start=start)
    await inbox.wait(lambda frame: widget_message("bot")(frame) and frame["seq"] > echo["seq"], f"the reply to {text!r}", start=start)


async def measure(options: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from tests.support.matrix import make_client, send_text
    from tests.support.synapse import SynapseServer

    synapse = SynapseServer(workdir / "synapse")
    synapse.start()
    server = None
    expert = None
    tasks: list[asyncio.Task] = []
    try:
        tag = secrets.token_hex(3)
        bot = synapse.register(f"entraide_{tag}")
        expert_account = synapse.register(f"expert_{tag}")
        expert = await make_client(synapse, expert_account)
        import nio

        created = await expert.room_create(name=f"triage {tag}", invite=[bot.user_id], federate=False)
        if not isinstance(created, nio.RoomCreateResponse):
            raise RuntimeError(f"the expert could not create the desk room: {created}")
        room_id = created.room_id

        extra = {
            "channels": {"matrix": {
                "enabled": True, "homeserver": synapse.base_url, "user_id": bot.user_id,
                "access_token": "${MATRIX_ACCESS_TOKEN}", "device_id": bot.device_id,
            }},
            "handoff": {
                "desks": [{"name": "triage", "level": 1, "room": room_id, "label": DESK_LABEL}],
                "routing": [],
                "default_desk": "triage",
                "reference_prefix": "B" + tag.upper(),
            },
        }
        config = bench_config(workdir, models=options.models, extra=extra)
        server = SpawnedServer(config, workdir / "server.log", environment={"MATRIX_ACCESS_TOKEN": bot.access_token})
        server.start()
        print(f"entraide PID {server.pid} at {server.url}; Synapse PID {synapse.pid} at {synapse.base_url}", flush=True)

        # The expert's view starts now: earlier events of the room are not needed.
        first = await expert.sync(timeout=0)
        if not isinstance(first, nio.SyncResponse):
            raise RuntimeError(f"the expert's first sync failed: {first}")
        room_inbox, widget_inbox = Inbox(), Inbox()
        tasks.append(asyncio.create_task(read_room(expert, room_id, room_inbox), name="bench-expert-sync"))

        async with aiohttp.ClientSession() as session:
            socket = await session.ws_connect(server.url.replace("http://", "ws://", 1) + "/widget/ws")
            await socket.send_json({"type": "hello", "session_id": None, "token": None, "last_seq": 0, "lang": "fr"})
            welcome = await socket.receive_json(timeout=FRAME_TIMEOUT)
            if welcome.get("type") != "welcome":
                raise RuntimeError(f"expected a welcome frame, got {welcome}")
            tasks.append(asyncio.create_task(read_widget(socket, widget_inbox), name="bench-widget-reader"))

            for text in HANDOFF_TURNS:
                await say(socket, widget_inbox, text)
            _, card = await room_inbox.wait(room_message(bot.user_id, "Nouvelle demande"), "the request's card in the desk room")
            root = card["event_id"]

            # The first expert reply claims the request, and it is not measured.
            start = len(widget_inbox.items)
            await send_text(expert, room_id, "Bonjour, je prends votre demande.", thread_root=root)
            await widget_inbox.wait(widget_message("expert", "Bonjour, je prends votre demande."), "the first expert answer", start=start)

            to_user, to_expert = [], []
            for index in range(options.messages):
                text = f"Réponse de mesure {index} ({tag})"
                start = len(widget_inbox.items)
                sent = time.perf_counter()
                await send_text(expert, room_id, text, thread_root=root)
                arrived, _ = await widget_inbox.wait(widget_message("expert", text), f"expert message {index} on the widget", start=start)
                to_user.append(arrived - sent)
                await asyncio.sleep(options.pause)

            for index in range(options.messages):
                text = f"Message de mesure {index} ({tag})"
                start = len(room_inbox.items)
                sent = time.perf_counter()
                await socket.send_json({"type": "message", "client_id": str(uuid.uuid4()), "text": text})
                arrived, _ = await room_inbox.wait(room_message(bot.user_id, text), f"user message {index} in the desk room", start=start)
                to_expert.append(arrived - sent)
                await asyncio.sleep(options.pause)
            await socket.close()
        return {"expert_to_user": to_user, "user_to_expert": to_expert}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if expert is not None:
            await expert.close()
        if server is not None:
            server.stop()
        synapse.stop()


def report(name: str, latencies: list[float]) -> str:
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    verdict = "met" if p95 is not None and p95 < 0.25 else "MISSED"
    return (f"{name}: {len(latencies)} messages, p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms (target p95 < 250 ms): {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.handoff", description="Measure the handoff relay latency both ways.")
    parser.add_argument("--messages", type=int, default=100, help="messages measured in each direction (default: 100)")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between two measured messages (default: 0.05)")
    parser.add_argument("--models", type=Path, help="model folder to reuse (default: a temporary one, trained at start)")
    parser.add_argument("--workdir", type=Path, help="keep configs, logs and the homeserver here (default: a temporary folder, removed)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # matrix-nio logs every event it handles at INFO.
    logging.getLogger("nio").setLevel(logging.WARNING)

    temporary = None
    if options.workdir:
        workdir = options.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        temporary = tempfile.TemporaryDirectory(prefix="entraide-handoff-")
        workdir = Path(temporary.name)
    try:
        print(f"machine: {machine_text()}; {time.strftime('%Y-%m-%d %H:%M:%S %z')}; load average {load_text()}", flush=True)
        figures = asyncio.run(measure(options, workdir))
        lines = [report("expert -> user widget", figures["expert_to_user"]), report("user widget -> expert room", figures["user_to_expert"])]
        for line in lines:
            print(line)
        print(f"load average {load_text()}")
        if options.json:
            options.json.write_text(json.dumps({"machine": machine(), "figures": figures, "targets": lines}, indent=2), encoding="utf-8")
    finally:
        if temporary is not None:
            temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
