"""The Matrix channel: desk rooms for experts, and direct chats between users and the assistant.

One sync loop reads every room. Events of desk rooms go to the :class:`ExpertDesk`, messages of
direct chats go to the assistant, and the connector implements the desk's ``DeskTransport``.
The sync token is kept in the store (``matrix:since``) and every handled event id is recorded,
so a restart neither replays old events nor loses the ones that arrived in between.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import nio

from bot.config import MatrixSettings
from bot.errors import ConnectorError
from bot.handoff.transport import Anchor, RoomText
from bot.messages import IncomingMessage, OutgoingMessage
from connectors.base import Connector
from connectors.matrix.client import MatrixClient, MatrixError
from connectors.matrix.content import direct_text, file_content, message_content, power_level, reaction_content, text_message

if TYPE_CHECKING:
    from bot.assistant import Assistant
    from bot.handoff.expert_desk import ExpertDesk
    from bot.storage.store import Store

logger = logging.getLogger(__name__)

CHANNEL = "matrix"
SINCE_KEY = "matrix:since"
DIRECT_KEY = "matrix:direct:{room_id}"
BUTTONS_KEY = "matrix:buttons:{room_id}"
POLL_TIMEOUT_MS = 30_000
TIMELINE_LIMIT = 50
# Pages of missed events fetched for a room after a gap (a long stop); older ones are skipped.
BACKFILL_PAGES = 5
STATE_TTL = 60.0
MAX_SYNC_BACKOFF = 60.0
STOP_TIMEOUT = 10.0
UNREADABLE_REPLY = "Je ne lis que les messages écrits : décrivez votre question en quelques mots."
ENCRYPTED_REPLY = (
    "Cette conversation est chiffrée et je ne peux pas lire vos messages. "
    "Ouvrez une conversation non chiffrée avec moi, ou utilisez l'assistant de l'ENT."
)


class MatrixConnector(Connector):
    """Matrix desk rooms and direct chats over one account."""

    name = CHANNEL

    def __init__(
        self,
        settings: MatrixSettings,
        store: Store,
        assistant: Assistant | None = None,
        desk: ExpertDesk | None = None,
        poll_timeout_ms: int = POLL_TIMEOUT_MS,
        timeline_limit: int = TIMELINE_LIMIT,
    ) -> None:
        self.settings = settings
        self.store = store
        self.assistant = assistant
        self.desk = desk
        self.poll_timeout_ms = poll_timeout_ms
        self.timeline_limit = timeline_limit
        self.client: MatrixClient | None = None
        self._filter_id: str | None = None
        self._since: str | None = None
        self._task: asyncio.Task | None = None
        self._poll: asyncio.Future | None = None
        self._stop = asyncio.Event()
        self._synced = False
        self._power: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._names: dict[tuple[str, str], str] = {}
        self._members: dict[str, set[str]] = {}
        self._direct: dict[str, str | None] = {}
        self._seen_invites: set[str] = set()

    def attach(self, assistant: Assistant) -> None:
        """Give the connector the assistant that replies in direct chats."""
        self.assistant = assistant

    @property
    def user_id(self) -> str:
        return self.settings.user_id or ""

    @property
    def ready(self) -> bool:
        return self._task is not None and not self._task.done() and self._synced

    # ----- lifecycle -----

    async def start(self) -> None:
        """Check the login, join the desk rooms, then run the sync loop in the background."""
        if self._task is not None:
            raise RuntimeError("MatrixConnector is already started; call stop() first")
        self.client = MatrixClient(self.settings)
        try:
            owner = await self.client.whoami()
            if owner != self.settings.user_id:
                raise ConnectorError(f"the Matrix access token belongs to {owner}, not to channels.matrix.user_id {self.settings.user_id}")
            self._filter_id = await self.client.upload_filter(
                room={
                    "timeline": {"types": ["m.room.message", "m.room.member", "m.room.power_levels"], "limit": self.timeline_limit},
                    "state": {"lazy_load_members": True},
                    "ephemeral": {"not_types": ["*"]},
                    "account_data": {"not_types": ["*"]},
                },
                presence={"not_types": ["*"]},
                account_data={"not_types": ["*"]},
            )
            if self.desk is not None:
                await self.desk.start()
            self._since = await self.store.get_state(SINCE_KEY)
            if self._since is None:
                await self._first_sync()
        except BaseException:
            await self.client.close()
            self.client = None
            raise
        self._stop.clear()
        # Every start request succeeded: ready until a sync fails.
        self._synced = True
        self._task = asyncio.create_task(self._sync_loop(), name=f"matrix-sync:{self.user_id}")
        logger.info("matrix connector started as %s", self.user_id)

    async def stop(self) -> None:
        """Stop after the event being handled, if any; the next start resumes from the saved token."""
        if self._task is None:
            return
        self._stop.set()
        if self._poll is not None:
            self._poll.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            logger.warning("matrix sync loop did not stop within %.0f s; cancelling it", STOP_TIMEOUT)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        except Exception:
            logger.exception("matrix sync loop had failed before the stop")
        self._task = None
        self._synced = False
        if self.client is not None:
            await self.client.close()
            self.client = None
        logger.info("matrix connector stopped")

    # ----- the assistant's channel -----

    async def send(self, recipient_id: str, message: OutgoingMessage) -> None:
        """Post an assistant message into the direct chat ``recipient_id`` (a room id)."""
        client = self._client()
        await client.send(recipient_id, "m.room.message", message_content(direct_text(message)))
        if message.buttons:
            choices = [[button.title, button.payload] for button in message.buttons]
            await self.store.set_state(BUTTONS_KEY.format(room_id=recipient_id), json.dumps(choices, ensure_ascii=False))

    # ----- DeskTransport -----

    async def join_room(self, room: str) -> str:
        client = self._client()
        room_id = await client.join(room)
        if await client.state_event(room_id, "m.room.encryption") is not None:
            logger.warning("room %s is encrypted: entraide sends plaintext there; use an unencrypted desk room", room_id)
        return room_id

    async def post(self, room_id: str, message: RoomText, anchor: Anchor | None = None) -> str:
        return await self._client().send(room_id, "m.room.message", message_content(message, anchor))

    async def post_file(self, room_id: str, filename: str, content_type: str, data: bytes, anchor: Anchor | None = None) -> str:
        client = self._client()
        uri = await client.upload(data, content_type, filename)
        return await client.send(room_id, "m.room.message", file_content(uri, filename, content_type, len(data), anchor))

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        return await self._client().send(room_id, "m.reaction", reaction_content(event_id, key))

    async def may_command(self, room_id: str, user_id: str) -> bool:
        cached = self._power.get(room_id)
        if cached is None or time.monotonic() - cached[0] > STATE_TTL:
            cached = (time.monotonic(), await self._client().state(room_id))
            self._power[room_id] = cached
        return power_level(cached[1], user_id) >= self.settings.command_power_level

    async def display_name(self, room_id: str, user_id: str) -> str:
        key = (room_id, user_id)
        if key not in self._names:
            name = None
            try:
                content = await self._client().state_event(room_id, "m.room.member", user_id)
                name = (content or {}).get("displayname")
            except MatrixError as exc:
                logger.debug("display name of %s in %s unavailable: %s", user_id, room_id, exc)
            self._names[key] = name if isinstance(name, str) and name.strip() else user_id.lstrip("@").split(":")[0]
        return self._names[key]

    # ----- sync -----

    def _client(self) -> MatrixClient:
        if self.client is None:
            raise ConnectorError("the Matrix connector is not started; call start() first")
        return self.client

    async def _first_sync(self) -> None:
        """Start from now on a new database: accept pending direct invites, skip the rooms' history."""
        response = await self._client().sync(None, 0, self._filter_id)
        for room_id, info in response.rooms.invite.items():
            await self._on_invite(room_id, info)
        self._since = response.next_batch
        await self.store.set_state(SINCE_KEY, self._since)
        logger.info("matrix: first sync done, earlier room history skipped")

    async def _sync_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._poll = asyncio.ensure_future(self._client().sync(self._since, self.poll_timeout_ms, self._filter_id))
            try:
                response = await self._poll
            except asyncio.CancelledError:
                if self._stop.is_set() and not asyncio.current_task().cancelling():
                    break
                raise
            except MatrixError as exc:
                failures += 1
                self._synced = False
                delay = min(MAX_SYNC_BACKOFF, 0.5 * 2 ** min(failures, 8))
                if failures == 1 or failures % 10 == 0:
                    logger.warning("matrix sync failed %d time(s) in a row: %s; retrying in %.1f s", failures, exc, delay)
                await self._sleep(delay)
                continue
            finally:
                self._poll = None
            if failures:
                logger.info("matrix sync works again after %d failure(s)", failures)
            failures = 0
            self._synced = True
            try:
                await self._handle_sync(response)
            except Exception:
                # The token stays where it was, so the same batch is handled again (handled events are skipped).
                logger.exception("matrix sync batch could not be handled; retrying from the same position")
                await self._sleep(MAX_SYNC_BACKOFF / 4)
                continue
            if self.desk is not None and self.desk.has_pending:
                try:
                    await self.desk.flush_pending()
                except Exception:
                    logger.exception("posting the waiting requests failed")

    async def _sleep(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def _handle_sync(self, response: nio.SyncResponse) -> None:
        for room_id, invite in response.rooms.invite.items():
            try:
                await self._on_invite(room_id, invite)
            except ConnectorError as exc:
                logger.warning("invite to room %s could not be accepted: %s", room_id, exc)
        for room_id, info in response.rooms.join.items():
            for source in await self._timeline(room_id, info.timeline):
                try:
                    await self._on_event(room_id, source)
                except ConnectorError as exc:
                    logger.warning("event %s in room %s: %s", source.get("event_id"), room_id, exc)
                except Exception:
                    logger.exception("event %s in room %s could not be handled", source.get("event_id"), room_id)
        for room_id in response.rooms.leave:
            self._forget(room_id)
            if self.desk is not None and self.desk.desk_of_room(room_id) is not None:
                logger.error("the assistant left desk room %s; invite it again and restart entraide", room_id)
        self._since = response.next_batch
        await self.store.set_state(SINCE_KEY, self._since)

    async def _timeline(self, room_id: str, timeline: Any) -> list[dict[str, Any]]:
        """Return the room's new events, fetching the ones a limited timeline left out since the last sync."""
        events = [event.source for event in timeline.events]
        if not timeline.limited or self._since is None or not timeline.prev_batch:
            return events
        earlier: list[dict[str, Any]] = []
        token = timeline.prev_batch
        for _ in range(BACKFILL_PAGES):
            page = await self._client().messages_before(room_id, token, self._since, self.timeline_limit)
            earlier.extend(event.source for event in page.chunk)
            if not page.chunk or not page.end or page.end == token:
                break
            token = page.end
        else:
            logger.warning("room %s: more than %d pages of events missed; older ones are skipped", room_id, BACKFILL_PAGES)
        logger.info("room %s: %d missed events fetched", room_id, len(earlier))
        return list(reversed(earlier)) + events

    async def _on_invite(self, room_id: str, invite: Any) -> None:
        if room_id in self._seen_invites:
            return
        self._seen_invites.add(room_id)
        # nio moves the content of invite events out of their source, into the parsed event.
        member = next(
            (
                event
                for event in invite.invite_state
                if isinstance(event, nio.InviteMemberEvent) and event.state_key == self.user_id and event.membership == "invite"
            ),
            None,
        )
        is_direct = member is not None and bool(member.content.get("is_direct"))
        if not (self.settings.direct_chats and is_direct and self.assistant is not None):
            logger.info("invite to room %s ignored: not a direct chat, or direct chats are off", room_id)
            return
        client = self._client()
        await client.join(room_id)
        if await client.state_event(room_id, "m.room.encryption") is not None:
            # NOTE: without end-to-end encryption support, the assistant cannot read encrypted direct chats.
            logger.warning("direct chat %s is encrypted: the assistant cannot read it", room_id)
            await self.send(room_id, OutgoingMessage(text=ENCRYPTED_REPLY))
            return
        await self.store.set_state(DIRECT_KEY.format(room_id=room_id), member.sender)
        self._direct[room_id] = member.sender
        logger.info("joined direct chat %s", room_id)

    async def _on_event(self, room_id: str, source: dict[str, Any]) -> None:
        event_type = source.get("type")
        event_id = source.get("event_id")
        if event_type == "m.room.power_levels":
            self._power.pop(room_id, None)
        elif event_type == "m.room.member":
            self._forget(room_id)
        if event_type != "m.room.message" or source.get("sender") == self.user_id or not isinstance(event_id, str):
            return
        if self.desk is not None and self.desk.desk_of_room(room_id) is not None:
            if not await self.store.mark_processed(CHANNEL, event_id):
                logger.debug("event %s already handled", event_id)
                return
            message = text_message(room_id, source)
            if message is None:
                logger.info("event %s in desk room %s is not a text message: ignored", event_id, room_id)
                return
            await self.desk.handle_expert_message(message)
        elif await self._is_direct(room_id, str(source.get("sender", ""))):
            await self._on_direct_message(room_id, event_id, source)
        else:
            logger.info("event %s in room %s, which is neither a desk room nor a direct chat: ignored", event_id, room_id)

    async def _on_direct_message(self, room_id: str, event_id: str, source: dict[str, Any]) -> None:
        message = text_message(room_id, source)
        if message is not None and message.replaces is not None:
            logger.debug("edit %s in direct chat %s: ignored", event_id, room_id)
            return
        if message is None:
            if await self.store.mark_processed(CHANNEL, event_id):
                await self.send(room_id, OutgoingMessage(text=UNREADABLE_REPLY))
            return
        key = BUTTONS_KEY.format(room_id=room_id)
        choices = json.loads(await self.store.get_state(key) or "[]")
        if choices:
            # A numbered choice applies only to the message that offered it.
            await self.store.set_state(key, "[]")
        text, payload = message.body, None
        typed = message.body.strip()
        if typed.isdigit() and 1 <= int(typed) <= len(choices):
            text, payload = choices[int(typed) - 1]
        await self.assistant.handle(IncomingMessage(channel=CHANNEL, sender_id=room_id, text=text, message_id=event_id, payload=payload))

    async def _is_direct(self, room_id: str, sender: str) -> bool:
        """Tell whether the room is a direct chat between the assistant and ``sender`` only."""
        if not self.settings.direct_chats or self.assistant is None:
            return False
        if room_id not in self._direct:
            self._direct[room_id] = await self.store.get_state(DIRECT_KEY.format(room_id=room_id))
        if self._direct[room_id] is None:
            return False
        if room_id not in self._members:
            self._members[room_id] = set(await self._client().joined_members(room_id))
        return self._members[room_id] == {self.user_id, sender}

    def _forget(self, room_id: str) -> None:
        self._members.pop(room_id, None)
        for key in [key for key in self._names if key[0] == room_id]:
            del self._names[key]
