"""Serve a local implementation of Telegram's Bot API over HTTP, for tests.

python-telegram-bot talks to it as it would to api.telegram.org once
``ApplicationBuilder().base_url()`` and ``.base_file_url()`` point at
:attr:`FakeBotApi.base_url` and :attr:`FakeBotApi.base_file_url`. A test injects updates
(``inject_text``, ``inject_callback_query``...) and observes the calls the bot made
(``calls``, ``wait_for``). Without a webhook, injected updates wait for ``getUpdates``;
with one, they are POSTed to it one at a time.

Responses use the Bot API envelope, and error descriptions follow those that Telegram
documents or is publicly reported to send. None of them was checked against Telegram.

Limits of this fake:

- one webhook delivery at a time, where Telegram opens up to 40 connections;
- plain HTTP on loopback only, no TLS;
- the HTML, MarkdownV2 and Markdown checks cover a subset of Telegram's parsers, and
  message results carry no ``entities``;
- text length is counted in code points;
- flood control is a fixed interval per chat.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import logging
import math
import re
import struct
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_TOKEN = "7000000001:AAE-entraide-local-test-token"

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_DATA_BYTES = 64
# Telegram's upload limit for bots through the cloud Bot API.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024

# Update types that Telegram leaves out unless allowed_updates names them.
_OPT_IN_UPDATE_TYPES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

_CHAT_ACTIONS = frozenset({
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
    "upload_document", "choose_sticker", "find_location", "record_video_note",
    "upload_video_note",
})

_BUTTON_ACTIONS = frozenset({
    "url", "callback_data", "web_app", "login_url", "switch_inline_query",
    "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "copy_text",
    "callback_game", "pay",
})

# Form and query-string values arrive as strings. These names are decoded so that recorded
# params hold the same types whether the client sent JSON, a form or a query string.
_JSON_PARAMS = frozenset({
    "reply_markup", "allowed_updates", "commands", "scope", "entities", "caption_entities",
    "reply_parameters", "link_preview_options", "media",
})
_NUMBER_PARAMS = frozenset({
    "message_id", "offset", "limit", "timeout", "max_connections", "cache_time",
    "message_thread_id", "reply_to_message_id", "user_id", "duration",
})
_BOOL_PARAMS = frozenset({
    "drop_pending_updates", "show_alert", "disable_notification", "protect_content",
    "allow_sending_without_reply", "disable_web_page_preview", "has_spoiler",
    "disable_content_type_detection",
})

_HTML_TAGS = frozenset({
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a",
    "tg-emoji", "tg-time", "code", "pre", "blockquote",
})
_HTML_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_HTML_ENTITY_RE = re.compile(r"&(?:#(\d+)|#[xX]([0-9A-Fa-f]+)|([A-Za-z]+));")
_HTML_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_HTML_ATTRIBUTE_RE = re.compile(
    r"""([A-Za-z][A-Za-z0-9-]*)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+))?"""
)
_MARKDOWN_LINK_RE = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")
_MARKDOWN_V2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MARKDOWN_V2_ENTITY_NAMES = {
    "*": "Bold", "_": "Italic", "__": "Underline", "~": "Strikethrough", "||": "Spoiler",
    "[": "TextUrl", "![": "CustomEmoji",
}
_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")
_SECRET_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_RETRY_AFTER_RE = re.compile(r"retry after (\d+)", re.IGNORECASE)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_T = TypeVar("_T")


class BotApiError(Exception):
    """An error response of the Bot API, sent with ``error_code`` as the HTTP status."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(f"{code} {description}")
        self.code = code
        self.description = description
        self.parameters = parameters

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def _bad_request(reason: str) -> BotApiError:
    return BotApiError(400, f"Bad Request: {reason}")


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request, as the fake received it."""

    filename: str | None
    content_type: str
    content: bytes


@dataclass
class RecordedCall:
    """A Bot API request, recorded when it arrives and completed when the fake responds.

    ``time`` is ``time.monotonic()`` at arrival. ``status`` and ``response`` stay ``None``
    while the request is pending, for instance during a long poll.
    """

    method: str
    params: dict[str, Any]
    time: float
    status: int | None = None
    response: dict[str, Any] | None = None

    @property
    def answered(self) -> bool:
        return self.response is not None

    @property
    def ok(self) -> bool:
        return self.response is not None and self.response["ok"]

    @property
    def result(self) -> Any:
        """The ``result`` of a successful response, such as the sent message."""
        if not self.ok:
            raise ValueError(f"{self.method} call has no result: {self.response!r}")
        return self.response["result"]


@dataclass(frozen=True)
class WebhookDelivery:
    """One POST of an update to the webhook; ``status`` is ``None`` when no HTTP response came."""

    update_id: int
    url: str
    status: int | None
    error: str | None
    time: float


@dataclass
class _Webhook:
    url: str
    secret_token: str | None
    max_connections: int
    ip_address: str | None
    last_error_date: int | None = None
    last_error_message: str | None = None


@dataclass(frozen=True)
class _StoredFile:
    file_id: str
    file_unique_id: str
    path: str
    content: bytes
    content_type: str


@dataclass(frozen=True)
class _Answer:
    """A successful result with the optional ``description`` that some methods add."""

    result: Any
    description: str | None = None


class _ChangeSignal:
    """Wake every waiter once the fake's state changes (a call, an update, a delivery)."""

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    def notify(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._waiter = None

    async def wait(self, timeout: float | None) -> None:
        """Wait for the next change; raise ``TimeoutError`` after ``timeout`` seconds."""
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        # shield: a waiter that times out must not cancel the future the others share.
        await asyncio.wait_for(asyncio.shield(self._waiter), timeout)


# --- Text checks -------------------------------------------------------------------------


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _cannot_parse(reason: str) -> BotApiError:
    return _bad_request(f"can't parse entities: {reason}")


def _decode_html_entity(text: str, index: int) -> tuple[str, int]:
    """Decode the entity at ``text[index]`` (an ``&``); return it and the index after it.

    NOTE: an ``&`` that starts no supported entity is kept as a literal character. The
    Bot API documentation requires ``&amp;`` there, but whether Telegram rejects the bare
    character was not checked.
    """
    match = _HTML_ENTITY_RE.match(text, index)
    if match is None:
        return "&", index + 1
    decimal, hexadecimal, name = match.groups()
    if name is not None:
        if name not in _HTML_ENTITIES:
            return "&", index + 1
        return _HTML_ENTITIES[name], match.end()
    code_point = int(decimal) if decimal is not None else int(hexadecimal, 16)
    if code_point > 0x10FFFF:
        raise _cannot_parse(f"Unsupported HTML entity at byte offset {_byte_offset(text, index)}")
    return chr(code_point), match.end()


def _read_html_tag(text: str, start: int) -> tuple[bool, str, dict[str, str], int]:
    """Read the tag at ``text[start]`` (a ``<``); return (is_end, name, attributes, next index)."""
    position = start + 1
    is_end = text.startswith("/", position)
    if is_end:
        position += 1
    name_match = _HTML_NAME_RE.match(text, position)
    if name_match is None:
        raise _cannot_parse(
            f"Unsupported start tag at byte offset {_byte_offset(text, start)}"
        )
    name = name_match.group().lower()
    position = name_match.end()
    attributes: dict[str, str] = {}
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            raise _cannot_parse(f"Unclosed start tag at byte offset {_byte_offset(text, start)}")
        if text[position] == ">":
            return is_end, name, attributes, position + 1
        attribute = _HTML_ATTRIBUTE_RE.match(text, position)
        if attribute is None or is_end:
            raise _cannot_parse(
                f"Unexpected character in tag \"{name}\" at byte offset "
                f"{_byte_offset(text, position)}"
            )
        value = attribute.group(2) or ""
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        attributes[attribute.group(1).lower()] = value
        position = attribute.end()


def _parse_html(text: str) -> str:
    """Check Telegram's HTML subset and return the text without markup.

    Raise ``BotApiError`` 400 for an unsupported tag, a ``span`` that is not a spoiler, a
    ``tg-emoji`` without ``emoji-id`` and unbalanced tags. Nesting rules between entities
    are not checked.
    """
    plain: list[str] = []
    open_tags: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "&":
            decoded, index = _decode_html_entity(text, index)
            plain.append(decoded)
            continue
        if char != "<":
            plain.append(char)
            index += 1
            continue

        is_end, name, attributes, next_index = _read_html_tag(text, index)
        offset = _byte_offset(text, index)
        if is_end:
            if not open_tags:
                raise _cannot_parse(f"Unexpected end tag at byte offset {offset}")
            if open_tags[-1] != name:
                raise _cannot_parse(
                    f"Unmatched end tag at byte offset {offset}, expected \"</{open_tags[-1]}>\", "
                    f"found \"</{name}>\""
                )
            open_tags.pop()
        else:
            if name not in _HTML_TAGS:
                raise _cannot_parse(f"Unsupported start tag \"{name}\" at byte offset {offset}")
            if name == "span" and attributes.get("class") != "tg-spoiler":
                raise _cannot_parse(
                    f"Tag \"span\" must have class \"tg-spoiler\" at byte offset {offset}"
                )
            if name == "tg-emoji" and not attributes.get("emoji-id"):
                raise _cannot_parse(
                    f"Tag \"tg-emoji\" must have attribute \"emoji-id\" at byte offset {offset}"
                )
            open_tags.append(name)
        index = next_index

    if open_tags:
        raise _cannot_parse(f"Can't find end tag corresponding to start tag \"{open_tags[-1]}\"")
    return "".join(plain)


def _read_markdown_v2_code(text: str, start: int, plain: list[str]) -> int:
    """Read a code (`) or pre (```) entity at ``text[start]``; return the index after it."""
    fence = "```" if text.startswith("```", start) else "`"
    index = start + len(fence)
    if fence == "```":
        # The rest of the opening line names the language of the block.
        newline = text.find("\n", index)
        if newline != -1 and not text.startswith("```", index):
            language = text[index:newline]
            if "`" not in language and " " not in language.strip():
                index = newline + 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and 1 <= ord(text[index + 1]) <= 126:
            plain.append(text[index + 1])
            index += 2
        elif text.startswith(fence, index):
            return index + len(fence)
        elif char == "`":
            raise _cannot_parse(
                f"Character '`' is reserved and must be escaped with the preceding '\\'"
            )
        else:
            plain.append(char)
            index += 1
    name = "Pre" if fence == "```" else "Code"
    raise _cannot_parse(
        f"Can't find end of {name} entity at byte offset {_byte_offset(text, start)}"
    )


def _read_markdown_v2_url(text: str, start: int) -> int:
    """Read the ``(url)`` part of a link at ``text[start]``; return the index after it."""
    if not text.startswith("(", start):
        raise _cannot_parse(
            f"Can't find end of a URL at byte offset {_byte_offset(text, start)}"
        )
    index = start + 1
    while index < len(text):
        if text[index] == "\\" and index + 1 < len(text):
            index += 2
        elif text[index] == ")":
            return index + 1
        else:
            index += 1
    raise _cannot_parse(f"Can't find end of a URL at byte offset {_byte_offset(text, start)}")


def _parse_markdown_v2(text: str) -> str:
    """Check MarkdownV2 escaping and balance and return the text without markup."""
    plain: list[str] = []
    open_entities: list[tuple[str, int]] = []
    in_expandable_quote = False
    index = 0
    while index < len(text):
        char = text[index]
        at_line_start = index == 0 or text[index - 1] == "\n"
        if at_line_start and not text.startswith(">", index) and not text.startswith("**>", index):
            in_expandable_quote = False

        if char == "\\":
            if index + 1 < len(text) and 1 <= ord(text[index + 1]) <= 126:
                plain.append(text[index + 1])
                index += 2
                continue
            raise _cannot_parse("Character '\\' is reserved and must be escaped with the preceding '\\'")
        if char == "`":
            index = _read_markdown_v2_code(text, index, plain)
            continue
        if at_line_start and text.startswith("**>", index):
            in_expandable_quote = True
            index += 3
            continue
        if at_line_start and char == ">":
            index += 1
            continue
        if text.startswith("||", index):
            closes_quote = in_expandable_quote and text[index + 2:index + 3] in ("", "\n")
            spoiler_open = any(marker == "||" for marker, _ in open_entities)
            if closes_quote and not spoiler_open:
                index += 2
                continue
            marker = "||"
        elif text.startswith("__", index):
            marker = "__"
        elif char in "*_~":
            marker = char
        elif char == "[" or text.startswith("![", index):
            marker = "[" if char == "[" else "!["
            open_entities.append((marker, index))
            index += len(marker)
            continue
        elif char == "]" and open_entities and open_entities[-1][0] in ("[", "!["):
            open_entities.pop()
            index = _read_markdown_v2_url(text, index + 1)
            continue
        elif char in _MARKDOWN_V2_RESERVED:
            raise _cannot_parse(
                f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
        else:
            plain.append(char)
            index += 1
            continue

        # A formatting marker opens an entity or closes the innermost open one.
        if open_entities and open_entities[-1][0] == marker:
            open_entities.pop()
        elif any(open_marker == marker for open_marker, _ in open_entities):
            inner, inner_start = open_entities[-1]
            raise _cannot_parse(
                f"Can't find end of {_MARKDOWN_V2_ENTITY_NAMES[inner]} entity at byte offset "
                f"{_byte_offset(text, inner_start)}"
            )
        else:
            open_entities.append((marker, index))
        index += len(marker)

    if open_entities:
        marker, start = open_entities[-1]
        raise _cannot_parse(
            f"Can't find end of {_MARKDOWN_V2_ENTITY_NAMES[marker]} entity at byte offset "
            f"{_byte_offset(text, start)}"
        )
    return "".join(plain)


def _parse_markdown(text: str) -> str:
    """Check legacy Markdown entities are closed and return the text without markup.

    NOTE: square brackets that do not form ``[text](url)`` are kept as text; how Telegram
    treats them in legacy Markdown was not checked.
    """
    plain: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and text[index + 1:index + 2] in ("_", "*", "`", "["):
            plain.append(text[index + 1])
            index += 2
            continue
        fence = "```" if text.startswith("```", index) else char
        if fence in ("```", "*", "_", "`"):
            end = text.find(fence, index + len(fence))
            if end == -1:
                raise _cannot_parse(
                    f"Can't find end of the entity starting at byte offset {_byte_offset(text, index)}"
                )
            plain.append(text[index + len(fence):end])
            index = end + len(fence)
            continue
        link = _MARKDOWN_LINK_RE.match(text, index)
        if link is not None:
            plain.append(link.group(1))
            index = link.end()
            continue
        plain.append(char)
        index += 1
    return "".join(plain)


def _plain_text(text: str, parse_mode: str | None) -> str:
    """Return ``text`` as Telegram would display it, after checking its markup."""
    if not parse_mode:
        return text
    mode = parse_mode.lower()
    if mode == "html":
        return _parse_html(text)
    if mode == "markdownv2":
        return _parse_markdown_v2(text)
    if mode == "markdown":
        return _parse_markdown(text)
    raise _bad_request(f"unsupported parse_mode {parse_mode!r}")


def _checked_text(params: dict[str, Any]) -> str:
    text = params.get("text")
    if text is None or str(text) == "":
        raise _bad_request("message text is empty")
    plain = _plain_text(str(text), params.get("parse_mode"))
    if not plain.strip():
        raise _bad_request("message text is empty")
    if len(plain) > MAX_TEXT_LENGTH:
        raise _bad_request("message is too long")
    return plain


def _checked_caption(params: dict[str, Any]) -> str | None:
    caption = params.get("caption")
    if caption is None or str(caption) == "":
        return None
    plain = _plain_text(str(caption), params.get("parse_mode"))
    if len(plain) > MAX_CAPTION_LENGTH:
        raise _bad_request("message caption is too long")
    return plain


def _checked_reply_markup(markup: Any) -> dict[str, Any] | None:
    """Validate ``reply_markup``; return it when it is an inline keyboard, which results echo."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise _bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" not in markup:
        return None
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise _bad_request(
            "field \"inline_keyboard\" of the InlineKeyboardMarkup must be an Array of Arrays"
        )
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                raise _bad_request(
                    "can't parse inline keyboard button: Field \"text\" must be of type String"
                )
            actions = _BUTTON_ACTIONS.intersection(button)
            if not actions:
                raise _bad_request(
                    "can't parse inline keyboard button: "
                    "Text buttons are unallowed in the inline keyboard"
                )
            if len(actions) > 1:
                raise _bad_request(
                    f"can't parse inline keyboard button: more than one action in {sorted(actions)}"
                )
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES:
                raise _bad_request("BUTTON_DATA_INVALID")
    return markup


# --- Request parameters ------------------------------------------------------------------


def _normalize(name: str, value: Any) -> Any:
    """Decode a string parameter to the type its name has in the Bot API."""
    if not isinstance(value, str):
        return value
    try:
        if name in _JSON_PARAMS:
            return json.loads(value)
        if name in _NUMBER_PARAMS:
            return int(value) if re.fullmatch(r"-?\d+", value.strip()) else float(value)
    except ValueError:
        raise _bad_request(f"can't parse parameter {name!r}: {value!r}") from None
    if name in _BOOL_PARAMS:
        if value.lower() in ("true", "1"):
            return True
        if value.lower() in ("false", "0", ""):
            return False
        raise _bad_request(f"can't parse parameter {name!r} as a Boolean: {value!r}")
    if name == "chat_id" and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return value


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Merge the query string and the body (JSON, urlencoded or multipart) of a call."""
    raw: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise _bad_request("can't parse JSON object") from None
            if not isinstance(body, dict):
                raise _bad_request("the JSON body must be an object")
            raw.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    raw[name] = UploadedFile(value.filename, value.content_type, value.file.read())
                else:
                    raw[name] = value

    params = {name: _normalize(name, value) for name, value in raw.items()}
    # Input media and files may point at another part: "attach://<part name>".
    for name, value in params.items():
        if isinstance(value, str) and value.startswith("attach://"):
            part = raw.get(value.removeprefix("attach://"))
            if isinstance(part, UploadedFile):
                params[name] = part
    return params


# --- Files -------------------------------------------------------------------------------


def _solid_png(width: int, height: int, rgb: tuple[int, int, int] = (37, 99, 235)) -> bytes:
    """Encode a valid PNG image of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        checksum = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def _png_size(content: bytes) -> tuple[int, int]:
    """Return (width, height) of a PNG image, or (0, 0) for another format."""
    if content.startswith(_PNG_SIGNATURE) and len(content) >= 24:
        width, height = struct.unpack(">II", content[16:24])
        return width, height
    return 0, 0


# --- The server --------------------------------------------------------------------------


class FakeBotApi:
    """Serve the Bot API on 127.0.0.1 at a free port, for one bot token.

    Use it as an async context manager. Chats become known to the fake when an injected
    update comes from them, so ``sendMessage`` to any other chat gets "chat not found", as
    Telegram answers for a user who never wrote to the bot.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_username: str = "entraide_test_bot",
        bot_first_name: str = "Entraide",
        flood_interval_per_chat: float | None = None,
        webhook_retry_interval: float = 0.5,
        webhook_timeout: float = 10.0,
    ) -> None:
        self.token = token
        self.bot_user: dict[str, Any] = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.default_user = self.user(1001, "Camille")
        self.calls: list[RecordedCall] = []
        self.deliveries: list[WebhookDelivery] = []
        self.injected: list[dict[str, Any]] = []

        self._flood_interval = flood_interval_per_chat
        self._webhook_retry_interval = webhook_retry_interval
        self._webhook_timeout = webhook_timeout
        self._signal = _ChangeSignal()
        self._ids = itertools.count(1)
        self._next_update_id = 1
        self._pending: deque[dict[str, Any]] = deque()
        self._allowed_updates: list[str] = []
        self._poll_generation = 0
        self._webhook: _Webhook | None = None
        self._chats: dict[int, dict[str, Any]] = {}
        self._message_ids: defaultdict[int, itertools.count[int]] = defaultdict(
            lambda: itertools.count(1)
        )
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._callback_queries: dict[str, dict[str, Any]] = {}
        self._answered_queries: set[str] = set()
        self._blocked: set[int] = set()
        self._failures: defaultdict[str, deque[BotApiError]] = defaultdict(deque)
        self._last_send: dict[int, float] = {}
        self._files: dict[str, _StoredFile] = {}
        self._commands: dict[tuple[str, str], list[dict[str, str]]] = {}
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._delivery_task: asyncio.Task[None] | None = None
        self._port: int | None = None

        self._methods: dict[str, tuple[str, Callable[[dict[str, Any]], Awaitable[Any]]]] = {
            name.lower(): (name, implementation)
            for name, implementation in {
                "getMe": self._get_me,
                "getUpdates": self._get_updates,
                "sendMessage": self._send_message,
                "sendChatAction": self._send_chat_action,
                "answerCallbackQuery": self._answer_callback_query,
                "editMessageText": self._edit_message_text,
                "editMessageReplyMarkup": self._edit_message_reply_markup,
                "setWebhook": self._set_webhook,
                "deleteWebhook": self._delete_webhook,
                "getWebhookInfo": self._get_webhook_info,
                "setMyCommands": self._set_my_commands,
                "getMyCommands": self._get_my_commands,
                "deleteMyCommands": self._delete_my_commands,
                "getFile": self._get_file,
                "sendDocument": self._send_document,
                "sendPhoto": self._send_photo,
                "close": self._close,
                "logOut": self._log_out,
            }.items()
        }

    # --- Lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> FakeBotApi:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind 127.0.0.1 at a free port and start the webhook delivery task."""
        if self._runner is not None:
            raise RuntimeError("FakeBotApi is already started; call stop() before starting it again")
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        app.router.add_route("*", "/file/bot{token}/{path:.+}", self._handle_file)
        # handler_cancellation: a long poll that PTB abandons on stop ends at once.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        await web.TCPSite(runner, LOOPBACK, 0).start()
        self._runner = runner
        self._port = runner.addresses[0][1]
        self._closing = False
        self._session = aiohttp.ClientSession()
        self._delivery_task = asyncio.create_task(
            self._deliver_to_webhook(), name=f"FakeBotApi:{self._port}:webhook_delivery"
        )
        logger.info("Fake Bot API started on %s", self.base_url)

    async def stop(self) -> None:
        """Answer open long polls, stop webhook delivery and close the server."""
        if self._runner is None:
            return
        self._closing = True
        self._signal.notify()
        if self._delivery_task is not None:
            self._delivery_task.cancel()
            await asyncio.wait({self._delivery_task})
            self._delivery_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._runner.cleanup()
        self._runner = None
        logger.info("Fake Bot API on port %s stopped", self._port)

    @property
    def base_url(self) -> str:
        """URL for ``ApplicationBuilder().base_url()``; PTB appends the token itself."""
        return f"http://{LOOPBACK}:{self._require_port()}/bot"

    @property
    def base_file_url(self) -> str:
        """URL for ``ApplicationBuilder().base_file_url()``."""
        return f"http://{LOOPBACK}:{self._require_port()}/file/bot"

    def _require_port(self) -> int:
        if self._port is None or self._runner is None:
            raise RuntimeError("FakeBotApi is not started; use `async with FakeBotApi() as fake` first")
        return self._port

    # --- Test-side API: users and chats ------------------------------------------------

    @staticmethod
    def user(
        user_id: int,
        first_name: str = "Camille",
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "fr",
    ) -> dict[str, Any]:
        """Build a Bot API ``User`` who is a person, not a bot."""
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if last_name is not None:
            user["last_name"] = last_name
        if username is not None:
            user["username"] = username
        if language_code is not None:
            user["language_code"] = language_code
        return user

    @staticmethod
    def private_chat(user: dict[str, Any]) -> dict[str, Any]:
        """Build the private ``Chat`` between the bot and ``user``."""
        chat = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        for key in ("last_name", "username"):
            if key in user:
                chat[key] = user[key]
        return chat

    @staticmethod
    def group_chat(
        chat_id: int | None = None, title: str = "Salle des professeurs", *, supergroup: bool = False
    ) -> dict[str, Any]:
        """Build a group ``Chat``; supergroup ids start with -100 as Telegram's do."""
        if chat_id is None:
            chat_id = -1001000000001 if supergroup else -4001
        return {"id": chat_id, "type": "supergroup" if supergroup else "group", "title": title}

    def block_user(self, user_id: int) -> None:
        """Make sends to the private chat of ``user_id`` fail with 403, as after a block."""
        self._blocked.add(user_id)

    def unblock_user(self, user_id: int) -> None:
        self._blocked.discard(user_id)

    def fail_next(
        self,
        method: str,
        code: int,
        description: str,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next call of ``method`` with this error instead of running it.

        Failures queue up per method. A 429 always carries ``parameters.retry_after``: taken
        from ``parameters``, else from "retry after N" in the description, else 1 second.
        """
        parameters = dict(parameters or {})
        if code == 429 and "retry_after" not in parameters:
            match = _RETRY_AFTER_RE.search(description)
            parameters["retry_after"] = int(match.group(1)) if match else 1
        self._failures[method.lower()].append(BotApiError(code, description, parameters or None))

    # --- Test-side API: updates --------------------------------------------------------

    async def inject_update(self, raw: dict[str, Any]) -> int:
        """Queue a raw update under the next ``update_id`` (any id in ``raw`` is replaced).

        Chats and messages it contains become known, so the bot can answer them.
        """
        update = {key: value for key, value in raw.items() if key != "update_id"}
        update_id = self._next_update_id
        self._next_update_id += 1
        update = {"update_id": update_id, **update}
        for key in ("message", "edited_message", "channel_post", "edited_channel_post"):
            if key in update:
                self._remember_message(update[key])
        if "callback_query" in update:
            query = update["callback_query"]
            self._callback_queries[str(query["id"])] = query
        self._pending.append(update)
        self.injected.append(update)
        kinds = ", ".join(key for key in update if key != "update_id")
        logger.debug("Injected update %s (%s)", update_id, kinds)
        self._signal.notify()
        return update_id

    async def inject_text(
        self,
        text: str,
        *,
        user: dict[str, Any] | None = None,
        chat: dict[str, Any] | None = None,
        entities: list[dict[str, Any]] | None = None,
        reply_to_message_id: int | None = None,
    ) -> int:
        """Inject a text message from ``user`` (default: ``default_user``) in ``chat``."""
        content: dict[str, Any] = {"text": text}
        if entities:
            content["entities"] = entities
        message = self._incoming_message(user, chat, content)
        if reply_to_message_id is not None:
            original = self._messages.get((message["chat"]["id"], reply_to_message_id))
            if original is None:
                raise ValueError(
                    f"message {reply_to_message_id} is unknown in chat {message['chat']['id']}"
                )
            message["reply_to_message"] = original
        return await self.inject_update({"message": message})

    async def inject_command(
        self,
        command: str,
        arguments: str = "",
        *,
        user: dict[str, Any] | None = None,
        chat: dict[str, Any] | None = None,
        mention: str | None = None,
    ) -> int:
        """Inject ``/command[@mention] arguments`` with the ``bot_command`` entity PTB needs."""
        head = "/" + command.removeprefix("/")
        if mention is not None:
            head += "@" + mention.removeprefix("@")
        text = f"{head} {arguments}" if arguments else head
        entity = {"type": "bot_command", "offset": 0, "length": len(head.encode("utf-16-le")) // 2}
        return await self.inject_text(text, user=user, chat=chat, entities=[entity])

    async def inject_edited_message(self, update_id: int, text: str) -> int:
        """Inject an ``edited_message`` replacing the text of the message sent in ``update_id``."""
        original = next((u.get("message") for u in self.injected if u["update_id"] == update_id), None)
        if original is None or "text" not in original:
            raise ValueError(f"update {update_id} holds no injected text message to edit")
        edited = {**original, "text": text, "edit_date": int(time.time())}
        edited.pop("entities", None)
        return await self.inject_update({"edited_message": edited})

    async def inject_photo(
        self,
        caption: str | None = None,
        *,
        user: dict[str, Any] | None = None,
        chat: dict[str, Any] | None = None,
    ) -> int:
        """Inject a photo in two sizes of a real PNG image, downloadable through ``getFile``."""
        sizes = []
        for width, height in ((90, 60), (320, 213)):
            stored = self._store_file(_solid_png(width, height), "photos", "png", "image/png")
            sizes.append({
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "width": width,
                "height": height,
                "file_size": len(stored.content),
            })
        content: dict[str, Any] = {"photo": sizes}
        if caption is not None:
            content["caption"] = caption
        return await self.inject_update({"message": self._incoming_message(user, chat, content)})

    async def inject_document(
        self,
        content: bytes = b"%PDF-1.4\n% entraide test document\n",
        *,
        file_name: str = "document.pdf",
        mime_type: str = "application/pdf",
        caption: str | None = None,
        user: dict[str, Any] | None = None,
        chat: dict[str, Any] | None = None,
    ) -> int:
        """Inject a document whose ``content`` the bot can download."""
        extension = file_name.rsplit(".", 1)[-1] if "." in file_name else "bin"
        stored = self._store_file(content, "documents", extension, mime_type)
        message_content: dict[str, Any] = {"document": {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": file_name,
            "mime_type": mime_type,
            "file_size": len(content),
        }}
        if caption is not None:
            message_content["caption"] = caption
        return await self.inject_update({"message": self._incoming_message(user, chat, message_content)})

    async def inject_voice(
        self,
        duration: int = 3,
        *,
        user: dict[str, Any] | None = None,
        chat: dict[str, Any] | None = None,
    ) -> int:
        """Inject a voice message.

        NOTE: the downloadable content is an Ogg page header followed by zeros, not
        decodable Opus audio.
        """
        stored = self._store_file(b"OggS" + bytes(60), "voice", "oga", "audio/ogg")
        voice = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "duration": duration,
            "mime_type": "audio/ogg",
            "file_size": len(stored.content),
        }
        message = self._incoming_message(user, chat, {"voice": voice})
        return await self.inject_update({"message": message})

    async def inject_sticker(
        self,
        emoji: str = "👍",
        *,
        user: dict[str, Any] | None = None,
        chat: dict[str, Any] | None = None,
    ) -> int:
        """Inject a static sticker.

        NOTE: the downloadable content is a PNG image, where Telegram serves WEBP.
        """
        stored = self._store_file(_solid_png(512, 512), "stickers", "webp", "image/webp")
        sticker = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji,
            "file_size": len(stored.content),
        }
        message = self._incoming_message(user, chat, {"sticker": sticker})
        return await self.inject_update({"message": message})

    async def inject_callback_query(
        self, bot_message: dict[str, Any], data: str, *, user: dict[str, Any] | None = None
    ) -> int:
        """Inject a press on the inline button with ``data`` under a message the bot sent.

        ``bot_message`` is the result of the bot's send call (``call.result``). The query
        carries the current version of that message. Raise ``ValueError`` when the message
        has no button with this ``callback_data``.
        """
        chat_id = bot_message["chat"]["id"]
        message = self._messages.get((chat_id, bot_message["message_id"]))
        if message is None:
            raise ValueError(
                f"message {bot_message['message_id']} in chat {chat_id} was not sent through this fake"
            )
        rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
        button_data = [button.get("callback_data") for row in rows for button in row]
        if data not in button_data:
            raise ValueError(
                f"message {message['message_id']} has no button with callback_data {data!r}; "
                f"its buttons have {button_data}"
            )
        if user is None:
            user = self._chat_user(message["chat"])
        query = {
            "id": str(next(self._ids)),
            "from": user,
            "message": message,
            "chat_instance": str(abs(chat_id) * 7919),
            "data": data,
        }
        return await self.inject_update({"callback_query": query})

    # --- Test-side API: observation ----------------------------------------------------

    def mark(self) -> int:
        """Return the position in ``calls`` where the next call will be recorded."""
        return len(self.calls)

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[RecordedCall], bool] | None = None,
        start: int = 0,
        timeout: float = 5.0,
        *,
        answered: bool = True,
    ) -> RecordedCall:
        """Return the first call of ``method`` at or after ``start`` that ``predicate`` accepts.

        With ``answered=False``, a call still pending (an open long poll) matches too.
        Raise ``TimeoutError`` naming the calls seen since ``start`` after ``timeout`` seconds.
        """
        expected_method = method.lower()

        def find() -> RecordedCall | None:
            for call in self.calls[start:]:
                if call.method.lower() != expected_method or (answered and not call.answered):
                    continue
                if predicate is None or predicate(call):
                    return call
            return None

        call = await self._wait_until(find, timeout)
        if call is None:
            seen = ", ".join(recorded.method for recorded in self.calls[start:]) or "none"
            raise TimeoutError(
                f"no matching {method} call after mark {start} within {timeout} s; calls seen: {seen}"
            )
        return call

    async def wait_for_delivery(self, update_id: int, timeout: float = 5.0) -> WebhookDelivery:
        """Return the first webhook delivery attempt of ``update_id``, whatever its status."""

        def find() -> WebhookDelivery | None:
            return next((d for d in self.deliveries if d.update_id == update_id), None)

        delivery = await self._wait_until(find, timeout)
        if delivery is None:
            raise TimeoutError(f"update {update_id} was not delivered to a webhook within {timeout} s")
        return delivery

    async def _wait_until(self, find: Callable[[], _T | None], timeout: float) -> _T | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = find()
            remaining = deadline - loop.time()
            if found is not None or remaining <= 0:
                return found
            try:
                await self._signal.wait(remaining)
            except TimeoutError:
                pass

    # --- HTTP --------------------------------------------------------------------------

    async def _handle_method(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        if request.match_info["token"] != self.token:
            logger.info("Bot API call %s rejected: wrong bot token", name)
            return web.json_response(BotApiError(401, "Unauthorized").envelope(), status=401)
        canonical, implementation = self._methods.get(name.lower(), (name, None))
        try:
            params = await _read_params(request)
        except BotApiError as error:
            logger.info("Bot API call %s rejected: %s", canonical, error)
            return web.json_response(error.envelope(), status=error.code)

        call = RecordedCall(method=canonical, params=params, time=time.monotonic())
        self.calls.append(call)
        self._signal.notify()
        logger.debug("Bot API call %s", canonical)

        try:
            if implementation is None:
                raise BotApiError(404, "Not Found")
            failures = self._failures.get(canonical.lower())
            if failures:
                raise failures.popleft()
            answer = await implementation(params)
        except BotApiError as error:
            logger.info("Bot API call %s failed with %s", canonical, error)
            call.status, call.response = error.code, error.envelope()
        else:
            if not isinstance(answer, _Answer):
                answer = _Answer(answer)
            call.status, call.response = 200, {"ok": True, "result": answer.result}
            if answer.description is not None:
                call.response["description"] = answer.description
        self._signal.notify()
        return web.json_response(call.response, status=call.status)

    async def _handle_file(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        if request.match_info["token"] != self.token:
            logger.info("File download %s rejected: wrong bot token", path)
            return web.json_response(BotApiError(401, "Unauthorized").envelope(), status=401)
        stored = next((f for f in self._files.values() if f.path == path), None)
        if stored is None:
            logger.info("File download %s failed: no such file", path)
            return web.json_response(BotApiError(404, "Not Found").envelope(), status=404)
        return web.Response(body=stored.content, content_type=stored.content_type)

    # --- Internal state helpers --------------------------------------------------------

    def _incoming_message(
        self, user: dict[str, Any] | None, chat: dict[str, Any] | None, content: dict[str, Any]
    ) -> dict[str, Any]:
        user = user if user is not None else self.default_user
        chat = chat if chat is not None else self.private_chat(user)
        if chat["type"] == "private" and chat["id"] != user["id"]:
            raise ValueError(f"private chat {chat['id']} cannot hold a message from user {user['id']}")
        return {
            "message_id": next(self._message_ids[chat["id"]]),
            "from": user,
            "chat": chat,
            "date": int(time.time()),
            **content,
        }

    def _remember_message(self, message: dict[str, Any]) -> None:
        chat = message["chat"]
        self._chats.setdefault(chat["id"], chat)
        self._messages[(chat["id"], message["message_id"])] = message

    def _chat_user(self, chat: dict[str, Any]) -> dict[str, Any]:
        if chat["type"] != "private":
            return self.default_user
        return self.user(
            chat["id"],
            chat.get("first_name", "Camille"),
            last_name=chat.get("last_name"),
            username=chat.get("username"),
        )

    def _store_file(self, content: bytes, folder: str, extension: str, content_type: str) -> _StoredFile:
        number = next(self._ids)
        stored = _StoredFile(
            file_id=f"fake-file-{number}",
            file_unique_id=f"fake-unique-{number}",
            path=f"{folder}/file_{number}.{extension}",
            content=content,
            content_type=content_type,
        )
        self._files[stored.file_id] = stored
        return stored

    def _resolve_chat(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise _bad_request("chat_id is empty")
        if isinstance(chat_id, str) and chat_id.startswith("@"):
            chat = next((c for c in self._chats.values() if c.get("username") == chat_id[1:]), None)
        else:
            chat = self._chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None:
            raise _bad_request("chat not found")
        return chat

    def _check_can_send(self, chat: dict[str, Any], *, counts_for_flood: bool = True) -> None:
        if chat["type"] == "private" and chat["id"] in self._blocked:
            raise BotApiError(403, "Forbidden: bot was blocked by the user")
        if not counts_for_flood or self._flood_interval is None:
            return
        now = time.monotonic()
        last = self._last_send.get(chat["id"])
        if last is not None and now - last < self._flood_interval:
            retry_after = math.ceil(self._flood_interval - (now - last))
            raise BotApiError(
                429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
            )
        self._last_send[chat["id"]] = now

    def _reply_target(self, chat: dict[str, Any], params: dict[str, Any]) -> dict[str, Any] | None:
        reply = params.get("reply_parameters") or {}
        message_id = reply.get("message_id", params.get("reply_to_message_id"))
        if message_id is None:
            return None
        chat_id = reply.get("chat_id", chat["id"])
        target = self._messages.get((chat_id, int(message_id)))
        if target is None:
            if reply.get("allow_sending_without_reply") or params.get("allow_sending_without_reply"):
                return None
            raise _bad_request("message to be replied not found")
        return {key: value for key, value in target.items() if key != "reply_to_message"}

    def _store_bot_message(
        self,
        chat: dict[str, Any],
        content: dict[str, Any],
        reply_to: dict[str, Any] | None,
        markup: dict[str, Any] | None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self._message_ids[chat["id"]]),
            "from": self.bot_user,
            "chat": chat,
            "date": int(time.time()),
            **content,
        }
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        if markup is not None:
            message["reply_markup"] = markup
        self._messages[(chat["id"], message["message_id"])] = message
        return message

    def _message_to_edit(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("inline_message_id"):
            raise _bad_request("inline messages are not supported by this fake")
        chat = self._resolve_chat(params)
        message_id = params.get("message_id")
        if message_id is None:
            raise _bad_request("message identifier is not specified")
        message = self._messages.get((chat["id"], message_id))
        if message is None:
            raise _bad_request("message to edit not found")
        if message["from"]["id"] != self.bot_user["id"]:
            raise _bad_request("message can't be edited")
        return message

    def _store_edit(self, message: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        edited = {key: value for key, value in message.items() if key != "reply_markup"}
        edited.update(changes)
        if edited.get("reply_markup") is None:
            edited.pop("reply_markup", None)
        edited["edit_date"] = int(time.time())
        self._messages[(edited["chat"]["id"], edited["message_id"])] = edited
        return edited

    def _is_allowed(self, update: dict[str, Any]) -> bool:
        kind = next(key for key in update if key != "update_id")
        if self._allowed_updates:
            return kind in self._allowed_updates
        return kind not in _OPT_IN_UPDATE_TYPES

    def _drop_disallowed_head(self) -> None:
        while self._pending and not self._is_allowed(self._pending[0]):
            dropped = self._pending.popleft()
            logger.debug("Dropped update %s: its type is not in allowed_updates", dropped["update_id"])

    # --- Bot API methods ---------------------------------------------------------------

    async def _get_me(self, params: dict[str, Any]) -> Any:
        return self.bot_user

    async def _get_updates(self, params: dict[str, Any]) -> Any:
        if self._webhook is not None:
            raise BotApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        self._poll_generation += 1
        generation = self._poll_generation
        self._signal.notify()  # wakes an older open poll, which then fails with 409

        offset = params.get("offset")
        if isinstance(offset, int) and offset < 0:
            while len(self._pending) > -offset:
                self._pending.popleft()
        elif isinstance(offset, int):
            while self._pending and self._pending[0]["update_id"] < offset:
                self._pending.popleft()
        if params.get("allowed_updates") is not None:
            self._allowed_updates = list(params["allowed_updates"])
        limit = min(max(int(params.get("limit", 100)), 1), 100)
        timeout = max(float(params.get("timeout", 0)), 0.0)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if generation != self._poll_generation:
                raise BotApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            if self._webhook is not None:
                raise BotApiError(409, "Conflict: terminated by setWebhook request")
            self._drop_disallowed_head()
            batch = [update for update in self._pending if self._is_allowed(update)][:limit]
            remaining = deadline - loop.time()
            if batch or remaining <= 0 or self._closing:
                return batch
            try:
                await self._signal.wait(remaining)
            except TimeoutError:
                pass

    async def _send_message(self, params: dict[str, Any]) -> Any:
        chat = self._resolve_chat(params)
        text = _checked_text(params)
        markup = _checked_reply_markup(params.get("reply_markup"))
        reply_to = self._reply_target(chat, params)
        self._check_can_send(chat)
        return self._store_bot_message(chat, {"text": text}, reply_to, markup)

    async def _send_chat_action(self, params: dict[str, Any]) -> Any:
        chat = self._resolve_chat(params)
        if params.get("action") not in _CHAT_ACTIONS:
            raise _bad_request("wrong parameter action in request")
        self._check_can_send(chat, counts_for_flood=False)
        return True

    async def _answer_callback_query(self, params: dict[str, Any]) -> Any:
        query_id = str(params.get("callback_query_id", ""))
        if query_id not in self._callback_queries or query_id in self._answered_queries:
            raise _bad_request("query is too old and response timeout expired or query ID is invalid")
        self._answered_queries.add(query_id)
        return True

    async def _edit_message_text(self, params: dict[str, Any]) -> Any:
        message = self._message_to_edit(params)
        if "text" not in message:
            raise _bad_request("there is no text in the message to edit")
        text = _checked_text(params)
        # Telegram drops the inline keyboard of a message whose text is edited without one.
        # The Bot API documentation does not say so, but client library issues report it.
        markup = _checked_reply_markup(params.get("reply_markup"))
        if text == message["text"] and markup == message.get("reply_markup"):
            raise _bad_request(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        return self._store_edit(message, {"text": text, "reply_markup": markup})

    async def _edit_message_reply_markup(self, params: dict[str, Any]) -> Any:
        message = self._message_to_edit(params)
        markup = _checked_reply_markup(params.get("reply_markup"))
        if markup == message.get("reply_markup"):
            raise _bad_request(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        return self._store_edit(message, {"reply_markup": markup})

    async def _set_webhook(self, params: dict[str, Any]) -> Any:
        url = str(params.get("url") or "")
        if not url:
            return await self._delete_webhook(params)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _bad_request(
                f"bad webhook: invalid URL {url!r}; an http(s) URL with a host is required"
            )
        for host in (parts.hostname, params.get("ip_address")):
            if host is None:
                continue
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise _bad_request(
                    f"bad webhook: this local Bot API server only delivers to loopback IP "
                    f"addresses (127.0.0.0/8 or ::1), not to {host!r}"
                )
        secret = params.get("secret_token")
        if secret is not None and not _SECRET_TOKEN_RE.fullmatch(str(secret)):
            raise _bad_request(
                "bad webhook: secret token must be 1-256 characters of A-Z, a-z, 0-9, _ and -"
            )
        max_connections = int(params.get("max_connections", 40))
        if not 1 <= max_connections <= 100:
            raise _bad_request("bad webhook: max_connections must be between 1 and 100")

        if params.get("drop_pending_updates"):
            self._pending.clear()
        if params.get("allowed_updates") is not None:
            self._allowed_updates = list(params["allowed_updates"])
        self._webhook = _Webhook(url, secret, max_connections, params.get("ip_address"))
        logger.info("Webhook set to %s", url)
        self._signal.notify()
        return _Answer(True, "Webhook was set")

    async def _delete_webhook(self, params: dict[str, Any]) -> Any:
        if params.get("drop_pending_updates"):
            self._pending.clear()
        if self._webhook is None:
            return _Answer(True, "Webhook is already deleted")
        self._webhook = None
        logger.info("Webhook deleted")
        self._signal.notify()
        return _Answer(True, "Webhook was deleted")

    async def _get_webhook_info(self, params: dict[str, Any]) -> Any:
        webhook = self._webhook
        info: dict[str, Any] = {
            "url": webhook.url if webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
        }
        if webhook is None:
            return info
        info["max_connections"] = webhook.max_connections
        if webhook.ip_address:
            info["ip_address"] = webhook.ip_address
        if self._allowed_updates:
            info["allowed_updates"] = self._allowed_updates
        if webhook.last_error_date is not None:
            info["last_error_date"] = webhook.last_error_date
            info["last_error_message"] = webhook.last_error_message
        return info

    @staticmethod
    def _commands_key(params: dict[str, Any]) -> tuple[str, str]:
        scope = params.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(params.get("language_code") or "")

    async def _set_my_commands(self, params: dict[str, Any]) -> Any:
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad_request("parameter \"commands\" must be an Array of at most 100 BotCommand")
        stored = []
        for command in commands:
            if not isinstance(command, dict):
                raise _bad_request("BOT_COMMAND_INVALID")
            if not _COMMAND_RE.fullmatch(str(command.get("command", ""))):
                raise _bad_request("BOT_COMMAND_INVALID")
            description = str(command.get("description", ""))
            if not 1 <= len(description) <= 256:
                raise _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
            stored.append({"command": command["command"], "description": description})
        self._commands[self._commands_key(params)] = stored
        return True

    async def _get_my_commands(self, params: dict[str, Any]) -> Any:
        return self._commands.get(self._commands_key(params), [])

    async def _delete_my_commands(self, params: dict[str, Any]) -> Any:
        self._commands.pop(self._commands_key(params), None)
        return True

    async def _get_file(self, params: dict[str, Any]) -> Any:
        stored = self._files.get(str(params.get("file_id", "")))
        if stored is None:
            raise _bad_request("invalid file_id")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.content),
            "file_path": stored.path,
        }

    def _input_file(self, params: dict[str, Any], name: str, folder: str) -> _StoredFile:
        """Store an uploaded file, or find the file that a ``file_id`` names."""
        value = params.get(name)
        if value is None or value == "":
            raise _bad_request(f"there is no {name} in the request")
        if isinstance(value, UploadedFile):
            filename = value.filename or name
            extension = filename.rsplit(".", 1)[-1] if "." in filename else "bin"
            return self._store_file(value.content, folder, extension, value.content_type)
        stored = self._files.get(str(value))
        if stored is None:
            # URLs are never fetched: this fake opens no connection beyond loopback.
            raise _bad_request("wrong file identifier/HTTP URL specified")
        return stored

    async def _send_document(self, params: dict[str, Any]) -> Any:
        chat = self._resolve_chat(params)
        caption = _checked_caption(params)
        markup = _checked_reply_markup(params.get("reply_markup"))
        reply_to = self._reply_target(chat, params)
        stored = self._input_file(params, "document", "documents")
        self._check_can_send(chat)
        upload = params["document"]
        document = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.content),
            "mime_type": stored.content_type,
        }
        if isinstance(upload, UploadedFile) and upload.filename:
            document["file_name"] = upload.filename
        content: dict[str, Any] = {"document": document}
        if caption is not None:
            content["caption"] = caption
        return self._store_bot_message(chat, content, reply_to, markup)

    async def _send_photo(self, params: dict[str, Any]) -> Any:
        chat = self._resolve_chat(params)
        caption = _checked_caption(params)
        markup = _checked_reply_markup(params.get("reply_markup"))
        reply_to = self._reply_target(chat, params)
        stored = self._input_file(params, "photo", "photos")
        self._check_can_send(chat)
        # NOTE: Telegram returns several resized copies, but this fake returns only the upload.
        # Its size comes from the PNG header, and other formats get 0 x 0.
        width, height = _png_size(stored.content)
        photo = [{
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "width": width,
            "height": height,
            "file_size": len(stored.content),
        }]
        content: dict[str, Any] = {"photo": photo}
        if caption is not None:
            content["caption"] = caption
        return self._store_bot_message(chat, content, reply_to, markup)

    async def _close(self, params: dict[str, Any]) -> Any:
        return True

    async def _log_out(self, params: dict[str, Any]) -> Any:
        return True

    # --- Webhook delivery --------------------------------------------------------------

    async def _deliver_to_webhook(self) -> None:
        """POST pending updates to the webhook one at a time, in order, retrying failures."""
        while True:
            self._drop_disallowed_head()
            webhook = self._webhook
            if webhook is None or not self._pending:
                await self._signal.wait(None)
                continue
            update = self._pending[0]
            status, error = await self._post_update(webhook, update)
            self.deliveries.append(
                WebhookDelivery(update["update_id"], webhook.url, status, error, time.monotonic())
            )
            self._signal.notify()
            if error is None:
                if self._pending and self._pending[0] is update:
                    self._pending.popleft()
                continue
            webhook.last_error_date = int(time.time())
            webhook.last_error_message = error
            logger.warning("Webhook delivery of update %s failed: %s", update["update_id"], error)
            await asyncio.sleep(self._webhook_retry_interval)

    async def _post_update(
        self, webhook: _Webhook, update: dict[str, Any]
    ) -> tuple[int | None, str | None]:
        """POST one update; return the HTTP status and an error message unless it was 2xx."""
        if self._session is None:
            raise RuntimeError("FakeBotApi is not started; its webhook client session is closed")
        headers = {"Content-Type": "application/json"}
        if webhook.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = webhook.secret_token
        try:
            async with self._session.post(
                webhook.url,
                data=json.dumps(update).encode("utf-8"),
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._webhook_timeout),
            ) as response:
                await response.read()
        except TimeoutError:
            return None, "Read timeout expired"
        except aiohttp.ClientError as error:
            return None, f"Connection failed: {error}"
        if 200 <= response.status < 300:
            return response.status, None
        return response.status, f"Wrong response from the webhook: {response.status} {response.reason}"
