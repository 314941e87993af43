"""Turn Telegram updates into assistant turns, command replies and notices about files.

Each update is handled once. Its ``update_id`` is recorded in the store before anything else, so a
webhook delivered twice, or a poll replayed after a crash, is ignored the second time.
"""

from __future__ import annotations

import logging
import mimetypes
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from telegram import Bot, CallbackQuery, Message, MessageEntity, Update
from telegram.constants import ChatType
from telegram.error import TelegramError

from bot.assistant import Assistant
from bot.config import TelegramSettings
from bot.dialogue.responses import ResponseRenderer
from bot.errors import EntraideError
from bot.messages import IncomingMessage
from bot.storage.store import Store
from bot.storage.tables import Conversation
from connectors.telegram import texts
from connectors.telegram.outbound import CHANNEL, Sender, sender_id_for

logger = logging.getLogger(__name__)

# The update types that the connector requests from Telegram, which delivers no other type.
ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
HANDOFF = "handoff"
# Command names that users may type, mapped to the command they run. "help" and "cancel" are the usual English names.
COMMAND_NAMES = {"start": "start", "aide": "aide", "help": "aide", "restart": "restart", "annuler": "annuler", "cancel": "annuler"}
# Commands that the assistant runs, with the payload it reads for them.
ASSISTANT_COMMANDS = {"restart": "/restart", "annuler": "/stop"}
# Checked in this order: Telegram sets both ``animation`` and ``document`` on a GIF.
ATTACHMENT_FIELDS = ("animation", "document", "video", "video_note", "audio", "voice", "sticker")
# Other content that a user sends on purpose; service messages (a timer changed, a member joined) have none.
OTHER_CONTENT_FIELDS = ("location", "venue", "contact", "poll", "dice", "game", "story")
_SPACES = re.compile(r"\s{2,}")


@dataclass(frozen=True)
class Attachment:
    """A file in a message. ``content_type`` and ``filename`` are None when Telegram sends none."""

    kind: str
    file_id: str
    size: int | None
    filename: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class Command:
    """A command at the start of a message. ``target`` is the bot named after ``@``, if any."""

    name: str
    target: str | None


def attachment_of(message: Message) -> Attachment | None:
    """Return the file a message carries, the largest size for a photo, or None."""
    if message.photo:
        largest = message.photo[-1]
        return Attachment("photo", largest.file_id, largest.file_size)
    for kind in ATTACHMENT_FIELDS:
        item = getattr(message, kind)
        if item is not None:
            return Attachment(kind, item.file_id, item.file_size, getattr(item, "file_name", None), getattr(item, "mime_type", None))
    return None


def command_of(message: Message) -> Command | None:
    """Return the bot command that starts the message text, or None."""
    for entity in message.entities:
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            name, _, target = message.parse_entity(entity).removeprefix("/").partition("@")
            return Command(name.lower(), target or None)
    return None


def strip_mention(text: str, username: str) -> str:
    """Remove ``@username`` from ``text``, case-insensitively, and tidy the spaces left behind."""
    stripped = re.sub(rf"@{re.escape(username)}\b", " ", text, flags=re.IGNORECASE)
    return _SPACES.sub(" ", stripped).strip()


