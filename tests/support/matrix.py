"""Act as a Matrix user, such as a human expert, against the test homeserver with matrix-nio.

matrix-nio returns failures as values (``XResponse | XError``). Every helper here checks
the response type and raises :class:`MatrixResponseError`, so a test fails at the request
that went wrong instead of later on a missing attribute.

The helpers read one event stream per client. Timeline events that a sync delivers are
buffered, and :func:`sync_until` takes them in order, so an event that arrived in the same
sync batch as an earlier match is still found by the next call.
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import nio

if TYPE_CHECKING:
    from tests.support.synapse import MatrixAccount, SynapseServer

# nio's defaults retry 429 responses and timeouts forever, honouring retry_after_ms, so a
# test would hang instead of failing. These bound every request.
CLIENT_CONFIG = nio.AsyncClientConfig(
    max_limit_exceeded=3,
    max_timeouts=3,
    request_timeout=15,
    # With matrix-nio[e2e] installed but no store path, nio would silently skip olm.
    # Test rooms are unencrypted, so encryption is off on purpose.
    encryption_enabled=False,
)

ResponseT = TypeVar("ResponseT", bound=nio.Response)

# Timeline events synced but not yet taken by sync_until, as (room_id, event), per client.
_pending: weakref.WeakKeyDictionary[
    nio.AsyncClient, collections.deque[tuple[str, nio.Event]]
] = weakref.WeakKeyDictionary()


class MatrixResponseError(RuntimeError):
    """A Matrix request returned an error response, or a response of an unexpected type.

    ``response`` is the nio response object.
    """

    def __init__(self, message: str, response: nio.Response) -> None:
        super().__init__(message)
        self.response = response


def expect(response: nio.Response, expected: type[ResponseT]) -> ResponseT:
    """Return ``response`` if it is an ``expected``, else raise :class:`MatrixResponseError`."""
    if isinstance(response, expected):
        return response

    transport = response.transport_response
    http_status = f"HTTP {transport.status}: " if transport is not None else ""
    raise MatrixResponseError(
        f"expected {expected.__name__}, got {http_status}{response}", response
    )


async def make_client(server: SynapseServer, account: MatrixAccount) -> nio.AsyncClient:
    """Create a client logged in as ``account`` with its access token, without /login.

    The token is checked with /whoami. The caller closes the client with ``await
    client.close()``.
    """
    client = nio.AsyncClient(
        server.base_url,
        account.user_id,
        device_id=account.device_id,
        config=CLIENT_CONFIG,
    )
    client.restore_login(account.user_id, account.device_id, account.access_token)

    try:
        whoami = expect(await client.whoami(), nio.WhoamiResponse)
    except BaseException:
        await client.close()
        raise
    if whoami.user_id != account.user_id:
        await client.close()
        raise MatrixResponseError(
            f"access token of {account.user_id} belongs to {whoami.user_id}", whoami
        )
    return client


async def sync_until(
    client: nio.AsyncClient,
    predicate: Callable[[nio.Event], bool],
    timeout: float = 10.0,
    *,
    room_id: str | None = None,
) -> nio.Event:
    """Sync until a timeline event matching ``predicate`` arrives, and return it.

    Events are examined in the order the server sent them, starting after the last event
    a previous call returned. Events that do not match are dropped, as are events of
    other rooms when ``room_id`` is given. The client's own messages come back through
    sync too, so a predicate usually checks ``event.sender``. A client that never synced
    before starts with the recent history of its rooms.

    Raises:
        TimeoutError: no matching event arrived within ``timeout`` seconds.
        MatrixResponseError: a sync request failed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = _pending.setdefault(client, collections.deque())
    examined = 0

    try:
        async with asyncio.timeout_at(deadline):
            while True:
                while pending:
                    event_room_id, event = pending.popleft()
                    if room_id is not None and event_room_id != room_id:
                        continue
                    examined += 1
                    if predicate(event):
                        return event
                await _sync_once(client, _ms_until(deadline))
    except TimeoutError:
        where = f" in {room_id}" if room_id is not None else ""
        raise TimeoutError(
            f"{client.user_id} received no matching event{where} within {timeout:g} s "
            f"({examined} events examined)"
        ) from None


async def join_invites(client: nio.AsyncClient, timeout: float = 10.0) -> list[str]:
    """Wait for at least one room invite, join every pending invite and return the room ids.

    After joining, the client syncs once, so ``client.rooms`` contains the joined rooms.

    Raises:
        TimeoutError: no invite arrived within ``timeout`` seconds.
        MatrixResponseError: a sync or join request failed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    try:
        async with asyncio.timeout_at(deadline):
            while not client.invited_rooms:
                await _sync_once(client, _ms_until(deadline))
    except TimeoutError:
        raise TimeoutError(f"{client.user_id} received no room invite within {timeout:g} s") from None

    room_ids = list(client.invited_rooms)
    for room_id in room_ids:
        expect(await client.join(room_id), nio.JoinResponse)

    # nio moves a room from invited_rooms to rooms only when a sync shows the join.
    await _sync_once(client, long_poll_ms=1)
    return room_ids


async def send_text(
    client: nio.AsyncClient,
    room_id: str,
    body: str,
    *,
    thread_root: str | None = None,
    in_reply_to: str | None = None,
) -> str:
    """Send an ``m.text`` message and return its event id.

    With ``thread_root``, the message is a thread reply in the form Element sends: an
    ``m.thread`` relation to the root, with a fallback reply to ``in_reply_to`` (the
    latest event of the thread, the root by default) for clients without threads.
    """
    content: dict[str, object] = {"msgtype": "m.text", "body": body}
    if thread_root is not None:
        content["m.relates_to"] = {
            "rel_type": "m.thread",
            "event_id": thread_root,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": in_reply_to or thread_root},
        }
    elif in_reply_to is not None:
        content["m.relates_to"] = {"m.in_reply_to": {"event_id": in_reply_to}}

    response = expect(
        await client.room_send(room_id, "m.room.message", content), nio.RoomSendResponse
    )
    return response.event_id


def _ms_until(deadline: float) -> int:
    # At least 1 ms: nio sends no server timeout for 0 and then sets no client timeout.
    return max(1, int((deadline - asyncio.get_running_loop().time()) * 1000))


async def _sync_once(client: nio.AsyncClient, long_poll_ms: int) -> None:
    """Sync once from ``client.next_batch`` and buffer the timeline events.

    The server keeps the request open until an event arrives or ``long_poll_ms`` pass, and
    nio's own timeout ends 15 s after that.
    """
    response = expect(
        await client.sync(timeout=long_poll_ms, since=client.next_batch), nio.SyncResponse
    )

    pending = _pending.setdefault(client, collections.deque())
    for room_id, room_info in response.rooms.join.items():
        for event in room_info.timeline.events:
            pending.append((room_id, event))
