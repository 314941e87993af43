"""Run the Telegram connector with a real assistant against the local Bot API server.

Most tests run twice: once polling, once in webhook mode behind entraide's own aiohttp server.
"""

from __future__ import annotations

import dataclasses

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from telegram import Bot

from bot.config import Settings, TelegramSettings, load_settings
from bot.data.project import load_project
from bot.data.domain import Button
from bot.dialogue.events import BotUttered, ExpertUttered
from bot.errors import ConnectorError
from bot.handoff.recording import RecordingDesk
from bot.messages import OutgoingMessage, Role
from bot.runtime import Runtime, load_or_train
from bot.server import build_app
from connectors.telegram import WEBHOOK_PATH, TelegramConnector, render_html, split_text
from connectors.telegram.outbound import utf16_length
from tests.support.fake_bot_api import LOOPBACK, FakeBotApi, RecordedCall

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "entraide-telegram-test-secret"
MODES = ["polling", "webhook"]
PARENT = '/inform_profile{"profile": "parent"}'


# ----- fixtures -----


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the NLU model of the shipped data once per session, into a temporary folder."""
    models = tmp_path_factory.mktemp("models")
    settings = load_settings(ROOT / "config.yml")
    settings.data.models = models
    load_or_train(settings, load_project(settings))
    return models


@pytest.fixture
def settings(tmp_path: Path, trained_models: Path) -> Settings:
    settings = load_settings(ROOT / "config.yml")
    settings.data.models = trained_models
    settings.storage.url = f"sqlite+aiosqlite:///{tmp_path / 'entraide.db'}"
    return settings


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    async with Runtime(settings) as running:
        yield running


def telegram_settings(fake: FakeBotApi, mode: str, port: int, **overrides: object) -> TelegramSettings:
    values: dict[str, object] = {
        "enabled": True,
        "token": fake.token,
        "base_url": fake.base_url,
        "base_file_url": fake.base_file_url,
        "mode": mode,
        "webhook_url": f"http://{LOOPBACK}:{port}{WEBHOOK_PATH}",
        "webhook_secret": WEBHOOK_SECRET,
        "poll_timeout": 5,
        **overrides,
    }
    return TelegramSettings(**values)


class Harness:
    """One TelegramConnector on a runtime: polling, or served by build_app on 127.0.0.1."""

    def __init__(self, fake: FakeBotApi, runtime: Runtime, mode: str, port: int, **overrides: object) -> None:
        self.fake = fake
        self.runtime = runtime
        self.mode = mode
        self.port = port
        self.settings = telegram_settings(fake, mode, port, **overrides)
        self.connector: TelegramConnector | None = None
        self._runner: web.AppRunner | None = None

    @property
    def webhook_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{WEBHOOK_PATH}"

    async def start(self) -> TelegramConnector:
        self.connector = TelegramConnector(self.settings, self.runtime.assistant, self.runtime.store)
        if self.mode == "polling":
            self.runtime.outbox.register(self.connector)
            await self.connector.start()
            return self.connector
        app = build_app(self.runtime, [self.connector])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()
        return self.connector

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        elif self.connector is not None:
            await self.connector.stop()
        self.runtime.outbox.unregister("telegram")

    async def settled(self, update_id: int, timeout: float = 5.0) -> None:
        """Wait until the connector has handled ``update_id``."""
        if self.mode == "polling":
            # The next poll confirms the update, because its offset is the id after it.
            await self.fake.wait_for(
                "getUpdates", lambda call: (call.params.get("offset") or 0) > update_id, answered=False, timeout=timeout
            )
            return
        deadline = asyncio.get_running_loop().time() + timeout
        while not any(d.update_id == update_id and d.status == 200 for d in self.fake.deliveries):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"update {update_id} was not delivered with status 200 within {timeout} s")
            await asyncio.sleep(0.02)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi() as started:
        yield started


@pytest.fixture(params=MODES)
async def harness(request: pytest.FixtureRequest, fake: FakeBotApi, runtime: Runtime, webhook_port: int) -> AsyncIterator[Harness]:
    running = Harness(fake, runtime, request.param, webhook_port)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def polling(fake: FakeBotApi, runtime: Runtime, webhook_port: int) -> AsyncIterator[Harness]:
    running = Harness(fake, runtime, "polling", webhook_port)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


# ----- helpers -----


def sent_texts(fake: FakeBotApi, start: int, chat_id: int | None = None) -> list[str]:
    """Return the texts of the successful sendMessage calls since ``start``."""
    return [
        call.params["text"]
        for call in fake.calls[start:]
        if call.method == "sendMessage" and call.ok and (chat_id is None or call.params["chat_id"] == chat_id)
    ]


def containing(fragment: str) -> Callable[[RecordedCall], bool]:
    return lambda call: fragment in call.params.get("text", "")


async def conversation_id(runtime: Runtime, sender_id: str) -> str:
    conversation = await runtime.store.conversation("telegram", sender_id, create=False)
    assert conversation is not None, f"no telegram conversation for {sender_id}"
    return conversation.id


async def greet(fake: FakeBotApi, user: dict) -> None:
    """Say hello, and wait for the greeting and the privacy notice that follows it."""
    start = fake.mark()
    await fake.inject_text("Bonjour", user=user)
    await fake.wait_for("sendMessage", containing("Bon à savoir"), start)


async def ask_for_human(fake: FakeBotApi, user: dict) -> RecordedCall:
    """Go through the handoff form as a parent; return the message that announces the request."""
    start = fake.mark()
    await fake.inject_text("Je voudrais parler à une personne", user=user)
    question = await fake.wait_for("sendMessage", containing("Vous êtes"), start)
    await fake.inject_callback_query(question.result, PARENT, user=user)
    await fake.wait_for("sendMessage", containing("code UAI"), start)
    await fake.inject_text("0751234A", user=user)
    await fake.wait_for("sendMessage", containing("Décrivez votre problème"), start)
    await fake.inject_text("Je ne reçois pas le SMS pour activer mon compte EduConnect.", user=user)
    return await fake.wait_for("sendMessage", containing("numéro de demande"), start)


class RelayingDesk(RecordingDesk):
    """A recording desk that keeps the conversation with the experts, as a desk with rooms does."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime.book, runtime.settings)

    async def open_request(self, context, tracker):
        ticket = await super().open_request(context, tracker)
        await self.book.store.update_conversation(context.conversation_id, status="handoff")
        return dataclasses.replace(ticket, relays=True)


