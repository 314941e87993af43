"""A user hands over to human experts who reply in Matrix desk rooms, in thread and reply mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.dialogue.events import ExpertUttered, UserUttered
from bot.handoff.requests import Status
from bot.messages import Role
from tests.matrix.desks import (
    DESK_LABELS,
    TECHNICAL_PROBLEM,
    UNCLEAR_PROBLEM,
    DeskRooms,
    bot_message,
    body_of,
    card_of,
    desk_rooms,
    module_rooms,
    eventually,
    expert_says,
    reaction_to,
    relation_of,
    running_entraide,
    write_config,
)

__all__ = ["desk_rooms", "module_rooms"]
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def settings(tmp_path: Path, shipped_models: Path, desk_rooms: DeskRooms, monkeypatch: pytest.MonkeyPatch):
    return write_config(tmp_path, shipped_models, desk_rooms, monkeypatch)


async def test_thread_flow_from_request_to_closing(settings, desk_rooms: DeskRooms):
    rooms = desk_rooms
    sender = "enseignant-thread"
    async with running_entraide(settings) as entraide:
        reference = await entraide.ask_for_human(sender, "enseignant", TECHNICAL_PROBLEM)
        card = await card_of(rooms, "technique", reference)
        root = card["event_id"]
        request = await entraide.request_of(sender)
        assert request.posted is True
        assert request.thread_root == root
        assert TECHNICAL_PROBLEM in body_of(card)

        await expert_says(rooms, "technique", "!prendre", thread_root=root)
        await rooms.view.wait(bot_message(rooms, "technique", f"Demande {reference} prise en charge", thread_root=root), "the claim reply")
        claimed = await entraide.request_of(sender)
        assert claimed.status == Status.CLAIMED.value
        assert claimed.assignee == rooms.accounts["expert"].user_id

        answer_id = await expert_says(rooms, "technique", "Bonjour, videz le cache du navigateur puis réessayez.", thread_root=root)
        await rooms.view.wait(reaction_to(answer_id), "the ✅ on the relayed answer")
        pushed = [message for message in entraide.user_channel.messages(sender) if message.role is Role.EXPERT]
        assert pushed[-1].text == "Bonjour, videz le cache du navigateur puis réessayez."
        assert pushed[-1].label == DESK_LABELS["technique"]
        stored = await entraide.events_of(sender, ExpertUttered)
        assert stored[-1].source_id == answer_id
        assert stored[-1].request_ref == reference

        await entraide.say(sender, "C'est fait, mais la page reste blanche.")
        relayed = await rooms.view.wait(
            bot_message(rooms, "technique", "Usager : C'est fait, mais la page reste blanche.", thread_root=root), "the user's answer"
        )
        assert relation_of(relayed)["rel_type"] == "m.thread"

        await expert_says(rooms, "technique", "!clore Le compte est débloqué, vous pouvez vous reconnecter.", thread_root=root)
        await eventually(
            lambda: _last_response(entraide, sender, "utter_ask_satisfaction"), "the satisfaction question reaching the user"
        )
        resolved = await entraide.request_of(sender)
        assert resolved.status == Status.RESOLVED.value
        expert_texts = [message.text for message in entraide.user_channel.messages(sender) if message.role is Role.EXPERT]
        assert expert_texts[-1] == "Le compte est débloqué, vous pouvez vous reconnecter."

        replies = await entraide.say(sender, "4")
        closed = await entraide.request_of(sender)
        await rooms.view.wait(bot_message(rooms, "technique", "Satisfaction de l'usager : 4/5", thread_root=root), "the score notice")
        transitions = await entraide.runtime.book.transitions(closed)

    assert replies[-1].response == "utter_satisfaction_thanks"
    assert closed.status == Status.CLOSED.value
    assert closed.satisfaction == 4
    assert closed.outcome == "resolved"
    assert closed.created_at <= closed.claimed_at <= closed.resolved_at <= closed.closed_at
    assert [item.to_status for item in transitions] == ["new", "claimed", "resolved", "closed"]
    assert [item.actor for item in transitions] == ["assistant", rooms.accounts["expert"].user_id, rooms.accounts["expert"].user_id, "user"]


async def _last_response(entraide, sender: str, response: str) -> bool:
    messages = entraide.user_channel.messages(sender)
    return bool(messages) and messages[-1].response == response


async def test_reply_mode_flow(settings, desk_rooms: DeskRooms):
    rooms = desk_rooms
    sender = "parent-reply"
    async with running_entraide(settings) as entraide:
        reference = await entraide.ask_for_human(sender, "parent", TECHNICAL_PROBLEM)
        card = await card_of(rooms, "fonctionnel", reference)
        assert relation_of(card) == {}

        answer_id = await expert_says(rooms, "fonctionnel", "Depuis quel appareil vous connectez-vous ?", in_reply_to=card["event_id"])
        await rooms.view.wait(reaction_to(answer_id), "the ✅ on the answer")

        await entraide.say(sender, "Depuis mon téléphone.")
        relayed = await rooms.view.wait(bot_message(rooms, "fonctionnel", "Usager : Depuis mon téléphone."), "the user's answer")
        assert relation_of(relayed) == {"m.in_reply_to": {"event_id": answer_id}}

        second_id = await expert_says(rooms, "fonctionnel", "Installez la dernière version de l'application.", in_reply_to=relayed["event_id"])
        await rooms.view.wait(reaction_to(second_id), "the ✅ on the second answer")
        await expert_says(rooms, "fonctionnel", "!clore", in_reply_to=second_id)
        await eventually(lambda: _last_response(entraide, sender, "utter_ask_satisfaction"), "the satisfaction question")
        await entraide.say(sender, "5")
        closed = await entraide.request_of(sender)
        expert_texts = [message.text for message in entraide.user_channel.messages(sender) if message.role is Role.EXPERT]

    assert expert_texts == ["Depuis quel appareil vous connectez-vous ?", "Installez la dernière version de l'application."]
    assert closed.status == Status.CLOSED.value
    assert closed.satisfaction == 5


async def test_transfer_reaches_other_desk(settings, desk_rooms: DeskRooms):
    rooms = desk_rooms
    sender = "enseignant-transfer"
    async with running_entraide(settings) as entraide:
        reference = await entraide.ask_for_human(sender, "enseignant", TECHNICAL_PROBLEM)
        root = (await card_of(rooms, "technique", reference))["event_id"]

        await expert_says(rooms, "technique", "!transferer fonctionnel question d'usage", thread_root=root)
        new_card = await rooms.view.wait(bot_message(rooms, "fonctionnel", f"Demande {reference}"), "the card in the new desk")
        notice = await rooms.view.wait(
            bot_message(rooms, "technique", f"Demande {reference} confiée à {DESK_LABELS['fonctionnel']}", thread_root=root),
            "the notice in the old thread",
        )
        moved = await entraide.request_of(sender)

    assert moved.desk == "fonctionnel"
    assert moved.thread_root == new_card["event_id"]
    assert "question d'usage" in body_of(new_card)
    assert notice["content"]["msgtype"] == "m.notice"


async def test_escalation_climbs_levels(settings, desk_rooms: DeskRooms):
    rooms = desk_rooms
    sender = "enseignant-escalade"
    async with running_entraide(settings) as entraide:
        reference = await entraide.ask_for_human(sender, "enseignant", UNCLEAR_PROBLEM)
        root = (await card_of(rooms, "triage", reference))["event_id"]

        await expert_says(rooms, "triage", "!escalader besoin d'un technicien", thread_root=root)
        level_two = await rooms.view.wait(bot_message(rooms, "technique", f"Demande {reference}"), "the card at level 2")
        await expert_says(rooms, "technique", "!escalate anomalie du logiciel", thread_root=level_two["event_id"])
        level_three = await rooms.view.wait(bot_message(rooms, "editeur", f"Demande {reference}"), "the card at level 3")
        request = await entraide.request_of(sender)
        transitions = await entraide.runtime.book.transitions(request)

    assert request.level == 3
    assert request.desk == "editeur"
    assert "anomalie du logiciel" in body_of(level_three)
    assert [item.desk for item in transitions] == ["triage", "technique", "editeur"]


async def test_restart_loses_and_repeats_nothing(settings, desk_rooms: DeskRooms):
    rooms = desk_rooms
    sender = "enseignant-restart"
    async with running_entraide(settings) as entraide:
        reference = await entraide.ask_for_human(sender, "enseignant", TECHNICAL_PROBLEM)
        root = (await card_of(rooms, "technique", reference))["event_id"]
        first = await expert_says(rooms, "technique", "Première réponse.", thread_root=root)
        await rooms.view.wait(reaction_to(first), "the ✅ on the first answer")

    # entraide is stopped: the experts go on writing, more than one sync timeline holds.
    while_down = [await expert_says(rooms, "technique", f"Réponse {number} pendant l'arrêt.", thread_root=root) for number in (2, 3, 4)]

    async with running_entraide(settings, timeline_limit=2) as entraide:
        await rooms.view.wait(reaction_to(while_down[-1]), "the ✅ on the last answer written during the stop")
        await entraide.say(sender, "Merci, je regarde.")
        await rooms.view.wait(bot_message(rooms, "technique", "Usager : Merci, je regarde.", thread_root=root), "the user's message")
        stored = await entraide.events_of(sender, ExpertUttered)
        relayed_user = [event for event in await entraide.events_of(sender, UserUttered) if event.text == "Merci, je regarde."]

    cards = rooms.view.all(lambda room_id, source: bot_message(rooms, "technique", f"Nouvelle demande {reference}")(room_id, source))
    user_posts = rooms.view.all(lambda room_id, source: bot_message(rooms, "technique", "Usager : Merci, je regarde.")(room_id, source))
    assert [event.text for event in stored] == [
        "Première réponse.",
        "Réponse 2 pendant l'arrêt.",
        "Réponse 3 pendant l'arrêt.",
        "Réponse 4 pendant l'arrêt.",
    ]
    assert len(cards) == 1
    assert len(user_posts) == 1
    assert len(relayed_user) == 1


async def test_message_after_resolution_reopens(settings, desk_rooms: DeskRooms):
    rooms = desk_rooms
    sender = "enseignant-reopen"
    async with running_entraide(settings) as entraide:
        reference = await entraide.ask_for_human(sender, "enseignant", TECHNICAL_PROBLEM)
        root = (await card_of(rooms, "technique", reference))["event_id"]
        await expert_says(rooms, "technique", "!clore", thread_root=root)
        await eventually(lambda: _last_response(entraide, sender, "utter_ask_satisfaction"), "the satisfaction question")

        await entraide.say(sender, "en fait je n'arrive toujours pas à me connecter")
        await rooms.view.wait(bot_message(rooms, "technique", f"Demande {reference} rouverte", thread_root=root), "the reopening notice")
        relayed = await rooms.view.wait(
            bot_message(rooms, "technique", "Usager : en fait je n'arrive toujours pas", thread_root=root), "the relayed message"
        )
        reopened = await entraide.request_of(sender)

    assert reopened.status == Status.NEW.value
    assert relation_of(relayed)["event_id"] == root
