"""Requests (escalated conversations): creation, readable references, audited transitions, queries."""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from bot.errors import HandoffError
from bot.storage.store import Store, utcnow
from bot.storage.tables import Conversation, RelayedEvent, Request, RequestTransition

logger = logging.getLogger(__name__)
MAX_REFERENCE_ATTEMPTS = 10
# Seconds of the first pause after a reference clash, doubled at each attempt, with jitter so that
# workers that clashed do not clash again.
REFERENCE_RETRY_PAUSE = 0.01
# One lock per store, so that requests created at the same moment in one process take their numbers in turn.
_ALLOCATION_LOCKS: weakref.WeakKeyDictionary[Store, asyncio.Lock] = weakref.WeakKeyDictionary()


class Status(str, enum.Enum):
    NEW = "new"
    CLAIMED = "claimed"
    RESOLVED = "resolved"
    CLOSED = "closed"


# Allowed transitions; transfer and escalation keep a request open and go back to NEW.
TRANSITIONS = {
    Status.NEW: {Status.CLAIMED, Status.RESOLVED, Status.CLOSED, Status.NEW},
    Status.CLAIMED: {Status.RESOLVED, Status.CLOSED, Status.NEW, Status.CLAIMED},
    Status.RESOLVED: {Status.CLOSED, Status.NEW, Status.RESOLVED},
    Status.CLOSED: set(),
}


@dataclass(frozen=True)
class NewRequest:
    conversation_id: str
    channel: str
    level: int
    desk: str | None
    expertise: str
    summary: str
    profile: str | None
    school: str | None
    # Slot values that routing rules may match, kept for transfers and escalations.
    slots: dict = field(default_factory=dict)