@pytest.fixture
def relaying_desk(runtime: Runtime) -> RelayingDesk:
    desk = RelayingDesk(runtime)
    runtime.assistant.desk = desk
    return desk


class FileTakingDesk(RelayingDesk):
    """A relaying desk that accepts or refuses files, and keeps those it was offered."""

    def __init__(self, runtime: Runtime, accept: bool) -> None:
        super().__init__(runtime)
        self.accept = accept
        self.files: list[tuple[str, str, str, bytes]] = []

    async def relay_attachment(self, conversation_id: str, filename: str, content_type: str, data: bytes, seq: int) -> bool:
        self.files.append((conversation_id, filename, content_type, data))
        return self.accept


# ----- text rendering -----


def test_split_keeps_paragraphs() -> None:
    paragraphs = [f"Paragraphe {index}. " + " ".join(["mot"] * 300) for index in range(12)]

    chunks = split_text("\n\n".join(paragraphs), 4096)

    assert len(chunks) > 1
    assert all(utf16_length(chunk) <= 4096 for chunk in chunks)
    assert all(chunk.startswith("Paragraphe") for chunk in chunks)
    assert "\n\n".join(chunks) == "\n\n".join(paragraphs)


def test_split_cuts_long_word() -> None:
    chunks = split_text("x" * 9000, 4096)

    assert [len(chunk) for chunk in chunks] == [4096, 4096, 808]


