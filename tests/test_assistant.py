"""The assistant end to end on the shipped data: ordering, de-duplication, sessions, bad input."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from bot.dialogue.events import UserUttered
from bot.messages import Identity, IncomingMessage
from bot.outbox import CollectingOutput
from bot.runtime import Runtime
from bot.storage.tables import Request
from tests.conftest import ROOT


@pytest.fixture
async def runtime(shipped_settings):
    async with Runtime(shipped_settings, seed=0) as runtime:
        runtime.outbox.register(CollectingOutput("test"))
        yield runtime


def message(text: str, sender: str = "user-1", message_id: str | None = None, **extra) -> IncomingMessage:
    return IncomingMessage(channel="test", sender_id=sender, text=text, message_id=message_id, **extra)


def answers(replies) -> list[str | None]:
    """Return the response names of the replies, without the privacy notice of a first contact."""
    return [reply.response for reply in replies if reply.response != "utter_privacy"]


async def user_events(runtime, sender: str = "user-1") -> list[UserUttered]:
    conversation = await runtime.store.conversation("test", sender)
    return [item.event for item in await runtime.store.events(conversation.id) if isinstance(item.event, UserUttered)]


async def test_question_gets_answer(runtime):
    replies = await runtime.assistant.handle(message("j'ai oublié mon mot de passe"))
    responses = answers(replies)
    assert responses[0] == "utter_password_forgotten"
    assert responses[-1] == "utter_ask_helped"


async def test_concurrent_messages_handled_in_order(runtime):
    texts = [f"message numéro {index}" for index in range(50)]
    await asyncio.gather(*(runtime.assistant.handle(message(text, message_id=f"m{index}")) for index, text in enumerate(texts)))
    stored = [event.text for event in await user_events(runtime)]
    assert stored == texts


async def test_concurrent_conversations_do_not_mix(runtime):
    await asyncio.gather(*(runtime.assistant.handle(message("bonjour", sender=f"user-{index}")) for index in range(10)))
    counts = [len(await user_events(runtime, f"user-{index}")) for index in range(10)]
    assert counts == [1] * 10


async def test_same_message_id_handled_once(runtime):
    first = await runtime.assistant.handle(message("bonjour", message_id="dup-1"))
    second = await runtime.assistant.handle(message("bonjour", message_id="dup-1"))
    assert len(first) > 0
    assert second == []
    assert len(await user_events(runtime)) == 1


async def test_restart_mid_form_resumes_form(shipped_settings):
    async with Runtime(shipped_settings, seed=0) as runtime:
        runtime.outbox.register(CollectingOutput("test"))
        await runtime.assistant.handle(message("je veux parler à un humain"))
        tracker = await runtime.assistant.tracker((await runtime.store.conversation("test", "user-1")).id)
        assert tracker.active_loop == "handoff_form"
    async with Runtime(shipped_settings, seed=0) as runtime:
        runtime.outbox.register(CollectingOutput("test"))
        replies = await runtime.assistant.handle(message("je suis parent"))
        tracker = await runtime.assistant.tracker((await runtime.store.conversation("test", "user-1")).id)
    assert tracker.slots["profile"] == "parent"
    assert tracker.active_loop == "handoff_form"
    assert replies[-1].response == "utter_ask_school"


async def test_empty_message_gets_polite_reply(runtime):
    replies = await runtime.assistant.handle(message("   "))
    assert answers(replies) == ["utter_empty"]


async def test_huge_message_kept_and_answered(runtime):
    text = "a" * 100_000
    replies = await runtime.assistant.handle(message(text))
    stored = await user_events(runtime)
    assert answers(replies) == ["utter_too_long"]
    assert len(stored[0].text) == 100_000


async def test_control_characters_removed(runtime):
    replies = await runtime.assistant.handle(message("mot\x00 de\x07 passe\x1b oublié"))
    stored = await user_events(runtime)
    assert "\x00" not in stored[0].text
    assert "\x1b" not in stored[0].text
    assert answers(replies)[0] == "utter_password_forgotten"


async def test_invalid_utf8_from_connector(runtime):
    # A connector decoding bytes with surrogateescape hands over lone surrogates.
    text = b"mot de passe oubli\xe9".decode("utf-8", "surrogateescape")
    replies = await runtime.assistant.handle(message(text))
    stored = await user_events(runtime)
    assert stored[0].text.encode("utf-8")
    assert len(replies) > 0


async def test_identity_fills_profile_and_school(runtime):
    identity = Identity(profile="enseignant", school="0751234A", name="Camille", subject="u-1")
    await runtime.assistant.handle(message("je veux parler à un conseiller", identity=identity))
    tracker = await runtime.assistant.tracker((await runtime.store.conversation("test", "user-1")).id)
    assert tracker.slots["profile"] == "enseignant"
    assert tracker.slots["school"] == "0751234A"
    assert tracker.requested_slot == "description"


async def test_handoff_creates_request(runtime):
    for text in ["je veux parler à un humain", "je suis parent", "0751234A", "je ne reçois plus les mails de l'ENT"]:
        replies = await runtime.assistant.handle(message(text))
    async with runtime.store.session() as session:
        request = await session.scalar(select(Request))
    assert request.profile == "parent"
    assert request.school == "0751234A"
    assert request.summary == "je ne reçois plus les mails de l'ENT"
    assert request.reference in replies[0].text


async def test_failed_request_keeps_message(runtime, monkeypatch):
    from bot.errors import HandoffError

    async def fail(*args, **kwargs):
        raise HandoffError("could not allocate a request reference after 10 attempts")

    monkeypatch.setattr(runtime.book, "create", fail)
    for text in ["je veux parler à un humain", "je suis parent", "0751234A", "je ne reçois plus les mails de l'ENT"]:
        replies = await runtime.assistant.handle(message(text))

    assert answers(replies) == ["utter_handoff_failed"]
    assert "Réessayez" in replies[-1].text
    assert (await user_events(runtime))[-1].text == "je ne reçois plus les mails de l'ENT"
    conversation = await runtime.store.conversation("test", "user-1")
    assert conversation.status == "active"


async def test_recorded_request_keeps_assistant(runtime):
    # Without expert desks the request is only recorded, so the assistant goes on replying.
    for text in ["je veux parler à un humain", "je suis parent", "0751234A", "problème de connexion à Pronote"]:
        replies = await runtime.assistant.handle(message(text))
    after = await runtime.assistant.handle(message("bonjour"))
    conversation = await runtime.store.conversation("test", "user-1")
    assert replies[0].response == "utter_handoff_recorded"
    assert after[0].response == "utter_greet"
    assert conversation.status == "active"


async def test_session_expiry_starts_new_session(runtime, monkeypatch):
    from datetime import timedelta

    import bot.assistant
    from bot.storage.store import utcnow

    await runtime.assistant.handle(message("bonjour"))
    conversation = await runtime.store.conversation("test", "user-1")
    # The next message arrives five hours later, after the session expired.
    monkeypatch.setattr(bot.assistant, "utcnow", lambda: utcnow() + timedelta(hours=5))
    await runtime.assistant.handle(message("bonjour"))
    types = [item.event.kind for item in await runtime.store.events(conversation.id)]
    assert types.count("session_started") == 2


async def test_scripted_shell_follows_stories(tmp_path, shipped_models):
    lines = [
        "bonjour",
        "j'ai oublié mon mot de passe",
        "non ça ne marche toujours pas",
        "oui",
        "je suis parent",
        "0751234A",
        "le lien de réinitialisation ne marche pas",
    ]
    database = tmp_path / "shell.db"
    config = tmp_path / "config.yml"
    text = (ROOT / "config.yml").read_text(encoding="utf-8")
    config.write_text(text.replace("models: models", f"models: {shipped_models}").replace("nlu: nlu", f"nlu: {ROOT / 'nlu'}")
                      .replace("stories: stories", f"stories: {ROOT / 'stories'}").replace("domain: domain.yml", f"domain: {ROOT / 'domain.yml'}"), encoding="utf-8")
    environment = {**os.environ, "ENTRAIDE_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "shell", "--config", str(config)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Bonjour" in result.stdout
    assert "Mot de passe oublié" in result.stdout
    assert "transmettre votre question" in result.stdout
    assert "Votre demande est enregistrée sous le numéro ENT-" in result.stdout
    import sqlite3

    with sqlite3.connect(database) as connection:
        count = connection.execute("SELECT count(*) FROM requests").fetchone()[0]
    assert count == 1


async def test_password_masked_before_storage(runtime):
    replies = await runtime.assistant.handle(message("mon mot de passe c'est Soleil2012 et il est refusé"))
    stored = await user_events(runtime)
    assert "Soleil2012" not in stored[0].text
    assert "Soleil2012" not in str(stored[0].parse_data)
    assert "utter_password_masked" in [reply.response for reply in replies]


async def test_privacy_notice_at_first_contact(runtime):
    first = await runtime.assistant.handle(message("j'ai oublié mon mot de passe"))
    second = await runtime.assistant.handle(message("j'ai oublié mon identifiant"))
    assert first[0].response == "utter_privacy"
    assert "utter_privacy" not in [reply.response for reply in second]


async def test_form_rejects_invalid_school(runtime):
    await runtime.assistant.handle(message("je veux parler à un humain"))
    await runtime.assistant.handle(message("je suis parent"))
    replies = await runtime.assistant.handle(message("12345"))
    responses = [reply.response for reply in replies]
    assert responses == ["utter_invalid_school", "utter_ask_school"]


async def test_form_no_in_school_question_stays_in_form(runtime):
    await runtime.assistant.handle(message("je veux parler à un humain"))
    await runtime.assistant.handle(message("je suis parent"))
    replies = await runtime.assistant.handle(message("non"))
    responses = [reply.response for reply in replies]
    assert "utter_offer_expert" not in responses
    assert responses[-1] == "utter_ask_school"


async def test_form_accepts_unknown_school(runtime):
    await runtime.assistant.handle(message("je veux parler à un humain"))
    await runtime.assistant.handle(message("je suis parent"))
    replies = await runtime.assistant.handle(message("Je ne connais pas le code", payload='/inform_school{"school": "inconnu"}'))
    assert replies[-1].response == "utter_ask_description"


async def test_form_rejects_short_description(runtime):
    for text in ["je veux parler à un humain", "je suis parent", "0751234A"]:
        await runtime.assistant.handle(message(text))
    replies = await runtime.assistant.handle(message("ok"))
    responses = [reply.response for reply in replies]
    assert responses[-1] == "utter_ask_description"
    assert "utter_handoff_recorded" not in responses


async def test_failed_turn_can_be_retried(runtime, monkeypatch):
    original = runtime.store.record_turn

    async def failing(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(runtime.store, "record_turn", failing)
    with pytest.raises(OSError):
        await runtime.assistant.handle(message("bonjour", message_id="retry-1"))
    monkeypatch.setattr(runtime.store, "record_turn", original)
    replies = await runtime.assistant.handle(message("bonjour", message_id="retry-1"))
    assert len(replies) > 0
    assert len(await user_events(runtime)) == 1


async def test_turn_finishes_when_its_caller_is_cancelled(runtime):
    caller = asyncio.ensure_future(runtime.assistant.handle(message("j'ai oublié mon mot de passe", message_id="gone-1")))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await runtime.assistant.drain()
    conversation = await runtime.store.conversation("test", "user-1")
    kinds = [item.event.kind for item in await runtime.store.events(conversation.id)]
    assert "user" in kinds
    assert "bot" in kinds
    # The stored message id stops a retry from handling it twice, and the next message is served.
    assert await runtime.assistant.handle(message("j'ai oublié mon mot de passe", message_id="gone-1")) == []
    assert answers(await runtime.assistant.handle(message("merci", message_id="gone-2")))


async def test_two_workers_continue_each_others_form(shipped_settings):
    """Two assistants on one database, as two workers: each reads what the other wrote."""
    async with Runtime(shipped_settings, seed=0) as first, Runtime(shipped_settings, seed=0) as second:
        for runtime in (first, second):
            runtime.outbox.register(CollectingOutput("test"))
        await first.assistant.handle(message("je veux parler à un humain"))
        replies = await second.assistant.handle(message("je suis parent"))
        assert replies[-1].response == "utter_ask_school"
        # The first worker's memory has the conversation as it was before the second worker's turn.
        replies = await first.assistant.handle(message("Je ne connais pas le code", payload='/inform_school{"school": "inconnu"}'))
        tracker = await first.assistant.tracker((await first.store.conversation("test", "user-1")).id)
    assert tracker.slots["profile"] == "parent"
    assert tracker.slots["school"] == "inconnu"
    assert replies[-1].response == "utter_ask_description"


@pytest.mark.parametrize("text", ["je ne connais pas le code", "Je sais pas", "aucune idée"])
async def test_typed_unknown_school_continues_form(runtime, text):
    await runtime.assistant.handle(message("je veux parler à un humain"))
    await runtime.assistant.handle(message("je suis parent"))
    replies = await runtime.assistant.handle(message(text))
    tracker = await runtime.assistant.tracker((await runtime.store.conversation("test", "user-1")).id)
    assert tracker.slots["school"] == "inconnu"
    assert replies[-1].response == "utter_ask_description"


async def test_unknown_school_ignored_outside_form(runtime):
    await runtime.assistant.handle(message("je ne sais pas comment activer mon compte"))
    tracker = await runtime.assistant.tracker((await runtime.store.conversation("test", "user-1")).id)
    assert tracker.slots["school"] is None


async def test_question_inside_form_resumes_form(runtime):
    await runtime.assistant.handle(message("je veux parler à un humain"))
    await runtime.assistant.handle(message("je suis parent"))
    replies = await runtime.assistant.handle(message("j'ai oublié mon mot de passe"))
    responses = answers(replies)
    assert responses[0] == "utter_password_forgotten"
    assert "utter_ask_helped" not in responses
    assert responses[-1] == "utter_ask_school"
    # The next message answers the form's question.
    replies = await runtime.assistant.handle(message("je ne connais pas le code"))
    assert replies[-1].response == "utter_ask_description"
