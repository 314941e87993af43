"""A thin wrapper of matrix-nio's ``AsyncClient`` that raises instead of returning errors.

matrix-nio returns failures as values (``XResponse | XError``) and, with its default config,
retries rate-limited requests and network errors forever. Here nio makes one attempt per call
and :meth:`MatrixClient.call` retries a bounded number of times: it honours ``retry_after_ms``
of ``M_LIMIT_EXCEEDED`` up to a maximum wait and backs off on network errors and 5xx responses.

Errors::

    ConnectorError (bot.errors)
    └── MatrixError
        ├── MatrixUnavailable      the homeserver did not respond (network error, timeout)
        └── MatrixRequestError     the homeserver returned an error (``errcode``, ``status``)
            └── MatrixRateLimited  M_LIMIT_EXCEEDED with a longer wait than allowed (``retry_after``)
"""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from typing import Any, Awaitable, Callable, TypeVar

import aiohttp
import nio
from nio.api import MessageDirection

from bot.config import MatrixSettings
from bot.errors import ConnectorError

logger = logging.getLogger(__name__)

ResponseT = TypeVar("ResponseT", bound=nio.Response)

DEFAULT_ATTEMPTS = 3
# A 429 that requests a longer wait fails the call at once (Synapse may request minutes).
MAX_RATE_LIMIT_WAIT = 30.0
BACKOFF_BASE = 0.5
REQUEST_TIMEOUT = 20.0


class MatrixError(ConnectorError):
    """Raised when a Matrix request fails."""


class MatrixUnavailable(MatrixError):
    """Raised when the homeserver cannot be reached or does not respond in time."""


