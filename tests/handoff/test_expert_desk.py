"""The expert desk against an in-memory transport: cards, relays both ways, commands, failures."""

from __future__ import annotations

import asyncio

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from bot.config import BusinessHours, RouteMatch, RouteRule
from bot.data.domain import Domain
from bot.dialogue.events import BotUttered, ExpertUttered, HandoffEnded, SlotSet, UserUttered
from bot.dialogue.tracker import Tracker
from bot.errors import HandoffError
from bot.handoff.cards import ZERO_WIDTH_JOINER
from bot.handoff.desk import HandoffContext
from bot.handoff.expert_desk import ExpertDesk
from bot.handoff.requests import RequestBook, Status
from bot.handoff.transport import ExpertMessage
from bot.storage.store import Store, utcnow
from tests.handoff.fakes import (
    EXPERT,
    FUNC_ROOM,
    TECH_ROOM,
    TRIAGE_ROOM,
    VENDOR_ROOM,
    VISITOR,
    FakeTransport,
    FakeUser,
    desk_settings,
)


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[Store]:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}")
    await store.start()
    yield store
    await store.stop()


@pytest.fixture
def transport() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
async def user(store: Store) -> FakeUser:
    return FakeUser(store)


@pytest.fixture
async def desk(store: Store, transport: FakeTransport, user: FakeUser) -> ExpertDesk:
    desk = ExpertDesk(RequestBook(store), desk_settings(), transport, store)
    desk.attach(user)
    await desk.start()
    return desk


async def open_request(desk: ExpertDesk, store: Store, expertise: str = "technique", summary: str = "Pronote refuse mon mot de passe"):
    conversation = await store.conversation("web", f"visitor-{expertise}")
    question = UserUttered(text=summary, intent="password_forgotten")
    await store.append_events(conversation.id, [question])
    tracker = Tracker(conversation.id, Domain(), [question])
    context = HandoffContext(conversation.id, "web", "enseignant", "0451234N", expertise, summary)
    ticket = await desk.open_request(context, tracker)
    request = await desk.book.get(ticket.reference)
    return ticket, request


def in_thread(request, body: str, sender: str = EXPERT, event_id: str = "$expert1") -> ExpertMessage:
    return ExpertMessage(request.room_id, event_id, sender, body, thread_root=request.thread_root, reply_to=request.thread_root)


async def test_open_request_posts_card_in_routed_room(desk, store, transport):
    ticket, request = await open_request(desk, store, expertise="fonctionnel")

    assert ticket.desk == "fonctionnel"
    assert ticket.desk_label == "Assistance fonctionnelle"
    assert request.posted is True
    assert request.room_id == FUNC_ROOM
    assert request.thread_root == transport.posts[0].event_id
    assert "Pronote refuse mon mot de passe" in transport.posts[0].text.body


async def test_card_escapes_markup_and_mentions(desk, store, transport):
    await open_request(desk, store, summary="<b>vite</b> @room aidez-moi, écrivez à jean@ecole.fr")
    card = transport.posts[0].text

    assert "<b>vite</b>" not in card.html
    assert "&lt;b&gt;vite&lt;/b&gt;" in card.html
    assert "@room" not in card.body
    assert "@" + ZERO_WIDTH_JOINER + "room" in card.body
    assert "jean@ecole.fr" in card.body


async def test_card_shows_profile_school_and_commands(desk, store, transport):
    await open_request(desk, store)
    body = transport.posts[0].text.body

    assert "Profil : enseignant" in body
    assert "Établissement : 0451234N" in body
    assert "!prendre" in body
    assert "Usager : Pronote refuse mon mot de passe" in body


async def test_closed_desk_ticket_carries_closed_message(store, transport, user):
    settings = desk_settings()
    for item in settings.handoff.desks:
        # No opening day at all: the desk is always closed.
        item.hours = BusinessHours(days=[])
    desk = ExpertDesk(RequestBook(store), settings, transport, store)
    desk.attach(user)
    await desk.start()

    ticket, _ = await open_request(desk, store)

    assert ticket.available_now is False
    assert ticket.notice.startswith("L'équipe « Référent numérique » n'a pas de permanence")


def test_closed_notice_states_configured_hours():
    from datetime import time

    from bot.config import DeskSettings
    from bot.handoff.hours import closed_notice

    weekdays = DeskSettings(name="n1", level=1, room="!r:localhost", label="Référent", hours=BusinessHours(start=time(8, 0), end=time(17, 30)))
    custom = DeskSettings(name="n1", level=1, room="!r:localhost", label="Référent", hours=BusinessHours(), closed_message="Fermé.")
    assert "du lundi au vendredi, de 8 h à 17 h 30" in closed_notice(weekdays)
    assert closed_notice(custom) == "Fermé."