def test_split_counts_utf16_units() -> None:
    # Each emoji outside the BMP counts two units for Telegram.
    chunks = split_text("😀" * 3000, 4096)

    assert [utf16_length(chunk) for chunk in chunks] == [4096, 1904]


def test_render_escapes_expert_label() -> None:
    message = OutgoingMessage(text="Tapez <b>gras</b> & validez", role=Role.EXPERT, label="Guichet <ENT>")

    assert render_html(message) == ["<b>Guichet &lt;ENT&gt;</b>\nTapez &lt;b&gt;gras&lt;/b&gt; &amp; validez"]


# ----- conversations -----


async def test_question_answered(harness: Harness, fake: FakeBotApi) -> None:
    start = fake.mark()
    await fake.inject_text("J'ai oublié mon mot de passe", user=fake.user(2002))
    answer = await fake.wait_for("sendMessage", containing("Mot de passe oublié"), start)

    assert answer.params["chat_id"] == 2002
    assert answer.params["parse_mode"] == "HTML"
    assert answer.ok


async def test_start_sends_welcome_and_privacy(harness: Harness, fake: FakeBotApi) -> None:
    start = fake.mark()
    await fake.inject_command("start")
    welcome = await fake.wait_for("sendMessage", start=start)

    assert welcome.result["text"].startswith("Bonjour ! Je suis l'assistant de l'ENT")
    assert "transmettre votre demande à une personne de l'assistance" in welcome.result["text"]
    assert "Elle est conservée pendant 12 mois" in welcome.result["text"]


async def test_help_lists_commands(harness: Harness, fake: FakeBotApi) -> None:
    start = fake.mark()
    await fake.inject_command("aide")
    help_text = await fake.wait_for("sendMessage", start=start)

    for command in ("/start", "/aide", "/restart", "/annuler"):
        assert command in help_text.result["text"]


async def test_command_menu_registered(harness: Harness, fake: FakeBotApi) -> None:
    call = await fake.wait_for("setMyCommands")
    commands = call.params["commands"]

    assert [command["command"] for command in commands] == ["start", "aide", "restart", "annuler"]
    assert commands[1]["description"] == "Ce que l'assistant sait faire"


async def test_unknown_command_explained(harness: Harness, fake: FakeBotApi) -> None:
    start = fake.mark()
    await fake.inject_command("human_request")
    reply = await fake.wait_for("sendMessage", start=start)

    assert reply.result["text"].startswith("Je ne connais pas cette commande")


async def test_restart_command_starts_over(harness: Harness, fake: FakeBotApi) -> None:
    start = fake.mark()
    await fake.inject_command("restart")
    # A first contact starts with the privacy notice; the restart confirmation follows it.
    reply = await fake.wait_for("sendMessage", containing("on recommence"), start)

    assert reply.result["text"] == "C'est noté, on recommence depuis le début."


async def test_button_press_handled_as_payload(harness: Harness, fake: FakeBotApi, runtime: Runtime) -> None:
    start = fake.mark()
    await fake.inject_text("J'ai oublié mon mot de passe", user=fake.user(2002))
    question = await fake.wait_for("sendMessage", lambda call: "reply_markup" in call.params, start)
    keyboard = question.params["reply_markup"]["inline_keyboard"]
    await fake.inject_callback_query(question.result, "/affirm", user=fake.user(2002))
    answer = await fake.wait_for("answerCallbackQuery", start=start)
    glad = await fake.wait_for("sendMessage", containing("Tant mieux"), start)
    history = await runtime.assistant.history(await conversation_id(runtime, "2002"))

    assert [[button["text"] for button in row] for row in keyboard] == [["Oui"], ["Non"]]
    assert answer.ok
    assert glad.params["chat_id"] == 2002
    assert [item.text for item in history if item.role is Role.USER][-1] == "Oui"