class RequestBook:
    """Read and change requests; every change of status is recorded as a transition."""

    def __init__(self, store: Store, prefix: str = "ENT") -> None:
        self.store = store
        self.prefix = prefix

    async def create(self, new: NewRequest, actor: str = "assistant") -> Request:
        """Insert a request with the next reference of the year, such as ENT-2026-00042.

        The reference is the year's highest plus one. Within one process, creations take turns. A
        clash with another process (a worker, the CLI) is retried after a growing pause.
        """
        lock = _ALLOCATION_LOCKS.setdefault(self.store, asyncio.Lock())
        async with lock:
            return await self._create(new, actor)

    async def _create(self, new: NewRequest, actor: str) -> Request:
        for attempt in range(MAX_REFERENCE_ATTEMPTS):
            now = utcnow()
            stem = f"{self.prefix}-{now.year}-"
            async with self.store.session() as session:
                try:
                    async with session.begin():
                        last = await session.scalar(select(func.max(Request.reference)).where(Request.reference.like(stem + "%")))
                        number = int(last.rsplit("-", 1)[1]) + 1 if last else 1
                        row = Request(
                            reference=f"{stem}{number:05d}",
                            conversation_id=new.conversation_id,
                            created_at=now,
                            updated_at=now,
                            status=Status.NEW.value,
                            level=new.level,
                            desk=new.desk,
                            expertise=new.expertise,
                            summary=new.summary,
                            channel=new.channel,
                            profile=new.profile,
                            school=new.school,
                            details={"slots": new.slots} if new.slots else {},
                        )
                        session.add(row)
                        await session.flush()
                        session.add(
                            RequestTransition(
                                request_id=row.id, at=now, from_status=None, to_status=Status.NEW.value, actor=actor, desk=new.desk, level=new.level
                            )
                        )
                        await session.execute(
                            update(Conversation).where(Conversation.id == new.conversation_id).values(status="handoff", request_id=row.id)
                        )
                    logger.info("request %s created for conversation %s (desk %s)", row.reference, new.conversation_id, new.desk)
                    return row
                except IntegrityError:
                    # Another process took this reference, so count again after a pause.
                    logger.info("request reference clash for conversation %s, attempt %d", new.conversation_id, attempt + 1)
                    await asyncio.sleep(random.uniform(0.5, 1.5) * REFERENCE_RETRY_PAUSE * 2**attempt)
        raise HandoffError(f"could not allocate a request reference after {MAX_REFERENCE_ATTEMPTS} attempts")

    async def get(self, reference: str) -> Request | None:
        async with self.store.session() as session:
            return await session.scalar(select(Request).where(Request.reference == reference.upper()))

    async def by_id(self, request_id: int) -> Request | None:
        async with self.store.session() as session:
            return await session.get(Request, request_id)

    async def open_for_conversation(self, conversation_id: str) -> Request | None:
        async with self.store.session() as session:
            return await session.scalar(
                select(Request)
                .where(Request.conversation_id == conversation_id, Request.status.in_([Status.NEW.value, Status.CLAIMED.value]))
                .order_by(Request.id.desc())
            )

    async def latest_for_conversation(self, conversation_id: str) -> Request | None:
        async with self.store.session() as session:
            return await session.scalar(select(Request).where(Request.conversation_id == conversation_id).order_by(Request.id.desc()))

    async def transition(
        self,
        request: Request,
        to_status: Status,
        actor: str,
        note: str | None = None,
        desk: str | None = None,
        level: int | None = None,
        **values,
    ) -> Request:
        """Move a request to ``to_status``; raise HandoffError when the move is not allowed."""
        current = Status(request.status)
        if to_status not in TRANSITIONS[current]:
            raise HandoffError(f"request {request.reference} cannot go from {current.value} to {to_status.value}")
        now = utcnow()
        changes = {"status": to_status.value, "updated_at": now, **values}
        if desk is not None:
            changes["desk"] = desk
        if level is not None:
            changes["level"] = level
        if to_status is Status.CLAIMED and request.claimed_at is None:
            # The first claim counts; a later claim by another expert keeps that time.
            changes.setdefault("claimed_at", now)
        elif to_status is Status.RESOLVED:
            changes["resolved_at"] = now
        elif to_status is Status.CLOSED:
            changes["closed_at"] = now
        async with self.store.session() as session:
            async with session.begin():
                await session.execute(update(Request).where(Request.id == request.id).values(**changes))
                session.add(
                    RequestTransition(
                        request_id=request.id,
                        at=now,
                        from_status=current.value,
                        to_status=to_status.value,
                        actor=actor,
                        desk=desk if desk is not None else request.desk,
                        level=level if level is not None else request.level,
                        note=note,
                    )
                )
                conversation_status = "handoff" if to_status in {Status.NEW, Status.CLAIMED} else "active"
                await session.execute(
                    update(Conversation).where(Conversation.id == request.conversation_id).values(status=conversation_status)
                )
        logger.info("request %s: %s -> %s by %s", request.reference, current.value, to_status.value, actor)
        refreshed = await self.by_id(request.id)
        assert refreshed is not None
        return refreshed

    async def update(self, request: Request, **values) -> None:
        async with self.store.session() as session:
            async with session.begin():
                await session.execute(update(Request).where(Request.id == request.id).values(updated_at=utcnow(), **values))

    async def transitions(self, request: Request) -> Sequence[RequestTransition]:
        async with self.store.session() as session:
            return (await session.scalars(select(RequestTransition).where(RequestTransition.request_id == request.id).order_by(RequestTransition.id))).all()

    async def search(
        self,
        status: str | None = None,
        desk: str | None = None,
        level: int | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> Sequence[Request]:
        query = select(Request)
        if status:
            query = query.where(Request.status == status)
        if desk:
            query = query.where(Request.desk == desk)
        if level is not None:
            query = query.where(Request.level == level)
        if since is not None:
            query = query.where(Request.created_at >= since)
        query = query.order_by(Request.id)
        if limit:
            query = query.limit(limit)
        async with self.store.session() as session:
            return (await session.scalars(query)).all()

    # ----- Matrix events tied to a request -----

    async def remember_event(self, event_id: str, request: Request, room_id: str, kind: str, seq: int | None = None) -> None:
        async with self.store.session() as session:
            session.add(RelayedEvent(event_id=event_id, request_id=request.id, room_id=room_id, kind=kind, conversation_seq=seq, created_at=utcnow()))
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()

    async def by_event(self, event_id: str) -> tuple[Request, RelayedEvent] | None:
        async with self.store.session() as session:
            relayed = await session.get(RelayedEvent, event_id)
            if relayed is None:
                return None
            request = await session.get(Request, relayed.request_id)
            return (request, relayed) if request else None

    async def relayed_events(self, request: Request) -> Sequence[RelayedEvent]:
        """Return the Matrix events remembered for the request, oldest first."""
        async with self.store.session() as session:
            return (
                await session.scalars(
                    select(RelayedEvent).where(RelayedEvent.request_id == request.id).order_by(RelayedEvent.created_at)
                )
            ).all()

    async def unposted(self) -> Sequence[Request]:
        """Return open requests whose card could not be posted yet (Matrix was unreachable)."""
        async with self.store.session() as session:
            return (
                await session.scalars(
                    select(Request).where(Request.posted.is_(False), Request.status.in_([Status.NEW.value, Status.CLAIMED.value])).order_by(Request.id)
                )
            ).all()