async def test_unreachable_homeserver_keeps_request(desk, store, transport):
    transport.down = True
    ticket, request = await open_request(desk, store)

    assert request.posted is False
    assert "ne peut pas être joint" in ticket.notice
    assert ticket.reference in ticket.notice


async def test_flush_posts_waiting_card_and_tells_user(desk, store, transport, user):
    transport.down = True
    _, request = await open_request(desk, store)
    transport.down = False

    posted = await desk.flush_pending()
    request = await desk.book.get(request.reference)

    assert posted == 1
    assert request.posted is True
    assert request.thread_root == transport.posts[-1].event_id
    assert user.received[-1].text.startswith(f"Votre demande {request.reference} est maintenant transmise")


async def test_card_posted_once_during_flush(desk, store, transport, monkeypatch):
    posting = transport.post
    in_flight = asyncio.Event()
    release = asyncio.Event()

    async def held_post(room_id, message, anchor=None):
        if not in_flight.is_set():
            # The turn's post waits here while a sync calls flush_pending.
            in_flight.set()
            await release.wait()
        return await posting(room_id, message, anchor)

    monkeypatch.setattr(transport, "post", held_post)
    turn = asyncio.ensure_future(open_request(desk, store))
    await in_flight.wait()
    await desk.flush_pending()
    release.set()
    _, request = await turn
    await desk.flush_pending()

    cards = [post for post in transport.posts if post.text.body.startswith("Nouvelle demande")]
    assert len(cards) == 1
    assert request.thread_root == cards[0].event_id


async def test_user_message_goes_into_thread(desk, store, transport):
    _, request = await open_request(desk, store)

    await desk.relay_from_user(request.conversation_id, "J'ai essayé @room", 7)
    post = transport.posts[-1]

    assert post.room_id == TRIAGE_ROOM
    assert post.anchor.thread_root == request.thread_root
    assert post.text.body == "Usager : J'ai essayé @" + ZERO_WIDTH_JOINER + "room"
    assert (await desk.book.by_event(post.event_id))[1].conversation_seq == 7


async def test_reply_mode_answers_latest_event(desk, store, transport):
    _, request = await open_request(desk, store, expertise="fonctionnel")
    await desk.relay_from_user(request.conversation_id, "premier", 5)
    first = transport.posts[-1]

    await desk.relay_from_user(request.conversation_id, "second", 6)
    second = transport.posts[-1]

    assert first.anchor.thread_root is None
    assert first.anchor.reply_to == request.thread_root
    assert second.anchor.reply_to == first.event_id


async def test_failed_user_message_is_relayed_later(desk, store, transport):
    _, request = await open_request(desk, store)
    message = UserUttered(text="toujours bloqué", intent="relayed_to_desk")
    (seq,) = await store.append_events(request.conversation_id, [message])
    transport.down = True
    await desk.relay_from_user(request.conversation_id, message.text, seq)
    transport.down = False

    await desk.flush_pending()

    assert transport.posts[-1].text.body == "Usager : toujours bloqué"


async def test_expert_reply_reaches_user(desk, store, transport, user):
    _, request = await open_request(desk, store)

    await desk.handle_expert_message(in_thread(request, "Bonjour, videz le cache."))
    relayed = user.of_type(ExpertUttered)[-1]

    assert relayed.text == "Bonjour, videz le cache."
    assert relayed.label == "Référent numérique"
    assert relayed.source_id == "$expert1"
    assert transport.reactions[-1] == (TRIAGE_ROOM, "$expert1", "✅")


async def test_first_reply_claims_request(desk, store):
    _, request = await open_request(desk, store)

    await desk.handle_expert_message(in_thread(request, "Je regarde."))
    request = await desk.book.get(request.reference)

    assert request.status == Status.CLAIMED.value
    assert request.assignee == EXPERT


async def test_expert_names_shown_when_desk_allows(store, transport, user):
    settings = desk_settings()
    settings.handoff.desks[0].show_expert_names = True
    desk = ExpertDesk(RequestBook(store), settings, transport, store)
    desk.attach(user)
    await desk.start()
    _, request = await open_request(desk, store)

    await desk.handle_expert_message(in_thread(request, "Bonjour"))

    assert user.of_type(ExpertUttered)[-1].label == "Marie Curie (Référent numérique)"