async def test_long_payload_button_round_trip(harness: Harness, fake: FakeBotApi, runtime: Runtime) -> None:
    await greet(fake, fake.user(2002))
    payload = '/inform{"device": "ordinateur portable de la salle informatique, navigateur Firefox"}'
    question = BotUttered(text="Sur quel appareil ?", buttons=[Button("Ordinateur de la salle", payload)])
    start = fake.mark()
    await runtime.assistant.deliver(await conversation_id(runtime, "2002"), question)
    sent = await fake.wait_for("sendMessage", start=start)
    data = sent.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    await fake.inject_callback_query(sent.result, data, user=fake.user(2002))
    noted = await fake.wait_for("sendMessage", containing("c'est noté"), start)
    history = await runtime.assistant.history(await conversation_id(runtime, "2002"))

    assert len(payload.encode()) > 64
    assert len(data.encode()) <= 64
    assert noted.params["chat_id"] == 2002
    assert [item.text for item in history if item.role is Role.USER][-1] == "Ordinateur de la salle"


async def test_long_answer_split(harness: Harness, fake: FakeBotApi, runtime: Runtime) -> None:
    await greet(fake, fake.user(2002))
    # Eight paragraphs of about 1,570 characters: two fit in one message, three do not.
    paragraphs = [f"Étape {index} : " + " ".join(["vérifiez les réglages de votre compte."] * 40) for index in range(8)]
    start = fake.mark()
    await runtime.assistant.deliver(await conversation_id(runtime, "2002"), BotUttered(text="\n\n".join(paragraphs)))
    sent = sent_texts(fake, start, 2002)

    assert len(sent) == 4
    assert all(len(text) <= 4096 for text in sent)
    assert sent[1] == "\n\n".join(paragraphs[2:4])
    assert "\n\n".join(sent) == "\n\n".join(paragraphs)


async def test_html_escaped_in_visible_text(harness: Harness, fake: FakeBotApi, runtime: Runtime) -> None:
    await greet(fake, fake.user(2002))
    start = fake.mark()
    expert = ExpertUttered(text="Tapez <b>gras</b> & validez", label="Guichet <ENT>")
    await runtime.assistant.deliver(await conversation_id(runtime, "2002"), expert)
    call = await fake.wait_for("sendMessage", start=start)

    assert call.params["text"] == "<b>Guichet &lt;ENT&gt;</b>\nTapez &lt;b&gt;gras&lt;/b&gt; &amp; validez"
    assert call.result["text"] == "Guichet <ENT>\nTapez <b>gras</b> & validez"


@pytest.mark.parametrize("kind", ["photo", "sticker", "voice", "document"])
async def test_attachment_gets_text_only_reply(harness: Harness, fake: FakeBotApi, kind: str) -> None:
    start = fake.mark()
    await getattr(fake, f"inject_{kind}")(user=fake.user(2002))
    reply = await fake.wait_for("sendMessage", start=start)

    assert reply.params["chat_id"] == 2002
    assert "je ne comprends que les messages écrits" in reply.result["text"]


async def test_photo_caption_answered(harness: Harness, fake: FakeBotApi) -> None:
    start = fake.mark()
    await fake.inject_photo(caption="J'ai oublié mon mot de passe", user=fake.user(2002))
    await fake.wait_for("sendMessage", containing("Mot de passe oublié"), start)

    assert "je ne comprends que les messages écrits" in sent_texts(fake, start)[0]


@pytest.mark.parametrize("accept", [True, False], ids=["accepted", "refused"])
async def test_attachment_relayed_during_handoff(harness: Harness, fake: FakeBotApi, runtime: Runtime, accept: bool) -> None:
    desk = FileTakingDesk(runtime, accept)
    runtime.assistant.desk = desk
    await ask_for_human(fake, fake.user(2002))
    start = fake.mark()
    await fake.inject_document(b"%PDF-1.4 capture", file_name="capture.pdf", user=fake.user(2002))
    reply = await fake.wait_for("sendMessage", start=start)
    expected = "J'ai transmis votre fichier" if accept else "Je ne peux pas transmettre de fichier"

    assert await fake.wait_for("getFile", start=start)
    assert desk.files == [(await conversation_id(runtime, "2002"), "capture.pdf", "application/pdf", b"%PDF-1.4 capture")]
    assert reply.result["text"].startswith(expected)


