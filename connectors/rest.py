"""Rasa's REST channel: ``POST /webhooks/rest/webhook`` returns the messages of the turn."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from bot.assistant import Assistant
from bot.messages import IncomingMessage, OutgoingMessage
from bot.outbox import CollectingOutput
from connectors.base import Connector

logger = logging.getLogger(__name__)
CHANNEL = "rest"
MAX_SENDER_LENGTH = 255


def rasa_message(recipient_id: str, message: OutgoingMessage) -> dict[str, Any]:
    """Shape one reply as Rasa's REST channel does: recipient_id, text and, when present, buttons."""
    item: dict[str, Any] = {"recipient_id": recipient_id, "text": message.text}
    if message.buttons:
        item["buttons"] = [{"title": button.title, "payload": button.payload} for button in message.buttons]
    return item


class RestConnector(Connector):
    """Request/response channel: replies come back in the HTTP response.

    A REST client has no push: messages that arrive between two requests (an expert's reply, the
    satisfaction question) come first in the response to the next request.
    """

    name = CHANNEL

    def __init__(self, assistant: Assistant, max_length: int) -> None:
        self.assistant = assistant
        self.max_length = max_length

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/webhooks/rest/webhook", self.webhook)
        app.router.add_get("/webhooks/rest", self.health)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def send(self, recipient_id: str, message: OutgoingMessage) -> None:
        logger.debug("rest recipient has no push channel; message %s kept in the store", message.seq)

    async def webhook(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        sender = body.get("sender")
        text = body.get("message")
        if not isinstance(sender, str) or not sender.strip():
            raise json_error(400, "missing_field", "'sender' must be a non-empty string identifying the conversation")
        if len(sender) > MAX_SENDER_LENGTH:
            raise json_error(400, "invalid_field", f"'sender' is longer than {MAX_SENDER_LENGTH} characters")
        if not isinstance(text, str):
            raise json_error(400, "missing_field", "'message' must be a string")
        if len(text) > self.max_length:
            raise json_error(400, "too_long", f"'message' is longer than {self.max_length} characters")
        message_id = body.get("message_id")
        if message_id is not None and not isinstance(message_id, str):
            raise json_error(400, "invalid_field", "'message_id' must be a string")

        output = CollectingOutput(CHANNEL)
        await self.assistant.handle(
            IncomingMessage(channel=CHANNEL, sender_id=sender, text=text, message_id=message_id), output=output, catch_up=True
        )
        replies = [message for _, message in output.messages]
        if request.transport is None or request.transport.is_closing():
            await self._keep_owed(sender, replies)
        return web.json_response([rasa_message(sender, message) for message in replies])


    async def _keep_owed(self, sender: str, replies: list[OutgoingMessage]) -> None:
        """Mark ``replies`` as not received, because the client left before its response, so the next response repeats them."""
        seqs = [message.seq for message in replies if message.seq is not None]
        conversation = await self.assistant.store.conversation(CHANNEL, sender, create=False)
        if not seqs or conversation is None:
            return
        # A reply repeated in a later response is better than a reply the user never received.
        await self.assistant.store.update_conversation(conversation.id, delivered_seq=min(seqs) - 1)
        logger.info("rest client of conversation %s left before its response, so %d replies are kept for later", conversation.id, len(seqs))


async def read_json(request: web.Request) -> dict[str, Any]:
    """Read a JSON object body; raise a 4xx JSON error that names the problem."""
    from bot.server import MAX_BODY_BYTES

    if request.content_type != "application/json":
        raise json_error(415, "unsupported_media_type", "send the body as application/json")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise json_error(413, "too_large", f"the body is over {request.app[MAX_BODY_BYTES]} bytes") from None
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise json_error(400, "invalid_encoding", "the body is not valid UTF-8") from None
    except ValueError:
        raise json_error(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise json_error(400, "invalid_json", "the body must be a JSON object")
    return body


def json_error(status: int, code: str, message: str) -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 413: web.HTTPRequestEntityTooLarge, 415: web.HTTPUnsupportedMediaType}.get(status, web.HTTPBadRequest)
    if cls is web.HTTPRequestEntityTooLarge:
        return web.HTTPRequestEntityTooLarge(
            max_size=0, actual_size=0, text=json.dumps({"error": code, "message": message}), content_type="application/json"
        )
    return cls(text=json.dumps({"error": code, "message": message}), content_type="application/json")