async def test_correction_relayed_with_prefix(desk, store, user):
    _, request = await open_request(desk, store)
    await desk.handle_expert_message(in_thread(request, "Redémarrez la box."))

    edit = ExpertMessage(request.room_id, "$edit1", EXPERT, "Redémarrez le navigateur.", replaces="$expert1")
    await desk.handle_expert_message(edit)
    correction = user.of_type(ExpertUttered)[-1]

    assert correction.text == "Correction : Redémarrez le navigateur."
    assert correction.correction_of == "$expert1"


async def test_claim_records_assignee_and_tells_user(desk, store, user):
    _, request = await open_request(desk, store)

    await desk.handle_expert_message(in_thread(request, "!prendre"))
    request = await desk.book.get(request.reference)

    assert request.status == Status.CLAIMED.value
    assert request.claimed_at is not None
    assert user.received[-1].text == f"Votre demande {request.reference} est prise en charge par Référent numérique."


async def test_english_alias_claims(desk, store):
    _, request = await open_request(desk, store)

    await desk.handle_expert_message(in_thread(request, "!claim"))

    assert (await desk.book.get(request.reference)).status == Status.CLAIMED.value


async def test_unauthorised_command_changes_nothing(desk, store, transport, user):
    _, request = await open_request(desk, store)

    await desk.handle_expert_message(in_thread(request, "!prendre", sender=VISITOR))

    assert (await desk.book.get(request.reference)).status == Status.NEW.value
    assert "pas les droits" in transport.posts[-1].text.body
    assert user.events == []


async def test_close_asks_satisfaction(desk, store, user):
    _, request = await open_request(desk, store)
    await desk.handle_expert_message(in_thread(request, "!prendre"))

    await desk.handle_expert_message(in_thread(request, "!clore Le lien est rétabli.", event_id="$close"))
    request = await desk.book.get(request.reference)

    assert request.status == Status.RESOLVED.value
    assert request.outcome == "resolved"
    assert user.of_type(ExpertUttered)[-1].text == "Le lien est rétabli."
    assert user.of_type(HandoffEnded)[-1].reason == "resolved"
    assert user.of_type(SlotSet)[-1].name == "awaiting_satisfaction"
    assert user.received[-1].response == "utter_ask_satisfaction"


async def test_satisfaction_closes_request(desk, store, transport):
    _, request = await open_request(desk, store)
    await desk.handle_expert_message(in_thread(request, "!clore"))

    await desk.satisfaction(request.conversation_id, 4)
    request = await desk.book.get(request.reference)

    assert request.status == Status.CLOSED.value
    assert request.satisfaction == 4
    assert request.closed_at is not None
    assert "4/5" in transport.posts[-1].text.body


async def test_transfer_unknown_desk_lists_desks(desk, store, transport):
    _, request = await open_request(desk, store)

    await desk.handle_expert_message(in_thread(request, "!transferer compta"))
    reply = transport.posts[-1].text.body

    assert "Guichet inconnu : « compta »" in reply
    assert "technique : Assistance technique (niveau 2)" in reply
    assert (await desk.book.get(request.reference)).desk == "triage"


async def test_transfer_moves_request_to_other_room(desk, store, transport, user):
    _, request = await open_request(desk, store, expertise="fonctionnel")

    await desk.handle_expert_message(in_thread(request, "!transferer technique souci de connexion"))
    moved = await desk.book.get(request.reference)
    card = transport.in_room(TECH_ROOM)[0]

    assert moved.desk == "technique"
    assert moved.status == Status.NEW.value
    assert moved.thread_root == card.event_id
    assert "souci de connexion" in card.text.body
    assert "confiée à Assistance technique" in transport.in_room(FUNC_ROOM)[-1].text.body
    assert user.received[-1].text.startswith(f"Votre demande {request.reference} est confiée à Assistance technique")


async def test_transfer_to_other_level_refused(desk, store, transport):
    _, request = await open_request(desk, store)

    await desk.handle_expert_message(in_thread(request, "!transferer technique"))

    assert (await desk.book.get(request.reference)).desk == "triage"
    assert "!escalader" in transport.posts[-1].text.body


async def test_escalation_follows_routing(desk, store, transport):
    _, request = await open_request(desk, store)

    await desk.handle_expert_message(in_thread(request, "!escalader le mot de passe est bloqué côté serveur"))
    moved = await desk.book.get(request.reference)

    assert moved.desk == "technique"
    assert moved.level == 2
    assert "le mot de passe est bloqué côté serveur" in transport.in_room(TECH_ROOM)[0].text.body


async def test_escalation_to_named_desk(desk, store):
    _, request = await open_request(desk, store)

    await desk.handle_expert_message(in_thread(request, "!escalate editeur anomalie"))
    moved = await desk.book.get(request.reference)

    assert moved.desk == "editeur"
    assert moved.room_id == VENDOR_ROOM