async def test_photo_relayed_with_its_type(harness: Harness, fake: FakeBotApi, runtime: Runtime) -> None:
    desk = FileTakingDesk(runtime, accept=True)
    runtime.assistant.desk = desk
    await ask_for_human(fake, fake.user(2002))
    start = fake.mark()
    await fake.inject_photo(user=fake.user(2002))
    await fake.wait_for("sendMessage", start=start)
    _, filename, content_type, data = desk.files[0]

    assert filename.startswith("photo-")
    assert content_type == "image/png"
    assert data.startswith(b"\x89PNG")


async def test_edited_message_not_answered_again(harness: Harness, fake: FakeBotApi) -> None:
    start = fake.mark()
    update_id = await fake.inject_text("J'ai oublié mon mot de passe", user=fake.user(2002))
    await fake.wait_for("sendMessage", containing("Cette réponse vous est-elle utile"), start)
    answered = len(sent_texts(fake, start))
    edited = await fake.inject_edited_message(update_id, "J'ai oublié mon identifiant")
    await harness.settled(edited)

    assert len(sent_texts(fake, start)) == answered


async def test_group_message_needs_mention(harness: Harness, fake: FakeBotApi) -> None:
    group = fake.group_chat()
    start = fake.mark()
    ignored = await fake.inject_text("J'ai oublié mon mot de passe", user=fake.user(2002), chat=group)
    await harness.settled(ignored)
    before_mention = sent_texts(fake, start)
    text = "@entraide_test_bot j'ai oublié mon mot de passe"
    mention = [{"type": "mention", "offset": 0, "length": len("@entraide_test_bot")}]
    await fake.inject_text(text, user=fake.user(2002), chat=group, entities=mention)
    answer = await fake.wait_for("sendMessage", containing("Mot de passe oublié"), start)

    assert before_mention == []
    assert answer.params["chat_id"] == group["id"]


async def test_group_ignored_when_configured(fake: FakeBotApi, runtime: Runtime, webhook_port: int) -> None:
    running = Harness(fake, runtime, "polling", webhook_port, groups="ignore")
    await running.start()
    try:
        start = fake.mark()
        text = "@entraide_test_bot j'ai oublié mon mot de passe"
        mention = [{"type": "mention", "offset": 0, "length": len("@entraide_test_bot")}]
        update_id = await fake.inject_text(text, user=fake.user(2002), chat=fake.group_chat(), entities=mention)
        await running.settled(update_id)
    finally:
        await running.stop()

    assert sent_texts(fake, start) == []


async def test_command_for_other_bot_ignored(harness: Harness, fake: FakeBotApi) -> None:
    start = fake.mark()
    other = await fake.inject_command("aide", chat=fake.group_chat(), mention="some_other_bot")
    await harness.settled(other)
    await fake.inject_command("aide", chat=fake.group_chat(), mention="entraide_test_bot")
    await fake.wait_for("sendMessage", start=start)

    assert len(sent_texts(fake, start)) == 1


# ----- delivery guarantees -----


async def test_same_update_twice_handled_once(fake: FakeBotApi, runtime: Runtime, webhook_port: int) -> None:
    running = Harness(fake, runtime, "webhook", webhook_port)
    await running.start()
    try:
        start = fake.mark()
        # The connector replies to /aide without the assistant, so only its own check of update ids can stop a repeat.
        update_id = await fake.inject_command("aide", user=fake.user(2002))
        await running.settled(update_id)
        answered = len(sent_texts(fake, start))
        headers = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}
        async with aiohttp.ClientSession() as session:
            async with session.post(running.webhook_url, json=fake.injected[-1], headers=headers) as response:
                status = response.status
    finally:
        await running.stop()

    assert answered == 1
    assert status == 200
    assert len(sent_texts(fake, start)) == answered


