"""Prove the local Bot API server with a real python-telegram-bot Application."""

from __future__ import annotations

import asyncio
import datetime as dtm
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.support.fake_bot_api import LOOPBACK, FakeBotApi

WEBHOOK_SECRET = "entraide-test-secret"
WEBHOOK_PATH = "tg-webhook"


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(f"echo: {update.effective_message.text}")


async def start_menu(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Mot de passe", callback_data="password")]])
    await update.effective_message.reply_text("Quel est votre souci ?", reply_markup=keyboard)


async def menu_choice(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    await query.answer()
    await query.edit_message_text(f"Choix : {query.data}")


def build_app(fake: FakeBotApi) -> Application:
    app = (
        ApplicationBuilder()
        .token(fake.token)
        .base_url(fake.base_url)
        .base_file_url(fake.base_file_url)
        .build()
    )
    app.add_handler(CommandHandler("start", start_menu))
    app.add_handler(CallbackQueryHandler(menu_choice))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    return app


@asynccontextmanager
async def running(
    app: Application,
    webhook_port: int | None = None,
    *,
    poll_timeout: int = 10,
    **polling_options: object,
) -> AsyncIterator[Application]:
    """Run ``app`` by polling, or by webhook on ``webhook_port``; stop in reverse order."""
    async with app:
        await app.start()
        if webhook_port is None:
            await app.updater.start_polling(timeout=poll_timeout, **polling_options)
        else:
            await app.updater.start_webhook(
                listen=LOOPBACK,
                port=webhook_port,
                url_path=WEBHOOK_PATH,
                webhook_url=f"http://{LOOPBACK}:{webhook_port}/{WEBHOOK_PATH}",
                secret_token=WEBHOOK_SECRET,
            )
        try:
            yield app
        finally:
            await app.updater.stop()
            await app.stop()


async def call_raw(
    fake: FakeBotApi, verb: str, method: str, *, token: str | None = None, **request_options: object
) -> tuple[int, dict]:
    """Send one HTTP request to the fake, as a client other than PTB would."""
    url = f"{fake.base_url}{token or fake.token}/{method}"
    async with aiohttp.ClientSession() as session:
        async with session.request(verb, url, **request_options) as response:
            return response.status, await response.json()


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_text_round_trip(bot_api: FakeBotApi, webhook_port: int, mode: str) -> None:
    port = webhook_port if mode == "webhook" else None
    async with running(build_app(bot_api), port):
        start = bot_api.mark()
        await bot_api.inject_text("Bonjour, je n'arrive pas à me connecter", user=bot_api.user(2002))
        call = await bot_api.wait_for("sendMessage", start=start)

    assert call.params["text"] == "echo: Bonjour, je n'arrive pas à me connecter"
    assert call.params["chat_id"] == 2002
    assert call.status == 200


async def test_webhook_delivery_carries_secret(bot_api: FakeBotApi, webhook_port: int) -> None:
    async with running(build_app(bot_api), webhook_port):
        update_id = await bot_api.inject_text("Bonjour")
        delivery = await bot_api.wait_for_delivery(update_id)
        set_webhook = await bot_api.wait_for("setWebhook")

    # PTB's webhook server returns 403 for a wrong secret or another Content-Type.
    assert delivery.status == 200
    assert set_webhook.params["secret_token"] == WEBHOOK_SECRET


async def test_webhook_wrong_secret_recorded(bot_api: FakeBotApi, webhook_port: int) -> None:
    async with running(build_app(bot_api), webhook_port) as app:
        # Point the fake at PTB's server with a secret PTB does not expect.
        await app.bot.set_webhook(
            f"http://{LOOPBACK}:{webhook_port}/{WEBHOOK_PATH}", secret_token="wrong-secret"
        )
        update_id = await bot_api.inject_text("Bonjour")
        delivery = await bot_api.wait_for_delivery(update_id)
        info = await app.bot.get_webhook_info()

    assert delivery.status == 403
    assert info.pending_update_count == 1
    assert info.last_error_message.startswith("Wrong response from the webhook: 403")


async def test_callback_query_round_trip(bot_api: FakeBotApi) -> None:
    async with running(build_app(bot_api)):
        start = bot_api.mark()
        await bot_api.inject_command("start")
        menu = await bot_api.wait_for("sendMessage", start=start)
        await bot_api.inject_callback_query(menu.result, "password")
        answer = await bot_api.wait_for("answerCallbackQuery", start=start)
        edit = await bot_api.wait_for("editMessageText", start=start)

    assert menu.result["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "password"
    assert answer.status == 200
    assert edit.params["message_id"] == menu.result["message_id"]
    assert edit.result["text"] == "Choix : password"
    assert "reply_markup" not in edit.result


async def test_command_for_other_bot_ignored(bot_api: FakeBotApi) -> None:
    async with running(build_app(bot_api)):
        start = bot_api.mark()
        await bot_api.inject_command("start", chat=bot_api.group_chat(), mention="some_other_bot")
        await bot_api.inject_command("start", chat=bot_api.group_chat(), mention="entraide_test_bot")
        reply = await bot_api.wait_for("sendMessage", start=start)

    sent = [call for call in bot_api.calls[start:] if call.method == "sendMessage"]
    assert len(sent) == 1
    assert reply.params["chat_id"] == bot_api.group_chat()["id"]


async def test_too_many_requests_raises_retry_after(bot_api: FakeBotApi) -> None:
    bot_api.fail_next("sendMessage", 429, "Too Many Requests: retry after 7")
    await bot_api.inject_text("Bonjour", user=bot_api.user(2002))
    async with build_app(bot_api) as app:
        with pytest.raises(RetryAfter) as caught:
            await app.bot.send_message(2002, "Réponse")

    assert caught.value.retry_after == dtm.timedelta(seconds=7)


async def test_flood_interval_raises_retry_after(bot_api: FakeBotApi) -> None:
    async with FakeBotApi(flood_interval_per_chat=30.0) as fake:
        await fake.inject_text("Bonjour", user=fake.user(2002))
        async with build_app(fake) as app:
            await app.bot.send_message(2002, "Première réponse")
            with pytest.raises(RetryAfter) as caught:
                await app.bot.send_message(2002, "Deuxième réponse")

    assert caught.value.retry_after == dtm.timedelta(seconds=30)


async def test_blocked_user_raises_forbidden(bot_api: FakeBotApi) -> None:
    errors: asyncio.Queue[object] = asyncio.Queue()

    async def record_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        errors.put_nowait(context.error)

    app = build_app(bot_api)
    app.add_error_handler(record_error)
    bot_api.block_user(2002)
    async with running(app):
        await bot_api.inject_text("Bonjour", user=bot_api.user(2002))
        error = await asyncio.wait_for(errors.get(), timeout=5)

    assert isinstance(error, Forbidden)
    assert str(error) == "Forbidden: bot was blocked by the user"


async def test_second_poller_conflicts_app(bot_api: FakeBotApi) -> None:
    errors: list[TelegramError] = []
    error_seen = asyncio.Event()

    def record_error(error: TelegramError) -> None:
        errors.append(error)
        error_seen.set()

    async with running(build_app(bot_api), error_callback=record_error):
        await bot_api.wait_for(
            "getUpdates", lambda call: call.params.get("timeout", 0) > 0, answered=False
        )
        async with Bot(bot_api.token, base_url=bot_api.base_url) as other:
            await other.get_updates(timeout=0)
        await asyncio.wait_for(error_seen.wait(), timeout=5)

    assert len(errors) == 1
    assert isinstance(errors[0], Conflict)


async def test_app_conflicts_waiting_poller(bot_api: FakeBotApi) -> None:
    async with Bot(bot_api.token, base_url=bot_api.base_url) as other:
        waiting = asyncio.create_task(other.get_updates(timeout=10, read_timeout=15))
        await bot_api.wait_for("getUpdates", answered=False)
        async with running(build_app(bot_api)):
            with pytest.raises(Conflict) as caught:
                await waiting

    assert "terminated by other getUpdates request" in str(caught.value)


async def test_get_updates_conflicts_with_webhook(bot_api: FakeBotApi) -> None:
    async with Bot(bot_api.token, base_url=bot_api.base_url) as bot:
        await bot.set_webhook(f"http://{LOOPBACK}:9/hook")
        with pytest.raises(Conflict) as caught:
            await bot.get_updates()

    assert "webhook is active" in str(caught.value)


async def test_webhook_outside_loopback_rejected(bot_api: FakeBotApi) -> None:
    async with Bot(bot_api.token, base_url=bot_api.base_url) as bot:
        with pytest.raises(BadRequest) as caught:
            await bot.set_webhook("https://example.org/hook")

    assert "loopback" in str(caught.value)


async def test_wrong_token_raises_invalid_token(bot_api: FakeBotApi) -> None:
    with pytest.raises(InvalidToken):
        async with Bot("1:wrong", base_url=bot_api.base_url):
            pass


@pytest.mark.parametrize(
    ("text", "parse_mode", "expected"),
    [
        pytest.param("Salle 12.", "MarkdownV2", "character '.' is reserved", id="markdown-v2-dot"),
        pytest.param("*gras", "MarkdownV2", "can't find end of bold entity", id="markdown-v2-open"),
        pytest.param("<salle>12</salle>", "HTML", 'unsupported start tag "salle"', id="html-tag"),
        pytest.param("<b>gras", "HTML", "can't find end tag", id="html-unclosed"),
        pytest.param("a" * 4097, None, "message is too long", id="too-long"),
        pytest.param("<b></b>", "HTML", "message text is empty", id="empty"),
    ],
)
async def test_send_message_rejects_text(
    bot_api: FakeBotApi, text: str, parse_mode: str | None, expected: str
) -> None:
    await bot_api.inject_text("Bonjour", user=bot_api.user(2002))
    async with Bot(bot_api.token, base_url=bot_api.base_url) as bot:
        with pytest.raises(BadRequest) as caught:
            await bot.send_message(2002, text, parse_mode=parse_mode)

    # PTB strips "Bad Request: " and lowercases the rest of the description.
    assert expected in str(caught.value).lower()


async def test_send_message_unknown_chat(bot_api: FakeBotApi) -> None:
    async with Bot(bot_api.token, base_url=bot_api.base_url) as bot:
        with pytest.raises(BadRequest) as caught:
            await bot.send_message(3003, "Bonjour")

    assert str(caught.value) == "Chat not found"


async def test_escaped_markdown_v2_accepted(bot_api: FakeBotApi) -> None:
    await bot_api.inject_text("Bonjour", user=bot_api.user(2002))
    async with Bot(bot_api.token, base_url=bot_api.base_url) as bot:
        message = await bot.send_message(2002, r"*Salle 12\.* \- _bât\. B_", parse_mode="MarkdownV2")

    assert message.text == "Salle 12. - bât. B"


async def test_photo_download_round_trip(bot_api: FakeBotApi) -> None:
    update_id = await bot_api.inject_photo(user=bot_api.user(2002))
    photo = bot_api.injected[-1]["message"]["photo"][-1]
    async with Bot(
        bot_api.token, base_url=bot_api.base_url, base_file_url=bot_api.base_file_url
    ) as bot:
        telegram_file = await bot.get_file(photo["file_id"])
        content = await telegram_file.download_as_bytearray()
        sent = await bot.send_document(2002, bytes(content), filename="capture.png")

    assert update_id == bot_api.injected[-1]["update_id"]
    assert content.startswith(b"\x89PNG")
    assert len(content) == photo["file_size"]
    assert sent.document.file_name == "capture.png"


async def test_commands_round_trip(bot_api: FakeBotApi) -> None:
    async with Bot(bot_api.token, base_url=bot_api.base_url) as bot:
        await bot.set_my_commands([("aide", "Afficher l'aide"), ("start", "Commencer")])
        commands = await bot.get_my_commands()

    assert [command.command for command in commands] == ["aide", "start"]


async def test_stop_ends_open_long_poll(bot_api: FakeBotApi) -> None:
    app = build_app(bot_api)
    async with app:
        await app.start()
        await app.updater.start_polling(timeout=30)
        await bot_api.wait_for("getUpdates", lambda call: call.params["timeout"] == 30, answered=False)
        started = time.monotonic()
        await app.updater.stop()
        await app.stop()
        elapsed = time.monotonic() - started

    assert elapsed < 2


async def test_edit_without_change_rejected(bot_api: FakeBotApi) -> None:
    await bot_api.inject_text("Bonjour", user=bot_api.user(2002))
    async with Bot(bot_api.token, base_url=bot_api.base_url) as bot:
        message = await bot.send_message(2002, "Réponse")
        with pytest.raises(BadRequest) as caught:
            await message.edit_text("Réponse")

    assert str(caught.value).lower().startswith("message is not modified")


async def test_raw_get_me_with_get_verb(bot_api: FakeBotApi) -> None:
    status, body = await call_raw(bot_api, "GET", "GETME")

    assert status == 200
    assert body["ok"] is True
    assert body["result"]["username"] == "entraide_test_bot"


async def test_raw_wrong_token_unauthorized(bot_api: FakeBotApi) -> None:
    status, body = await call_raw(bot_api, "POST", "getMe", token="1:wrong")

    assert status == 401
    assert body == {"ok": False, "error_code": 401, "description": "Unauthorized"}


async def test_raw_unknown_method_not_found(bot_api: FakeBotApi) -> None:
    status, body = await call_raw(bot_api, "POST", "sendTelepathy")

    assert status == 404
    assert body == {"ok": False, "error_code": 404, "description": "Not Found"}


@pytest.mark.parametrize(
    "encoding",
    [
        pytest.param({"json": {"chat_id": 2002, "text": "Bonjour", "reply_markup": {
            "inline_keyboard": [[{"text": "Oui", "callback_data": "yes"}]]}}}, id="json"),
        pytest.param({"data": {"chat_id": "2002", "text": "Bonjour", "reply_markup": (
            '{"inline_keyboard": [[{"text": "Oui", "callback_data": "yes"}]]}')}}, id="urlencoded"),
        pytest.param({"params": {"chat_id": "2002", "text": "Bonjour", "reply_markup": (
            '{"inline_keyboard": [[{"text": "Oui", "callback_data": "yes"}]]}')}}, id="query"),
    ],
)
async def test_raw_send_message_encodings(bot_api: FakeBotApi, encoding: dict) -> None:
    await bot_api.inject_text("Bonjour", user=bot_api.user(2002))
    status, body = await call_raw(bot_api, "POST", "sendmessage", **encoding)
    call = await bot_api.wait_for("sendMessage")

    assert status == 200
    assert call.params["chat_id"] == 2002
    assert call.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "yes"
    assert body["result"]["reply_markup"] == call.params["reply_markup"]


async def test_raw_get_updates_confirms_offset(bot_api: FakeBotApi) -> None:
    for text in ("un", "deux", "trois"):
        await bot_api.inject_text(text)

    _, first = await call_raw(bot_api, "POST", "getUpdates", json={"limit": 2})
    _, second = await call_raw(bot_api, "POST", "getUpdates", json={"offset": 3})
    _, third = await call_raw(bot_api, "POST", "getUpdates", json={"offset": 4})

    assert [update["update_id"] for update in first["result"]] == [1, 2]
    assert [update["update_id"] for update in second["result"]] == [3]
    assert third["result"] == []


async def test_raw_get_updates_filters_types(bot_api: FakeBotApi) -> None:
    await bot_api.inject_update({"message_reaction": {"chat": bot_api.group_chat()}})
    await bot_api.inject_text("Bonjour")

    _, body = await call_raw(bot_api, "POST", "getUpdates", json={"timeout": 0})

    assert [set(update) - {"update_id"} for update in body["result"]] == [{"message"}]


async def test_raw_long_poll_returns_injected(bot_api: FakeBotApi) -> None:
    poll = asyncio.create_task(call_raw(bot_api, "POST", "getUpdates", json={"timeout": 10}))
    await bot_api.wait_for("getUpdates", answered=False)
    started = time.monotonic()
    update_id = await bot_api.inject_text("Bonjour")
    _, body = await poll

    assert time.monotonic() - started < 2
    assert [update["update_id"] for update in body["result"]] == [update_id]
