"""The Telegram connector: lifecycle, long polling with a stored offset, and the webhook route.

In polling mode, one background task calls getUpdates. It handles each batch before it stores the
next offset, so a restart neither replays nor loses an update. In webhook mode, Telegram posts to
``POST /webhooks/telegram`` on entraide's own server, and the connector calls setWebhook at start.
Updates of one chat are handled one at a time, in arrival order, while different chats run in parallel.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import logging
import time

from aiohttp import web
from telegram import BotCommand, Bot, Update
from telegram.error import Conflict, InvalidToken, RetryAfter, TelegramError

from bot.assistant import Assistant
from bot.config import TelegramSettings
from bot.errors import ConnectorError, StorageError
from bot.locks import ConversationLocks
from bot.messages import OutgoingMessage
from bot.storage.store import Store
from connectors.base import Connector
from connectors.telegram import texts
from connectors.telegram.inbound import ALLOWED_UPDATES, UpdateHandler
from connectors.telegram.outbound import (
    CHANNEL,
    FIRST_NETWORK_RETRY_DELAY,
    MAX_NETWORK_RETRY_DELAY,
    Sender,
    retry_after_seconds,
)

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Seconds between getUpdates calls while Telegram returns 409 Conflict.
CONFLICT_RETRY_DELAY = 10.0
# Seconds before the 409 error is logged again at ERROR. Repeats in between go to DEBUG.
CONFLICT_LOG_INTERVAL = 300.0
# Seconds that stop() waits for updates being handled before it cancels them.
STOP_TIMEOUT = 30.0


class State(enum.Enum):
    """Lifecycle state of the connector: start() moves NEW or STOPPED to RUNNING, stop() moves RUNNING to STOPPED."""

    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class TelegramConnector(Connector):
    """Receive Telegram updates by polling or webhook and send replies through the Bot API."""

    name = CHANNEL

    def __init__(self, settings: TelegramSettings, assistant: Assistant, store: Store) -> None:
        if not settings.token:
            raise ConnectorError("channels.telegram.token is empty; set TELEGRAM_TOKEN to the token BotFather gave")
        self.settings = settings
        self.assistant = assistant
        self.store = store
        self.state = State.NEW
        self._bot: Bot | None = None
        self._sender: Sender | None = None
        self._updates: UpdateHandler | None = None
        self._chat_locks = ConversationLocks()
        self._stopping = asyncio.Event()
        self._polling: asyncio.Task[None] | None = None
        self._fetch: asyncio.Task[tuple[Update, ...]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._healthy = False
        self._conflict_logged_at: float | None = None
        # The bot id is the public part of the token, before the colon.
        self._offset_key = f"telegram:{settings.token.partition(':')[0]}:offset"

    @property
    def ready(self) -> bool:
        return self.state is State.RUNNING and self._healthy

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post(WEBHOOK_PATH, self.webhook)

    # ----- lifecycle -----

    async def start(self) -> None:
        """Log in with getMe, register the command menu, then start polling or set the webhook.

        Raises ConnectorError when Telegram rejects the token or cannot be reached.
        """
        if self.state is State.RUNNING:
            raise RuntimeError("TelegramConnector is already running; call stop() before starting it again")
        _hide_token_from_http_logs()
        options = {}
        if self.settings.base_url:
            options["base_url"] = self.settings.base_url
        if self.settings.base_file_url:
            options["base_file_url"] = self.settings.base_file_url
        bot = Bot(self.settings.token, **options)
        try:
            await bot.initialize()
        except InvalidToken:
            raise ConnectorError("Telegram rejected the bot token (401 Unauthorized); check TELEGRAM_TOKEN against BotFather") from None
        except TelegramError as exc:
            raise ConnectorError(f"cannot reach the Telegram Bot API ({exc}); check the network or channels.telegram.base_url") from None

        sender = Sender(bot, self.store, self.settings)
        try:
            await self._register_commands(bot, sender)
            if self.settings.mode == "webhook":
                await sender.call(
                    lambda: bot.set_webhook(
                        self.settings.webhook_url, secret_token=self.settings.webhook_secret, allowed_updates=ALLOWED_UPDATES
                    ),
                    None,
                    "setWebhook",
                )
            else:
                # A webhook left by an earlier deployment would make every getUpdates fail with 409.
                await sender.call(lambda: bot.delete_webhook(drop_pending_updates=False), None, "deleteWebhook")
            offset = await self._stored_offset() if self.settings.mode == "polling" else None
        except TelegramError as exc:
            await bot.shutdown()
            hint = "check channels.telegram.webhook_url" if self.settings.mode == "webhook" else "check the network"
            raise ConnectorError(f"setting up telegram {self.settings.mode} mode failed: {exc}; {hint}") from None
        except BaseException:
            await bot.shutdown()
            raise

        self._bot, self._sender = bot, sender
        self._updates = UpdateHandler(self.settings, self.assistant, self.store, bot, sender)
        self._stopping.clear()
        self._healthy = True
        self.state = State.RUNNING
        if self.settings.mode == "polling":
            self._polling = asyncio.create_task(self._poll(offset), name=f"TelegramConnector:{bot.id}:polling")
        logger.info("telegram connector started: bot @%s in %s mode", bot.username, self.settings.mode)

    async def stop(self) -> None:
        """Stop polling, let the updates being handled finish, then close the Bot API session."""
        if self.state is not State.RUNNING:
            return
        self._stopping.set()
        self._healthy = False
        if self._fetch is not None and not self._fetch.done():
            self._fetch.cancel()
        pending = {task for task in (self._polling, *self._tasks) if task is not None and not task.done()}
        if pending:
            _, late = await asyncio.wait(pending, timeout=STOP_TIMEOUT)
            for task in late:
                logger.warning("telegram task %s still running after %.0f s; cancelling it", task.get_name(), STOP_TIMEOUT)
                task.cancel()
            if late:
                await asyncio.wait(late)
        self._polling = None
        await self._bot.shutdown()
        self.state = State.STOPPED
        logger.info("telegram connector stopped")

    async def _register_commands(self, bot: Bot, sender: Sender) -> None:
        commands = [BotCommand(command, description) for command, description in texts.COMMANDS]
        try:
            await sender.call(lambda: bot.set_my_commands(commands), None, "setMyCommands")
        except TelegramError as exc:
            # Typed commands still work, and only the menu is missing.
            logger.warning("registering the telegram command menu failed: %s", exc)

    async def _stored_offset(self) -> int | None:
        value = await self.store.get_state(self._offset_key)
        return int(value) if value else None

    # ----- sending -----

    async def send(self, recipient_id: str, message: OutgoingMessage) -> None:
        """Deliver one message; raise RecipientBlocked when the user blocked the bot, ConnectorError on failure."""
        if self._sender is None:
            raise ConnectorError("the telegram connector is not started; the message stays in the store")
        await self._sender.send(recipient_id, message)

    # ----- receiving -----

    async def _poll(self, offset: int | None) -> None:
        try:
            await self._poll_until_stopped(offset)
        except Exception:
            self._healthy = False
            logger.exception("telegram polling stopped by an unexpected error; restart entraide to resume it")

    async def _poll_until_stopped(self, offset: int | None) -> None:
        """Call getUpdates until stop(), handle each batch, then store the next offset."""
        failures = 0
        while not self._stopping.is_set():
            self._fetch = asyncio.create_task(
                self._bot.get_updates(offset=offset, timeout=self.settings.poll_timeout, allowed_updates=ALLOWED_UPDATES),
                name=f"TelegramConnector:{self._bot.id}:getUpdates",
            )
            try:
                updates = await self._fetch
            except asyncio.CancelledError:
                if self._stopping.is_set() and not asyncio.current_task().cancelling():
                    return
                raise
            except Conflict as exc:
                self._healthy = False
                self._log_conflict(exc)
                await self._pause(CONFLICT_RETRY_DELAY)
                continue
            except InvalidToken:
                self._healthy = False
                logger.error("Telegram rejected the bot token while polling (401); check TELEGRAM_TOKEN. Polling stopped.")
                return
            except RetryAfter as exc:
                await self._pause(retry_after_seconds(exc))
                continue
            except TelegramError as exc:
                failures += 1
                delay = min(FIRST_NETWORK_RETRY_DELAY * 2 ** (failures - 1), MAX_NETWORK_RETRY_DELAY)
                logger.warning("polling Telegram failed (%s); retry %d in %.0f s", exc, failures, delay)
                await self._pause(delay)
                continue

            failures = 0
            self._healthy = True
            self._conflict_logged_at = None
            if not updates:
                continue
            await asyncio.gather(*(self._process(update) for update in updates))
            offset = updates[-1].update_id + 1
            try:
                await self.store.set_state(self._offset_key, str(offset))
            except StorageError as exc:
                # The handled ids are in the store, so a replay after a restart is ignored anyway.
                logger.error("storing the telegram update offset %d failed: %s", offset, exc)

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    def _log_conflict(self, exc: Conflict) -> None:
        now = time.monotonic()
        if self._conflict_logged_at is not None and now - self._conflict_logged_at < CONFLICT_LOG_INTERVAL:
            logger.debug("telegram getUpdates conflict again: %s", exc)
            return
        self._conflict_logged_at = now
        logger.error(
            "Telegram returned 409 Conflict to getUpdates (%s): another process is polling the same bot token, "
            "or a webhook is set for it. Only one process may poll a token: stop the other instance, or run every "
            "instance in webhook mode (channels.telegram.mode: webhook). Retrying every %.0f s.",
            exc, CONFLICT_RETRY_DELAY,
        )

    async def webhook(self, request: web.Request) -> web.Response:
        """Handle one update that Telegram posts, and respond 200 once it is handled so that Telegram does not resend it."""
        secret = request.headers.get(SECRET_HEADER, "")
        expected = self.settings.webhook_secret or ""
        if not expected or not hmac.compare_digest(secret.encode("utf-8"), expected.encode("utf-8")):
            logger.warning("telegram webhook call from %s rejected: missing or wrong secret token", request.remote)
            raise web.HTTPForbidden(text="wrong or missing X-Telegram-Bot-Api-Secret-Token")
        if self.state is not State.RUNNING or self._stopping.is_set():
            raise web.HTTPServiceUnavailable(text="the telegram connector is not running", headers={"Retry-After": "5"})
        try:
            data = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="expected a JSON Telegram update") from None
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            raise web.HTTPBadRequest(text="expected a Telegram update with an integer update_id")
        try:
            update = Update.de_json(data, self._bot)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            logger.warning("telegram webhook: update %s is malformed: %s", data["update_id"], type(exc).__name__)
            raise web.HTTPBadRequest(text="malformed Telegram update") from None

        task = asyncio.create_task(self._process(update), name=f"TelegramConnector:update:{update.update_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # The shield lets the update finish even if Telegram closes the connection first.
        await asyncio.shield(task)
        return web.Response(text="ok")

    async def _process(self, update: Update) -> None:
        chat = update.effective_chat
        key = str(chat.id) if chat is not None else f"update:{update.update_id}"
        async with self._chat_locks.hold(key):
            try:
                await self._updates.handle(update)
            except Exception:
                logger.exception("telegram update %s could not be handled", update.update_id)


def _hide_token_from_http_logs() -> None:
    # httpx logs every request URL at INFO, and Bot API URLs contain the bot token.
    http_logger = logging.getLogger("httpx")
    if http_logger.level == logging.NOTSET:
        http_logger.setLevel(logging.WARNING)