async def test_webhook_rejects_wrong_secret(fake: FakeBotApi, runtime: Runtime, webhook_port: int) -> None:
    running = Harness(fake, runtime, "webhook", webhook_port)
    await running.start()
    try:
        update = {"update_id": 99, "message": {"message_id": 1, "date": 0, "chat": {"id": 2002, "type": "private"}, "text": "Bonjour"}}
        async with aiohttp.ClientSession() as session:
            headers = {"X-Telegram-Bot-Api-Secret-Token": "not-the-secret"}
            async with session.post(running.webhook_url, json=update, headers=headers) as wrong:
                wrong_status = wrong.status
            async with session.post(running.webhook_url, json=update) as missing:
                missing_status = missing.status
        set_webhook = await fake.wait_for("setWebhook")
    finally:
        await running.stop()

    assert wrong_status == 403
    assert missing_status == 403
    assert set_webhook.params["url"] == running.webhook_url
    assert set_webhook.params["secret_token"] == WEBHOOK_SECRET


@pytest.mark.parametrize("mode", MODES)
async def test_restart_between_updates(fake: FakeBotApi, runtime: Runtime, webhook_port: int, mode: str) -> None:
    first = Harness(fake, runtime, mode, webhook_port)
    await first.start()
    start = fake.mark()
    try:
        await fake.inject_text("J'ai oublié mon mot de passe", user=fake.user(2002))
        await fake.wait_for("sendMessage", containing("Cette réponse vous est-elle utile"), start)
    finally:
        await first.stop()
    await fake.inject_text("J'ai oublié mon identifiant", user=fake.user(2002))

    second = Harness(fake, runtime, mode, webhook_port)
    await second.start()
    try:
        await fake.wait_for("sendMessage", containing("identifiant"), start)
        await asyncio.sleep(0.3)
    finally:
        await second.stop()
    sent = sent_texts(fake, start)

    assert sum("Mot de passe oublié" in text for text in sent) == 1
    assert sum("Votre identifiant figure" in text for text in sent) == 1


async def test_wrong_token_stops_start(fake: FakeBotApi, runtime: Runtime, webhook_port: int) -> None:
    settings = telegram_settings(fake, "polling", webhook_port, token="7000000001:wrong")
    connector = TelegramConnector(settings, runtime.assistant, runtime.store)

    with pytest.raises(ConnectorError, match="TELEGRAM_TOKEN"):
        await connector.start()
    assert not connector.ready


async def test_offset_stored_after_each_batch(polling: Harness, fake: FakeBotApi, runtime: Runtime) -> None:
    update_id = await fake.inject_text("Bonjour", user=fake.user(2002))
    await polling.settled(update_id)
    stored = await runtime.store.get_state(f"telegram:{fake.token.partition(':')[0]}:offset")

    assert stored == str(update_id + 1)


# ----- Telegram errors -----


async def test_too_many_requests_retried(harness: Harness, fake: FakeBotApi) -> None:
    fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 1")
    start = fake.mark()
    await fake.inject_command("aide", user=fake.user(2002))
    delivered = await fake.wait_for("sendMessage", lambda call: call.ok, start, timeout=10)
    attempts = [call for call in fake.calls[start:] if call.method == "sendMessage"]

    assert [call.status for call in attempts] == [429, 200]
    assert delivered.time - attempts[0].time >= 1.0


async def test_network_error_retried(harness: Harness, fake: FakeBotApi) -> None:
    fake.fail_next("sendMessage", 502, "Bad Gateway")
    start = fake.mark()
    await fake.inject_command("aide", user=fake.user(2002))
    await fake.wait_for("sendMessage", lambda call: call.ok, start, timeout=10)
    attempts = [call for call in fake.calls[start:] if call.method == "sendMessage"]

    assert [call.status for call in attempts] == [502, 200]