async def test_escalation_at_top_level_refused(desk, store, transport):
    _, request = await open_request(desk, store)
    await desk.handle_expert_message(in_thread(request, "!escalader editeur"))
    moved = await desk.book.get(request.reference)

    await desk.handle_expert_message(in_thread(moved, "!escalader", event_id="$again"))

    assert (await desk.book.get(request.reference)).desk == "editeur"
    assert "Aucun guichet au-dessus du niveau 3" in transport.posts[-1].text.body


async def test_message_in_old_thread_after_transfer(desk, store, transport, user):
    _, request = await open_request(desk, store, expertise="fonctionnel")
    await desk.handle_expert_message(in_thread(request, "!transferer technique"))
    delivered = len(user.events)

    await desk.handle_expert_message(in_thread(request, "encore une précision", event_id="$late"))

    assert len(user.events) == delivered
    assert "a été confiée à Assistance technique" in transport.posts[-1].text.body


async def test_note_is_stored_not_relayed(desk, store, transport, user):
    _, request = await open_request(desk, store)

    await desk.handle_expert_message(in_thread(request, "!note compte bloqué par l'académie"))
    transitions = await desk.book.transitions(request)

    assert transitions[-1].note == "compte bloqué par l'académie"
    assert user.events == []
    assert transport.reactions[-1][2] == "📝"


async def test_unknown_reference_reported(desk, store, transport):
    await open_request(desk, store)
    message = ExpertMessage(TRIAGE_ROOM, "$top", EXPERT, "!info ENT-2026-99999")

    await desk.handle_expert_message(message)

    assert "Aucune demande ne porte la référence ENT-2026-99999" in transport.posts[-1].text.body


async def test_info_by_reference_outside_thread(desk, store, transport):
    _, request = await open_request(desk, store)

    await desk.handle_expert_message(ExpertMessage(TRIAGE_ROOM, "$top", EXPERT, f"!info {request.reference}"))

    assert f"Demande : {request.reference}" in transport.posts[-1].text.body
    assert "État : nouvelle" in transport.posts[-1].text.body


async def test_unknown_command_gets_help(desk, store, transport):
    _, request = await open_request(desk, store)

    await desk.handle_expert_message(in_thread(request, "!supprimer"))

    assert transport.posts[-1].text.body.startswith("Commande inconnue : !supprimer.")
    assert "!transferer <guichet>" in transport.posts[-1].text.body


async def test_message_outside_desk_rooms_ignored(desk, store, transport, user):
    _, request = await open_request(desk, store)
    posts = len(transport.posts)

    await desk.handle_expert_message(ExpertMessage("!ailleurs:test", "$x", EXPERT, "!prendre", thread_root=request.thread_root))

    assert len(transport.posts) == posts
    assert (await desk.book.get(request.reference)).status == Status.NEW.value


async def test_reopen_within_delay(desk, store, transport):
    _, request = await open_request(desk, store)
    await desk.handle_expert_message(in_thread(request, "!clore"))

    reopened = await desk.maybe_reopen(request.conversation_id, "password_forgotten")

    assert reopened is True
    assert (await desk.book.get(request.reference)).status == Status.NEW.value
    assert "rouverte" in transport.posts[-1].text.body


async def test_no_reopen_after_delay(desk, store):
    _, request = await open_request(desk, store)
    await desk.handle_expert_message(in_thread(request, "!clore"))
    await desk.book.update(request, resolved_at=utcnow() - timedelta(hours=73))

    assert await desk.maybe_reopen(request.conversation_id, "password_forgotten") is False


async def test_user_left_closes_request(desk, store, transport):
    _, request = await open_request(desk, store)

    await desk.user_left(request.conversation_id, "user asked to go back to the assistant")
    request = await desk.book.get(request.reference)

    assert request.status == Status.CLOSED.value
    assert request.outcome == "user_left"
    assert "revenu à l'assistant" in transport.posts[-1].text.body


async def test_start_names_unjoinable_room(store, user):
    transport = FakeTransport(unjoinable={TECH_ROOM})
    desk = ExpertDesk(RequestBook(store), desk_settings(), transport, store)

    with pytest.raises(HandoffError, match=r"desk 'technique': cannot join room !technique:test"):
        await desk.start()


async def test_bot_messages_in_transcript(desk, store, transport):
    conversation = await store.conversation("web", "visitor-transcript")
    events = [UserUttered(text="bonjour", intent="greet"), BotUttered(text="Bonjour ! Que puis-je faire ?")]
    await store.append_events(conversation.id, events)
    context = HandoffContext(conversation.id, "web", None, None, "triage", "")

    await desk.open_request(context, Tracker(conversation.id, Domain(), events))

    assert "Assistant : Bonjour ! Que puis-je faire ?" in transport.posts[-1].text.body