class UpdateHandler:
    """Handle one update: a message, a command, a file or a button press."""

    def __init__(self, settings: TelegramSettings, assistant: Assistant, store: Store, bot: Bot, sender: Sender) -> None:
        self.settings = settings
        self.assistant = assistant
        self.store = store
        self.bot = bot
        self.sender = sender
        self._renderer = ResponseRenderer(assistant.project.domain)

    async def handle(self, update: Update) -> None:
        if not await self.store.mark_processed(CHANNEL, f"update:{update.update_id}"):
            logger.info("duplicate telegram update %s ignored", update.update_id)
            return
        if update.callback_query is not None:
            await self._button(update.callback_query)
        elif update.message is not None:
            await self._message(update.message)
        elif update.edited_message is not None:
            # Answering edits would answer the same question twice.
            logger.info("telegram update %s ignored: an edited message", update.update_id)
        else:
            logger.debug("telegram update %s ignored: neither a message nor a button press", update.update_id)

    # ----- messages -----

    async def _message(self, message: Message) -> None:
        user = message.from_user
        if user is None or user.is_bot:
            logger.debug("telegram message %s ignored: not written by a person", message.message_id)
            return
        private = message.chat.type == ChatType.PRIVATE
        if message.chat.type not in (ChatType.PRIVATE, ChatType.GROUP, ChatType.SUPERGROUP):
            return
        command = command_of(message)
        if command is not None and command.target is not None and command.target.lower() != self.bot.username.lower():
            logger.debug("telegram message %s ignored: a command for another bot", message.message_id)
            return
        if not private and not self._group_allows(message, command):
            logger.debug("telegram message %s in group %s ignored: not addressed to the bot", message.message_id, message.chat.id)
            return
        if message.text is None and attachment_of(message) is None and not _has_other_content(message):
            logger.debug("telegram message %s ignored: a service message", message.message_id)
            return

        sender = sender_id_for(message.chat.id, user.id, private)
        conversation = await self.store.conversation(CHANNEL, sender)
        await self.sender.unblock(conversation)
        message_id = f"{message.chat.id}:{message.message_id}"
        if command is not None:
            await self._command(command, sender, conversation, message_id)
        elif message.text is not None:
            text = message.text if private else strip_mention(message.text, self.bot.username)
            await self.assistant.handle(IncomingMessage(CHANNEL, sender, text, message_id=message_id))
        else:
            await self._attachment(message, sender, conversation, message_id, private)

    def _group_allows(self, message: Message, command: Command | None) -> bool:
        """Tell whether a group message is for the bot: a command, a mention or a reply to the bot."""
        if self.settings.groups == "ignore":
            return False
        if command is not None:
            return True
        own_mention = f"@{self.bot.username}".lower()
        mentions = [*message.parse_entities().items(), *message.parse_caption_entities().items()]
        for entity, value in mentions:
            if entity.type == MessageEntity.MENTION and value.lower() == own_mention:
                return True
            if entity.type == MessageEntity.TEXT_MENTION and entity.user is not None and entity.user.id == self.bot.id:
                return True
        reply = message.reply_to_message
        return reply is not None and reply.from_user is not None and reply.from_user.id == self.bot.id

    async def _command(self, command: Command, sender: str, conversation: Conversation, message_id: str) -> None:
        name = COMMAND_NAMES.get(command.name)
        if name in ASSISTANT_COMMANDS:
            incoming = IncomingMessage(CHANNEL, sender, f"/{name}", message_id=message_id, payload=ASSISTANT_COMMANDS[name])
            await self.assistant.handle(incoming)
            return
        logger.info("inbound command channel=%s conversation=%s message=%s", CHANNEL, conversation.id, message_id)
        if name == "start":
            await self.sender.notify(sender, conversation, f"{texts.WELCOME}\n\n{self._privacy_notice()}")
        elif name == "aide":
            await self.sender.notify(sender, conversation, texts.HELP)
        else:
            await self.sender.notify(sender, conversation, texts.UNKNOWN_COMMAND)

    def _privacy_notice(self) -> str:
        # domain.yml contains the notice, so the retention period that an administrator sets there shows here too.
        rendered = self._renderer.render("utter_privacy", {}, channel=CHANNEL)
        return rendered[0] if rendered else texts.PRIVACY

    # ----- files -----

    async def _attachment(
        self, message: Message, sender: str, conversation: Conversation, message_id: str, private: bool
    ) -> None:
        attachment = attachment_of(message)
        kind = attachment.kind if attachment is not None else "unsupported content"
        logger.info("inbound %s channel=%s conversation=%s message=%s", kind, CHANNEL, conversation.id, message_id)
        if attachment is not None and conversation.status == HANDOFF and self.assistant.desk is not None:
            await self._relay(message, attachment, sender, conversation)
        else:
            notice = texts.TEXT_ONLY.format(kind=texts.ATTACHMENT_KINDS.get(kind, texts.OTHER_CONTENT))
            await self.sender.notify(sender, conversation, notice)
        if message.caption:
            caption = message.caption if private else strip_mention(message.caption, self.bot.username)
            await self.assistant.handle(IncomingMessage(CHANNEL, sender, caption, message_id=message_id))

    async def _relay(self, message: Message, attachment: Attachment, sender: str, conversation: Conversation) -> None:
        """Download a file and pass it to the desk of the open request; tell the user what happened."""
        limit = self.settings.max_attachment_bytes
        too_large = texts.ATTACHMENT_TOO_LARGE.format(limit=max(limit // (1024 * 1024), 1))
        if attachment.size is not None and attachment.size > limit:
            await self.sender.notify(sender, conversation, too_large)
            return
        try:
            telegram_file = await self.sender.call(lambda: self.bot.get_file(attachment.file_id), conversation.id, "getFile")
            data = bytes(await telegram_file.download_as_bytearray())
        except TelegramError as exc:
            logger.warning("conversation %s: downloading a %s from telegram failed: %s", conversation.id, attachment.kind, exc)
            await self.sender.notify(sender, conversation, texts.ATTACHMENT_FAILED)
            return
        if len(data) > limit:
            await self.sender.notify(sender, conversation, too_large)
            return

        suffix = PurePosixPath(telegram_file.file_path or "").suffix
        filename = attachment.filename or f"{attachment.kind}-{message.message_id}{suffix}"
        content_type = attachment.content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        try:
            accepted = await self.assistant.desk.relay_attachment(conversation.id, filename, content_type, data, conversation.last_seq)
        except EntraideError as exc:
            logger.error("conversation %s: the desk failed to take a %s: %s", conversation.id, attachment.kind, exc)
            await self.sender.notify(sender, conversation, texts.ATTACHMENT_FAILED)
            return
        logger.info(
            "conversation %s: %s of %d bytes %s", conversation.id, attachment.kind, len(data),
            "relayed to the desk" if accepted else "rejected by the desk",
        )
        await self.sender.notify(sender, conversation, texts.ATTACHMENT_FORWARDED if accepted else texts.ATTACHMENT_REJECTED)

    # ----- buttons -----

    async def _button(self, query: CallbackQuery) -> None:
        try:
            # Call answerCallbackQuery first, because the user's client shows a spinner until then.
            await query.answer()
        except TelegramError as exc:
            logger.debug("answering telegram callback query %s failed: %s", query.id, exc)
        message = query.message
        if message is None:
            logger.debug("telegram callback query %s ignored: its message is not in a chat", query.id)
            return
        private = message.chat.type == ChatType.PRIVATE
        if not private and self.settings.groups == "ignore":
            return

        sender = sender_id_for(message.chat.id, query.from_user.id, private)
        conversation = await self.store.conversation(CHANNEL, sender)
        await self.sender.unblock(conversation)
        payload = await self.sender.payloads.decode(query.data) if query.data else None
        if payload is None:
            logger.info("inbound expired button channel=%s conversation=%s message=callback:%s", CHANNEL, conversation.id, query.id)
            await self.sender.notify(sender, conversation, texts.EXPIRED_BUTTON)
            return
        title = _button_title(message, query.data) or payload
        incoming = IncomingMessage(CHANNEL, sender, title, message_id=f"callback:{query.id}", payload=payload)
        await self.assistant.handle(incoming)


def _has_other_content(message: Message) -> bool:
    return any(getattr(message, field) is not None for field in OTHER_CONTENT_FIELDS)


def _button_title(message: object, data: str) -> str | None:
    """Return the title of the button with callback ``data`` under ``message``, when it is still known."""
    if not isinstance(message, Message) or message.reply_markup is None:
        return None
    for row in message.reply_markup.inline_keyboard:
        for button in row:
            if button.callback_data == data:
                return button.text
    return None