class MatrixRequestError(MatrixError):
    """Raised when the homeserver returns an error; ``errcode`` is the Matrix code, such as M_FORBIDDEN."""

    def __init__(self, message: str, errcode: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.status = status


class MatrixRateLimited(MatrixRequestError):
    """Raised when the homeserver requests a wait of ``retry_after`` seconds, longer than the allowed maximum."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, "M_LIMIT_EXCEEDED", 429)
        self.retry_after = retry_after


class MatrixClient:
    """One logged-in Matrix account (restored from an access token, without /login)."""

    def __init__(
        self,
        settings: MatrixSettings,
        attempts: int = DEFAULT_ATTEMPTS,
        max_rate_limit_wait: float = MAX_RATE_LIMIT_WAIT,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        if not (settings.homeserver and settings.user_id and settings.access_token):
            raise ConnectorError("channels.matrix needs homeserver, user_id and access_token in config.yml")
        self.homeserver = settings.homeserver.rstrip("/")
        self.attempts = attempts
        self.max_rate_limit_wait = max_rate_limit_wait
        config = nio.AsyncClientConfig(
            # One attempt per nio call: call() does the bounded retries.
            max_limit_exceeded=0,
            max_timeouts=0,
            request_timeout=request_timeout,
            # Desk rooms must be unencrypted: without an olm store nio would send plaintext anyway.
            encryption_enabled=False,
        )
        self.nio = nio.AsyncClient(self.homeserver, settings.user_id, device_id=settings.device_id or "", config=config)
        self.nio.restore_login(settings.user_id, settings.device_id or "", settings.access_token)

    @property
    def user_id(self) -> str:
        return self.nio.user_id

    async def close(self) -> None:
        await self.nio.close()

    async def call(
        self, operation: str, send: Callable[[], Awaitable[nio.Response]], expected: type[ResponseT], attempts: int | None = None
    ) -> ResponseT:
        """Run one request with bounded retries; return the expected response or raise a MatrixError."""
        attempts = attempts or self.attempts
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                response = await send()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                if last:
                    raise MatrixUnavailable(f"{operation}: homeserver {self.homeserver} did not respond ({type(exc).__name__}: {exc})") from None
                await self._back_off(operation, attempt, f"{type(exc).__name__}: {exc}")
                continue
            if isinstance(response, expected):
                return response
            status = response.transport_response.status if response.transport_response is not None else None
            errcode = getattr(response, "status_code", None)
            detail = getattr(response, "message", None) or str(response)
            if errcode == "M_LIMIT_EXCEEDED" or status == 429:
                wait = (getattr(response, "retry_after_ms", None) or 5000) / 1000
                if last or wait > self.max_rate_limit_wait:
                    raise MatrixRateLimited(f"{operation}: rate limited by {self.homeserver}; retry in {wait:.1f} s", wait)
                logger.warning("%s: rate limited, retrying in %.1f s (attempt %d of %d)", operation, wait, attempt, attempts)
                await asyncio.sleep(wait)
                continue
            if status is not None and status >= 500 and not last:
                await self._back_off(operation, attempt, f"HTTP {status}")
                continue
            raise MatrixRequestError(f"{operation}: {errcode or 'error'} (HTTP {status}): {detail}", errcode, status)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _back_off(self, operation: str, attempt: int, reason: str) -> None:
        delay = BACKOFF_BASE * 2 ** (attempt - 1)
        logger.warning("%s failed (%s), retrying in %.1f s", operation, reason, delay)
        await asyncio.sleep(delay)

    # ----- requests -----

    async def whoami(self) -> str:
        return (await self.call("whoami", self.nio.whoami, nio.WhoamiResponse)).user_id

    async def upload_filter(self, **definition: Any) -> str:
        response = await self.call("upload filter", lambda: self.nio.upload_filter(**definition), nio.UploadFilterResponse)
        return response.filter_id

    async def sync(self, since: str | None, timeout_ms: int, filter_id: str | None) -> nio.SyncResponse:
        return await self.call(
            "sync", lambda: self.nio.sync(timeout=timeout_ms, sync_filter=filter_id, since=since), nio.SyncResponse, attempts=1
        )

    async def join(self, room: str) -> str:
        return (await self.call(f"join {room}", lambda: self.nio.join(room), nio.JoinResponse)).room_id

    async def send(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        """Send an event and return its id; retries reuse one transaction id, so the server keeps one copy."""
        transaction = str(uuid.uuid4())
        response = await self.call(
            f"send {event_type} to {room_id}",
            lambda: self.nio.room_send(room_id, event_type, content, tx_id=transaction),
            nio.RoomSendResponse,
        )
        return response.event_id

    async def upload(self, data: bytes, content_type: str, filename: str) -> str:
        """Upload a file to the media repository and return its ``mxc://`` URI."""

        async def send() -> nio.Response:
            # A fresh reader per attempt, so that a retry uploads the whole file again.
            response, _keys = await self.nio.upload(io.BytesIO(data), content_type, filename, filesize=len(data))
            return response

        return (await self.call(f"upload {len(data)} bytes", send, nio.UploadResponse)).content_uri

    async def state(self, room_id: str) -> list[dict[str, Any]]:
        return (await self.call(f"state of {room_id}", lambda: self.nio.room_get_state(room_id), nio.RoomGetStateResponse)).events

    async def state_event(self, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any] | None:
        """Return the content of a state event, or None when the room has none."""
        try:
            response = await self.call(
                f"state {event_type} of {room_id}",
                lambda: self.nio.room_get_state_event(room_id, event_type, state_key),
                nio.RoomGetStateEventResponse,
            )
        except MatrixRequestError as exc:
            if exc.errcode == "M_NOT_FOUND":
                return None
            raise
        return response.content

    async def joined_members(self, room_id: str) -> list[str]:
        response = await self.call(f"members of {room_id}", lambda: self.nio.joined_members(room_id), nio.JoinedMembersResponse)
        return [member.user_id for member in response.members]

    async def messages_before(self, room_id: str, start: str, end: str | None, limit: int) -> nio.RoomMessagesResponse:
        return await self.call(
            f"messages of {room_id}",
            lambda: self.nio.room_messages(room_id, start=start, end=end, direction=MessageDirection.back, limit=limit),
            nio.RoomMessagesResponse,
        )