async def test_file_posted_when_desk_allows(store, transport, user):
    settings = desk_settings()
    settings.handoff.desks[0].allow_attachments = True
    desk = ExpertDesk(RequestBook(store), settings, transport, store)
    desk.attach(user)
    await desk.start()
    _, request = await open_request(desk, store)

    accepted = await desk.relay_attachment(request.conversation_id, "@room capture.png", "image/png", b"\x89PNG", 9)
    room_id, filename, _, data, anchor, _ = transport.files[-1]

    assert accepted is True
    assert room_id == TRIAGE_ROOM
    assert filename == "@" + ZERO_WIDTH_JOINER + "room capture.png"
    assert data == b"\x89PNG"
    assert anchor.thread_root == request.thread_root


async def test_file_rejected_by_default(desk, store, transport):
    _, request = await open_request(desk, store)

    accepted = await desk.relay_attachment(request.conversation_id, "capture.png", "image/png", b"\x89PNG", 9)

    assert accepted is False
    assert transport.files == []


async def test_reply_to_command_reaches_request(desk, store, user):
    _, request = await open_request(desk, store, expertise="fonctionnel")
    await desk.handle_expert_message(ExpertMessage(FUNC_ROOM, "$claim", EXPERT, "!prendre", reply_to=request.thread_root))

    await desk.handle_expert_message(ExpertMessage(FUNC_ROOM, "$answer", EXPERT, "Bonjour !", reply_to="$claim"))

    assert user.of_type(ExpertUttered)[-1].text == "Bonjour !"


async def test_flush_skips_message_still_in_flight(desk, store, transport):
    _, request = await open_request(desk, store)
    message = UserUttered(text="message en cours de relais", intent="relayed_to_desk")
    await store.append_events(request.conversation_id, [message])
    posts = len(transport.posts)

    await desk.flush_pending()

    assert len(transport.posts) == posts


async def test_flush_relays_message_stored_before_start(store, transport, user):
    first = ExpertDesk(RequestBook(store), desk_settings(), transport, store)
    first.attach(user)
    await first.start()
    _, request = await open_request(first, store)
    # Stored, then the process stopped before relay_from_user ran.
    await store.append_events(request.conversation_id, [UserUttered(text="perdu pendant l'arrêt", intent="relayed_to_desk")])
    restarted = ExpertDesk(RequestBook(store), desk_settings(), transport, store)
    restarted.attach(user)
    await restarted.start()

    await restarted.flush_pending()

    assert transport.posts[-1].text.body == "Usager : perdu pendant l'arrêt"


async def test_request_keeps_routing_slots(desk, store):
    conversation = await store.conversation("web", "visitor-slots")
    question = UserUttered(text="page blanche au collège", intent="technical_error")
    await store.append_events(conversation.id, [question])
    tracker = Tracker(conversation.id, Domain(), [question])
    slots = {"fault_origin": "infrastructure", "place": "etablissement", "description": "un long texte libre", "school": "0451234N"}
    context = HandoffContext(conversation.id, "web", "enseignant", "0451234N", "technique", "page blanche", slots)

    ticket = await desk.open_request(context, tracker)
    request = await desk.book.get(ticket.reference)

    assert request.details["slots"]["fault_origin"] == "infrastructure"
    assert request.details["slots"]["place"] == "etablissement"
    assert "description" not in request.details["slots"]


async def test_escalation_routes_on_stored_slots(store, transport, user):
    settings = desk_settings()
    settings.handoff.routing.insert(0, RouteRule(match=RouteMatch(slots={"fault_origin": "infrastructure"}, level=[2]), desk="fonctionnel"))
    desk = ExpertDesk(RequestBook(store), settings, transport, store)
    desk.attach(user)
    await desk.start()
    conversation = await store.conversation("web", "visitor-network")
    question = UserUttered(text="rien ne charge au collège", intent="technical_error")
    await store.append_events(conversation.id, [question])
    tracker = Tracker(conversation.id, Domain(), [question])
    context = HandoffContext(conversation.id, "web", "enseignant", "0451234N", "technique", "rien ne charge", {"fault_origin": "infrastructure"})
    ticket = await desk.open_request(context, tracker)
    request = await desk.book.get(ticket.reference)

    await desk.handle_expert_message(in_thread(request, "!escalader"))
    moved = await desk.book.get(request.reference)

    assert moved.desk == "fonctionnel"