async def test_blocked_user_marks_conversation(
    harness: Harness, fake: FakeBotApi, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    await greet(fake, fake.user(2002))
    conversation = await conversation_id(runtime, "2002")
    fake.block_user(2002)
    start = fake.mark()
    caplog.set_level(logging.INFO)
    await runtime.assistant.deliver(conversation, ExpertUttered(text="Avez-vous pu vous connecter ?", label="Assistance"))
    await runtime.assistant.deliver(conversation, ExpertUttered(text="Je clos la demande.", label="Assistance"))
    stored = await runtime.store.conversation_by_id(conversation)
    attempts = [call for call in fake.calls[start:] if call.method == "sendMessage"]

    assert stored.status == "blocked"
    assert [call.status for call in attempts] == [403]
    assert any(conversation in record.getMessage() and "blocked" in record.getMessage() for record in caplog.records)


async def test_blocked_user_writing_again_unblocked(harness: Harness, fake: FakeBotApi, runtime: Runtime) -> None:
    await greet(fake, fake.user(2002))
    conversation = await conversation_id(runtime, "2002")
    fake.block_user(2002)
    await runtime.assistant.deliver(conversation, BotUttered(text="Une autre question ?"))
    fake.unblock_user(2002)
    start = fake.mark()
    await fake.inject_text("J'ai oublié mon mot de passe", user=fake.user(2002))
    await fake.wait_for("sendMessage", containing("Mot de passe oublié"), start)
    stored = await runtime.store.conversation_by_id(conversation)

    assert stored.status == "active"


async def test_chat_not_found_logged(
    harness: Harness, fake: FakeBotApi, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    conversation = await runtime.store.conversation("telegram", "3003")
    caplog.set_level(logging.INFO)
    await runtime.assistant.deliver(conversation.id, BotUttered(text="Bonjour"))
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]

    assert any(conversation.id in message and "chat 3003 not found" in message for message in errors)


async def test_conflict_logged_clearly(polling: Harness, fake: FakeBotApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="connectors.telegram")
    await fake.wait_for("getUpdates", lambda call: call.params.get("timeout", 0) > 0, answered=False)
    async with Bot(fake.token, base_url=fake.base_url) as other:
        await other.get_updates(timeout=0)
    deadline = asyncio.get_running_loop().time() + 5
    while not any(record.levelno == logging.ERROR for record in caplog.records):
        assert asyncio.get_running_loop().time() < deadline, "no error logged after the 409"
        await asyncio.sleep(0.02)
    message = next(record.getMessage() for record in caplog.records if record.levelno == logging.ERROR)

    assert "409 Conflict" in message
    assert "another process is polling the same bot token" in message
    assert "webhook mode" in message
    assert not polling.connector.ready


# ----- handoff -----


async def test_expert_reply_reaches_user(harness: Harness, fake: FakeBotApi, runtime: Runtime, relaying_desk: RelayingDesk) -> None:
    await ask_for_human(fake, fake.user(2002))
    conversation = await runtime.store.conversation_by_id(await conversation_id(runtime, "2002"))
    start = fake.mark()
    await runtime.assistant.deliver(conversation.id, ExpertUttered(text="Bonjour, je regarde votre compte.", label="Assistance ENT"))
    reply = await fake.wait_for("sendMessage", start=start)

    assert conversation.status == "handoff"
    assert reply.params["chat_id"] == 2002
    assert reply.result["text"] == "Assistance ENT\nBonjour, je regarde votre compte."


async def test_cancel_leaves_handoff(harness: Harness, fake: FakeBotApi, runtime: Runtime, relaying_desk: RelayingDesk) -> None:
    await ask_for_human(fake, fake.user(2002))
    start = fake.mark()
    await fake.inject_command("annuler", user=fake.user(2002))
    reply = await fake.wait_for("sendMessage", start=start)
    conversation = await runtime.store.conversation_by_id(await conversation_id(runtime, "2002"))

    assert reply.result["text"].startswith("Vous parlez de nouveau avec l'assistant automatique")
    assert conversation.status == "active"
