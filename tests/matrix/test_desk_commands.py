"""Commands and messages in desk rooms that must change nothing, and texts that must stay inert."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import nio
import pytest

from bot.dialogue.events import ExpertUttered
from bot.handoff.requests import Status
from tests.matrix.desks import (
    TECHNICAL_PROBLEM,
    DeskRooms,
    bot_message,
    body_of,
    card_of,
    desk_rooms,
    module_rooms,
    eventually,
    expert_says,
    reaction_to,
    running_entraide,
    write_config,
)
from tests.support.matrix import expect, make_client, send_text

__all__ = ["desk_rooms", "module_rooms"]
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def settings(tmp_path: Path, shipped_models: Path, desk_rooms: DeskRooms, monkeypatch: pytest.MonkeyPatch):
    return write_config(tmp_path, shipped_models, desk_rooms, monkeypatch)


async def highlights(rooms: DeskRooms, account: str) -> list[dict[str, Any]]:
    """Return the notifications that highlight ``account`` (mentions), newest first."""
    token = rooms.accounts[account].access_token
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{rooms.synapse.base_url}/_matrix/client/v3/notifications",
            params={"only": "highlight"},
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 200
            return (await response.json())["notifications"]


async def test_unauthorised_command_changes_nothing(settings, desk_rooms: DeskRooms):
    rooms = desk_rooms
    async with running_entraide(settings) as entraide:
        reference = await entraide.ask_for_human("visitor-rights", "enseignant", TECHNICAL_PROBLEM)
        root = (await card_of(rooms, "technique", reference))["event_id"]

        await send_text(rooms.visitor, rooms.rooms["technique"], "!clore", thread_root=root)
        reply = await rooms.view.wait(bot_message(rooms, "technique", "Vous n'avez pas les droits", thread_root=root), "the refusal")
        request = await entraide.request_of("visitor-rights")

    assert "niveau de pouvoir 50 requis" in body_of(reply)
    assert request.status == Status.NEW.value


async def test_unknown_desk_gets_list_of_desks(settings, desk_rooms: DeskRooms):
    rooms = desk_rooms
    async with running_entraide(settings) as entraide:
        reference = await entraide.ask_for_human("unknown-desk", "enseignant", TECHNICAL_PROBLEM)
        root = (await card_of(rooms, "technique", reference))["event_id"]

        await expert_says(rooms, "technique", "!transferer comptabilite", thread_root=root)
        reply = await rooms.view.wait(bot_message(rooms, "technique", "Guichet inconnu", thread_root=root), "the unknown desk reply")
        request = await entraide.request_of("unknown-desk")

    assert "fonctionnel : Assistance fonctionnelle (niveau 2)" in body_of(reply)
    assert request.desk == "technique"


async def test_unknown_reference_reported(settings, desk_rooms: DeskRooms):
    rooms = desk_rooms
    async with running_entraide(settings):
        command = await expert_says(rooms, "triage", "!info ENT-2026-99999")
        reply = await rooms.view.wait(bot_message(rooms, "triage", "Aucune demande ne porte la référence ENT-2026-99999"), "the reply")

    assert reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == command


async def test_help_lists_commands(settings, desk_rooms: DeskRooms):
    rooms = desk_rooms
    async with running_entraide(settings):
        await expert_says(rooms, "triage", "!aide")
        reply = await rooms.view.wait(bot_message(rooms, "triage", "Commandes du guichet"), "the help")

    assert "!escalader [guichet] [raison] (!escalate)" in body_of(reply)


async def test_message_outside_desks_ignored(settings, desk_rooms: DeskRooms, caplog: pytest.LogCaptureFixture):
    rooms = desk_rooms
    bot = await make_client(rooms.synapse, rooms.accounts["bot"])
    try:
        expect(await bot.join(rooms.rooms["cafe"]), nio.JoinResponse)
    finally:
        await bot.close()
    caplog.set_level(logging.INFO, logger="connectors.matrix.connector")
    async with running_entraide(settings):
        ignored = await expert_says(rooms, "cafe", "!prendre")

        async def ignored_lines() -> list[str]:
            return [record.getMessage() for record in caplog.records if ignored in record.getMessage()]

        lines = await eventually(ignored_lines, "the log line of the ignored event")
        # A command in a desk room afterwards: its reply comes after the café message was read.
        await expert_says(rooms, "triage", "!aide")
        await rooms.view.wait(bot_message(rooms, "triage", "Commandes du guichet"), "the help")

    assert "neither a desk room nor a direct chat" in lines[0]
    assert rooms.view.all(bot_message(rooms, "cafe")) == []
    assert not any("!prendre" in record.getMessage() for record in caplog.records)


async def test_user_text_mentions_nobody(settings, desk_rooms: DeskRooms):
    rooms = desk_rooms
    expert_name = rooms.accounts["expert"].user_id[1:].split(":")[0]
    async with running_entraide(settings) as entraide:
        reference = await entraide.ask_for_human("mentions", "enseignant", TECHNICAL_PROBLEM)
        root = (await card_of(rooms, "technique", reference))["event_id"]

        await entraide.say("mentions", f"@room urgent ! {expert_name} <b>aidez-moi</b>")
        relayed = await rooms.view.wait(bot_message(rooms, "technique", "Usager : @", thread_root=root), "the relayed message")
        # Control: the same words from a person, without m.mentions, do highlight the expert.
        control = await send_text(rooms.visitor, rooms.rooms["technique"], f"{expert_name} regarde ça")
        await rooms.view.wait(lambda room_id, source: source.get("event_id") == control, "the control message")
        highlighted = {item["event"]["event_id"] for item in await highlights(rooms, "expert")}

    content = relayed["content"]
    assert "@room" not in content["body"]
    assert "@room" not in content["formatted_body"]
    assert content["m.mentions"] == {}
    assert "&lt;b&gt;aidez-moi&lt;/b&gt;" in content["formatted_body"]
    assert control in highlighted
    assert relayed["event_id"] not in highlighted


async def test_expert_edit_relayed_as_correction(settings, desk_rooms: DeskRooms):
    rooms = desk_rooms
    async with running_entraide(settings) as entraide:
        reference = await entraide.ask_for_human("edits", "enseignant", TECHNICAL_PROBLEM)
        root = (await card_of(rooms, "technique", reference))["event_id"]
        original = await expert_says(rooms, "technique", "Redémarrez la box.", thread_root=root)
        await rooms.view.wait(reaction_to(original), "the ✅ on the answer")

        edit = {
            "msgtype": "m.text",
            "body": "* Redémarrez le navigateur.",
            "m.new_content": {"msgtype": "m.text", "body": "Redémarrez le navigateur."},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        }
        expect(await rooms.expert.room_send(rooms.rooms["technique"], "m.room.message", edit), nio.RoomSendResponse)

        async def corrections() -> list:
            return [event for event in await entraide.events_of("edits", ExpertUttered) if event.correction_of == original]

        correction = (await eventually(corrections, "the correction reaching the user"))[0]

    assert correction.text == "Correction : Redémarrez le navigateur."
