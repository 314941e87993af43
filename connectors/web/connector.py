"""The web widget's channel: a WebSocket per browser tab, the widget's static files and the demo page.

Frames are JSON text (see docs/widget.md). Each conversation is keyed by a session id that the
widget keeps in localStorage. Messages carry the conversation's sequence numbers, so a widget that
reconnects with ``last_seq`` receives exactly what it missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from bot.assistant import Assistant
from bot.config import WebSettings
from bot.messages import Identity, IncomingMessage, OutgoingMessage, Role
from connectors.base import Connector
from connectors.web.identity import TokenRejected, verify_token
from connectors.web.limits import RateLimiter

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
CHANNEL = "web"
MAX_FRAME_BYTES = 64 * 1024
HELLO_TIMEOUT = 15.0
CLOSE_TOKEN = 4401
CLOSE_ORIGIN = 4403
CLOSE_RATE = 4429

# Error texts the widget shows when the server rejects a frame or a connection; French by default.
ERRORS = {
    "token_invalid": "Votre identification n'a pas pu être vérifiée. Rechargez la page de l'ENT pour vous reconnecter.",
    "token_expired": "Votre session ENT a expiré. Rechargez la page pour vous reconnecter.",
    "too_long": "Votre message dépasse {max} caractères. Raccourcissez-le ou envoyez-le en plusieurs fois.",
    "rate_limited": "Vous envoyez beaucoup de messages d'un coup. Patientez un instant avant de réessayer.",
    "bad_request": "Ce message n'a pas pu être lu. Réessayez.",
    "server_error": "Une erreur est survenue de notre côté. Réessayez dans un instant.",
    "origin": "Cette page n'est pas autorisée à utiliser l'assistant.",
}


def message_frame(message: OutgoingMessage) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "message",
        "seq": message.seq,
        "id": f"m{message.seq}",
        "role": message.role.value,
        "label": message.label,
        "text": message.text,
        "buttons": [{"title": button.title, "payload": button.payload} for button in message.buttons],
        "time": message.time.isoformat() if message.time else None,
    }
    if message.role is Role.USER and message.metadata.get("message_id"):
        frame["client_id"] = message.metadata["message_id"]
    return frame


class WebConnector(Connector):
    """Serve the widget and relay its messages; many tabs may share one session."""

    name = CHANNEL
    # Sockets live in one worker: with several workers, messages reach every worker (see Outbox).
    fan_out = True

    def __init__(self, settings: WebSettings, assistant: Assistant, public_origin: str | None = None) -> None:
        self.settings = settings
        self.assistant = assistant
        self.public_origin = public_origin
        self._sockets: dict[str, set[web.WebSocketResponse]] = {}
        self._identities: dict[str, Identity | None] = {}
        self._connection_limiter = RateLimiter(settings.connections_per_minute)
        self._started = False

    @property
    def ready(self) -> bool:
        return self._started

    async def start(self) -> None:
        self._started = True
        logger.info("web connector started")

    async def stop(self) -> None:
        self._started = False
        sockets = [socket for group in self._sockets.values() for socket in group]
        for socket in sockets:
            await socket.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
        self._sockets.clear()
        self._identities.clear()
        logger.info("web connector stopped")

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_get("/widget/ws", self.websocket)
        app.router.add_get("/", self.demo_page)
        app.router.add_get("/demo.css", self.static_file("demo.css"))
        app.router.add_get("/widget/widget.js", self.static_file("widget.js"))
        app.router.add_get("/widget/widget.css", self.static_file("widget.css"))

    # ----- pages and files -----

    async def demo_page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Content-Type": "text/html; charset=utf-8"})

    def static_file(self, name: str):
        path = STATIC / name

        async def handler(request: web.Request) -> web.FileResponse:
            return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

        return handler

    # ----- sending -----

    async def send(self, recipient_id: str, message: OutgoingMessage) -> None:
        """Push to every open tab of the session; a closed session gets it from the history later."""
        frame = json.dumps(message_frame(message), ensure_ascii=False)
        for socket in list(self._sockets.get(recipient_id, ())):
            if socket.closed:
                continue
            try:
                await socket.send_str(frame)
            except (ConnectionError, RuntimeError) as exc:
                logger.debug("session socket closed while sending: %s", exc)

    async def typing(self, session_id: str, role: str, active: bool) -> None:
        frame = json.dumps({"type": "typing", "role": role, "active": active})
        for socket in list(self._sockets.get(session_id, ())):
            if not socket.closed:
                try:
                    await socket.send_str(frame)
                except (ConnectionError, RuntimeError):
                    pass

    # ----- the WebSocket -----

    def origin_allowed(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            # Not a browser: browsers always send Origin on WebSocket handshakes.
            return True
        if origin in self.settings.allowed_origins or "*" in self.settings.allowed_origins:
            return True
        own = f"{request.scheme}://{request.host}"
        return origin == own or (self.public_origin is not None and origin == self.public_origin)

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        peer = request.remote or "unknown"
        socket = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, heartbeat=30.0)
        await socket.prepare(request)

        if not self.origin_allowed(request):
            logger.warning("widget connection from a disallowed origin refused (peer %s)", peer)
            await self._error(socket, "origin")
            await socket.close(code=CLOSE_ORIGIN, message=b"origin not allowed")
            return socket
        if not self._connection_limiter.allow(peer):
            logger.warning("too many widget connections from %s; closing", peer)
            await self._error(socket, "rate_limited")
            await socket.close(code=CLOSE_RATE, message=b"too many connections")
            return socket

        hello = await self._hello(socket, peer)
        if hello is None:
            return socket
        session_id, last_seq = hello
        # Registered before the history is read, so that no message falls between the two.
        self._sockets.setdefault(session_id, set()).add(socket)
        try:
            await self._replay(socket, session_id, last_seq)
            await self._serve(socket, session_id, peer)
        finally:
            group = self._sockets.get(session_id)
            if group is not None:
                group.discard(socket)
                if not group:
                    del self._sockets[session_id]
                    self._identities.pop(session_id, None)
        return socket

    async def _hello(self, socket: web.WebSocketResponse, peer: str) -> tuple[str, int] | None:
        try:
            message = await socket.receive(timeout=HELLO_TIMEOUT)
        except asyncio.TimeoutError:
            logger.info("widget connection from %s sent no hello; closing", peer)
            await socket.close(code=WSCloseCode.POLICY_VIOLATION, message=b"hello expected")
            return None
        frame = await self._frame(socket, message, peer)
        if frame is None or frame.get("type") != "hello":
            if not socket.closed:
                await self._error(socket, "bad_request")
                await socket.close(code=WSCloseCode.POLICY_VIOLATION, message=b"hello expected")
            return None

        identity: Identity | None = None
        token = frame.get("token")
        if token:
            try:
                identity = verify_token(str(token), self.settings.jwt_secret)
            except TokenRejected as exc:
                logger.warning("widget token rejected (%s) from %s: %s", exc.code, peer, exc.reason)
                await self._error(socket, exc.code)
                await socket.close(code=CLOSE_TOKEN, message=exc.code.encode())
                return None

        session_id = await self._session(frame.get("session_id"), identity)
        self._identities[session_id] = identity
        await socket.send_json(
            {
                "type": "welcome",
                "session_id": session_id,
                "max_length": self.settings.max_message_length,
                "identity": {"name": identity.name, "profile": identity.profile} if identity else None,
            }
        )
        last_seq = frame.get("last_seq")
        return session_id, last_seq if isinstance(last_seq, int) and last_seq >= 0 else 0

    async def _replay(self, socket: web.WebSocketResponse, session_id: str, last_seq: int) -> None:
        """Send the messages after ``last_seq``. Live messages may come in between; the widget orders them by seq."""
        conversation = await self.assistant.store.conversation(CHANNEL, session_id, create=False)
        if conversation is not None:
            for item in await self.assistant.history(conversation.id, since=last_seq, limit=self.settings.history_limit):
                await socket.send_str(json.dumps(message_frame(item), ensure_ascii=False))
        logger.info("widget connected: conversation=%s resumed=%s", conversation.id if conversation else None, last_seq > 0)

    async def _session(self, requested: Any, identity: Identity | None) -> str:
        """Resume the requested session only if it belongs to the same ENT user (or stays anonymous)."""
        store = self.assistant.store
        owner = identity.subject if identity else ""
        if isinstance(requested, str) and 8 <= len(requested) <= 64 and requested.replace("-", "").isalnum():
            recorded = await store.get_state(f"web:session:{requested}")
            if recorded is not None and recorded == owner:
                return requested
        session_id = str(uuid.uuid4())
        await store.set_state(f"web:session:{session_id}", owner)
        return session_id

    async def _serve(self, socket: web.WebSocketResponse, session_id: str, peer: str) -> None:
        limiter = RateLimiter(self.settings.messages_per_minute)
        async for message in socket:
            frame = await self._frame(socket, message, peer)
            if frame is None:
                if socket.closed:
                    return
                continue
            kind = frame.get("type")
            if kind == "ack":
                continue
            if kind not in {"message", "button"}:
                logger.info("widget frame of unknown type from %s ignored", peer)
                await self._error(socket, "bad_request")
                continue
            if not limiter.allow(session_id):
                logger.warning("widget session rate limited (peer %s)", peer)
                await self._error(socket, "rate_limited")
                continue
            text = frame.get("title") if kind == "button" else frame.get("text")
            payload = frame.get("payload") if kind == "button" else None
            client_id = frame.get("client_id")
            if not isinstance(text, str) or (payload is not None and not isinstance(payload, str)) or not isinstance(client_id, (str, type(None))):
                await self._error(socket, "bad_request")
                continue
            if len(text) > self.settings.max_message_length:
                logger.info("widget message over %d characters rejected", self.settings.max_message_length)
                await self._error(socket, "too_long")
                continue
            incoming = IncomingMessage(
                channel=CHANNEL,
                sender_id=session_id,
                text=text,
                payload=payload,
                message_id=client_id[:128] if client_id else None,
                identity=self._identities.get(session_id),
            )
            await self.typing(session_id, "bot", True)
            try:
                await self.assistant.handle(incoming, echo_user=True)
            except Exception:
                logger.exception("widget message of session could not be handled")
                await self._error(socket, "server_error")
            finally:
                await self.typing(session_id, "bot", False)

    async def _frame(self, socket: web.WebSocketResponse, message, peer: str) -> dict[str, Any] | None:
        if message.type == WSMsgType.TEXT:
            try:
                frame = json.loads(message.data)
            except ValueError:
                logger.info("widget frame that is not JSON from %s", peer)
                await self._error(socket, "bad_request")
                return None
            if not isinstance(frame, dict):
                await self._error(socket, "bad_request")
                return None
            return frame
        if message.type == WSMsgType.BINARY:
            logger.info("binary widget frame from %s rejected", peer)
            await socket.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"text frames only")
            return None
        if message.type == WSMsgType.ERROR:
            logger.info("widget connection error from %s: %s", peer, socket.exception())
        return None

    async def _error(self, socket: web.WebSocketResponse, code: str) -> None:
        if socket.closed:
            return
        text = ERRORS[code].format(max=self.settings.max_message_length)
        try:
            await socket.send_json({"type": "error", "code": code, "message": text})
        except (ConnectionError, RuntimeError):
            pass
