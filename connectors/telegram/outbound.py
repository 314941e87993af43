"""Send messages to Telegram: HTML rendering, splitting, inline keyboards, retries and blocked users.

Every text goes out with ``parse_mode=HTML`` and everything but the label markup escaped, so nothing
that a user, an expert or domain.yml wrote can be read as markup. Telegram's errors map to the
connector's error tree:

- 429 Too Many Requests: wait ``retry_after`` and retry, ``max_retries`` times at most.
- Network errors and timeouts: retry after 1, 2, 4... seconds, ``max_retries`` times at most.
- 403 Forbidden (the user blocked the bot or left the group): the conversation gets status
  ``blocked`` and RecipientBlocked is raised. Later sends to it raise at once, until the user writes again.
- Any other error, such as 400 "chat not found": ConnectorError naming the conversation.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from bot.config import TelegramSettings
from bot.data.domain import Button
from bot.errors import ConnectorError, RecipientBlocked
from bot.messages import OutgoingMessage, Role
from bot.storage.store import Store
from bot.storage.tables import Conversation
from connectors.telegram import texts

logger = logging.getLogger(__name__)

CHANNEL = "telegram"
BLOCKED = "blocked"
# Telegram's limit for one message, counted in UTF-16 code units after entity parsing.
MAX_TEXT_LENGTH = 4096
# Telegram's limit for callback_data, in bytes.
MAX_CALLBACK_DATA = 64
# callback_data that starts with this names a payload kept in the store, for longer payloads.
STORED_PAYLOAD_PREFIX = "#"
FIRST_NETWORK_RETRY_DELAY = 1.0
MAX_NETWORK_RETRY_DELAY = 30.0
_SEPARATORS = ("\n\n", "\n", " ")

_T = TypeVar("_T")


# ----- recipients -----


def sender_id_for(chat_id: int, user_id: int | None, private: bool) -> str:
    """Return the conversation's sender id: the chat in a private chat, chat and member in a group.

    Each member of a group gets a conversation of their own, and replies go to the group.
    """
    if private or user_id is None:
        return str(chat_id)
    return f"{chat_id}/{user_id}"


def chat_of(recipient: str) -> int:
    """Return the chat id inside a sender id made by ``sender_id_for``, or raise ConnectorError if it is malformed."""
    head = recipient.partition("/")[0]
    try:
        return int(head)
    except ValueError:
        raise ConnectorError(f"telegram recipient {recipient!r} is not a chat id nor 'chat/user'") from None


# ----- text -----


def utf16_length(text: str) -> int:
    """Return the length of ``text`` as Telegram counts it, in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_TEXT_LENGTH) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` UTF-16 units.

    Cuts fall between paragraphs when possible, else between lines, else between words. Only a
    word longer than ``limit`` is cut inside. Empty chunks are dropped.
    """
    chunks = _split(text.strip(), limit, 0)
    return [chunk.strip() for chunk in chunks if chunk.strip()]


def _split(text: str, limit: int, level: int) -> list[str]:
    if utf16_length(text) <= limit:
        return [text]
    if level == len(_SEPARATORS):
        return _cut(text, limit)
    separator = _SEPARATORS[level]
    chunks: list[str] = []
    current = ""
    for part in text.split(separator):
        # Pieces of one part are packed already, so two of them never fit together here.
        for piece in _split(part, limit, level + 1):
            candidate = f"{current}{separator}{piece}" if current else piece
            if utf16_length(candidate) <= limit:
                current = candidate
                continue
            if current:
                chunks.append(current)
            current = piece
    if current:
        chunks.append(current)
    return chunks


def _cut(text: str, limit: int) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for char in text:
        width = utf16_length(char)
        if size + width > limit:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    if current:
        chunks.append("".join(current))
    return chunks


def render_html(message: OutgoingMessage, limit: int = MAX_TEXT_LENGTH) -> list[str]:
    """Render ``message`` as escaped HTML chunks. An expert's message starts with its label in bold."""
    label = None
    if message.role is Role.EXPERT:
        label = message.label or texts.EXPERT_LABEL
    body_limit = limit - (utf16_length(label) + 1 if label else 0)
    chunks = split_text(message.text, body_limit)
    if not chunks and message.buttons:
        chunks = [texts.BUTTONS_ONLY]
    rendered = [html.escape(chunk, quote=False) for chunk in chunks]
    if label and rendered:
        rendered[0] = f"<b>{html.escape(label, quote=False)}</b>\n{rendered[0]}"
    return rendered


# ----- buttons -----


class ButtonPayloads:
    """Map button payloads to callback_data and back.

    Payloads of at most 64 bytes travel as they are. Longer ones travel as a digest, and the
    payload is kept in the store, so a button still works after a restart.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._stored: set[str] = set()

    async def encode(self, payload: str) -> str:
        if len(payload.encode("utf-8")) <= MAX_CALLBACK_DATA and not payload.startswith(STORED_PAYLOAD_PREFIX):
            return payload
        digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:40]
        if digest not in self._stored:
            await self.store.set_state(_payload_key(digest), payload)
            self._stored.add(digest)
        return STORED_PAYLOAD_PREFIX + digest

    async def decode(self, data: str) -> str | None:
        """Return the payload behind ``data``, or None when a stored payload is unknown."""
        if not data.startswith(STORED_PAYLOAD_PREFIX):
            return data
        return await self.store.get_state(_payload_key(data.removeprefix(STORED_PAYLOAD_PREFIX)))

    async def keyboard(self, buttons: tuple[Button, ...]) -> InlineKeyboardMarkup | None:
        """Build an inline keyboard with one button per row, or None without buttons."""
        if not buttons:
            return None
        rows = []
        for button in buttons:
            data = await self.encode(button.payload or button.title)
            rows.append([InlineKeyboardButton(button.title, callback_data=data)])
        return InlineKeyboardMarkup(rows)


def _payload_key(digest: str) -> str:
    return f"telegram:button:{digest}"


def retry_after_seconds(exc: RetryAfter) -> float:
    """Return the wait that Telegram requests before a retry, in seconds."""
    value = exc.retry_after
    # PTB 22 gives a timedelta when PTB_TIMEDELTA is set, else an int of seconds.
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


# ----- sending -----


class Sender:
    """Send to Telegram chats with bounded retries, and map Telegram's errors to ConnectorError."""

    def __init__(self, bot: Bot, store: Store, settings: TelegramSettings) -> None:
        self.bot = bot
        self.store = store
        self.settings = settings
        self.payloads = ButtonPayloads(store)

    async def send(self, recipient: str, message: OutgoingMessage) -> list[Message]:
        """Deliver one assistant or expert message and return the Telegram messages sent.

        Raises RecipientBlocked for a blocked conversation and ConnectorError when Telegram refuses.
        """
        if message.role is Role.USER:
            # The user's own words are already in their chat, so echoing them would confuse.
            return []
        conversation = await self.store.conversation(CHANNEL, recipient, create=False)
        conversation_id = conversation.id if conversation is not None else None
        if conversation is not None and conversation.status == BLOCKED:
            raise RecipientBlocked(f"conversation {conversation_id}: the user blocked the bot on Telegram; not sending")
        chunks = render_html(message)
        markup = await self.payloads.keyboard(message.buttons)
        return await self.send_chunks(recipient, conversation, chunks, markup)

    async def notify(self, recipient: str, conversation: Conversation, text: str) -> None:
        """Send a notice of this channel (command reply, file notice), and log a failure instead of raising."""
        try:
            if conversation.status == BLOCKED:
                raise RecipientBlocked(f"conversation {conversation.id}: the user blocked the bot on Telegram; not sending")
            sent = await self.send_chunks(recipient, conversation, [html.escape(chunk, quote=False) for chunk in split_text(text)])
        except RecipientBlocked as exc:
            logger.warning("%s", exc)
            return
        except ConnectorError as exc:
            logger.error("conversation %s: sending a notice through telegram failed: %s", conversation.id, exc)
            return
        for item in sent:
            logger.info("outbound notice channel=%s conversation=%s message=%s", CHANNEL, conversation.id, item.message_id)

    async def send_chunks(
        self,
        recipient: str,
        conversation: Conversation | None,
        chunks: list[str],
        markup: InlineKeyboardMarkup | None = None,
    ) -> list[Message]:
        chat_id = chat_of(recipient)
        conversation_id = conversation.id if conversation is not None else None
        sent = []
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1

            async def request(chunk: str = chunk, last: bool = last) -> Message:
                return await self.bot.send_message(
                    chat_id, chunk, parse_mode=ParseMode.HTML, reply_markup=markup if last else None
                )

            try:
                sent.append(await self.call(request, conversation_id, "sendMessage"))
            except Forbidden as exc:
                await self._mark_blocked(conversation)
                raise RecipientBlocked(f"conversation {conversation_id}: Telegram rejected the message with 403 ({exc})") from None
            except BadRequest as exc:
                if "chat not found" in str(exc).lower():
                    raise ConnectorError(
                        f"conversation {conversation_id}: Telegram chat {chat_id} not found; "
                        "the user never wrote to this bot, or the chat was deleted"
                    ) from None
                raise ConnectorError(f"conversation {conversation_id}: Telegram rejected the message: {exc}") from None
            except TelegramError as exc:
                raise ConnectorError(f"conversation {conversation_id}: sending to Telegram failed: {exc}") from None
            logger.debug("conversation %s: telegram message %s sent", conversation_id, sent[-1].message_id)
        return sent

    async def call(self, request: Callable[[], Awaitable[_T]], conversation_id: str | None, method: str) -> _T:
        """Run one Bot API request, and retry after a 429 or a network error, ``max_retries`` times at most.

        Other Telegram errors, and the last one when retries run out, are raised unchanged.
        NOTE: a request that timed out may have reached Telegram, so a retried send can arrive twice.
        """
        attempt = 0
        while True:
            try:
                return await request()
            except RetryAfter as exc:
                wait = retry_after_seconds(exc)
                if attempt >= self.settings.max_retries or wait > self.settings.max_retry_after:
                    raise
                logger.warning(
                    "conversation %s: Telegram flood control on %s; retry %d of %d in %.0f s",
                    conversation_id, method, attempt + 1, self.settings.max_retries, wait,
                )
                await asyncio.sleep(wait)
            except BadRequest:
                raise
            except NetworkError as exc:
                if attempt >= self.settings.max_retries:
                    raise
                delay = min(FIRST_NETWORK_RETRY_DELAY * 2**attempt, MAX_NETWORK_RETRY_DELAY)
                logger.warning(
                    "conversation %s: network error on %s (%s); retry %d of %d in %.0f s",
                    conversation_id, method, exc, attempt + 1, self.settings.max_retries, delay,
                )
                await asyncio.sleep(delay)
            attempt += 1

    async def _mark_blocked(self, conversation: Conversation | None) -> None:
        if conversation is None or conversation.status == BLOCKED:
            return
        # Keep the status it had, so that a user who unblocks the bot gets back to where they were.
        await self.store.set_state(_status_key(conversation.id), conversation.status)
        await self.store.update_conversation(conversation.id, status=BLOCKED)
        conversation.status = BLOCKED
        logger.info("conversation %s marked blocked on telegram", conversation.id)

    async def unblock(self, conversation: Conversation) -> None:
        """Give back its former status to a blocked conversation whose user wrote again."""
        if conversation.status != BLOCKED:
            return
        status = await self.store.get_state(_status_key(conversation.id)) or "active"
        await self.store.update_conversation(conversation.id, status=status)
        conversation.status = status
        logger.info("conversation %s: the user wrote again on telegram; status back to %s", conversation.id, status)


def _status_key(conversation_id: str) -> str:
    return f"telegram:status-before-block:{conversation_id}"

