"""Coordination between workers: per-conversation locks and fan-out of messages to every worker.

One process needs none of this: ``LocalCoordinator`` keeps FIFO locks in memory and delivers
directly. Several workers behind a reverse proxy share PostgreSQL and Redis. ``RedisCoordinator``
adds a Redis lock around each turn, so two workers never handle one conversation at the same time.
It also publishes the messages of channels whose connections live in one worker only (widget
WebSockets), so the worker holding the user's socket delivers them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from bot.data.domain import Button
from bot.errors import StorageError
from bot.locks import ConversationLocks
from bot.messages import OutgoingMessage, Role

logger = logging.getLogger(__name__)

Deliver = Callable[[str, str, OutgoingMessage], Awaitable[None]]
FANOUT_CHANNEL = "entraide:fanout"
# A turn longer than this loses its Redis lock; a crashed worker's lock expires after it.
LOCK_TIMEOUT_SECONDS = 60.0
LOCK_WAIT_SECONDS = 120.0


def encode(channel: str, recipient_id: str, message: OutgoingMessage) -> str:
    return json.dumps(
        {
            "channel": channel,
            "recipient_id": recipient_id,
            "text": message.text,
            "buttons": [[button.title, button.payload] for button in message.buttons],
            "role": message.role.value,
            "label": message.label,
            "response": message.response,
            "seq": message.seq,
            "time": message.time.isoformat() if message.time else None,
            "metadata": message.metadata,
        },
        ensure_ascii=False,
    )


def decode(raw: str | bytes) -> tuple[str, str, OutgoingMessage]:
    data = json.loads(raw)
    message = OutgoingMessage(
        text=data["text"],
        buttons=tuple(Button(title, payload) for title, payload in data["buttons"]),
        role=Role(data["role"]),
        label=data["label"],
        response=data["response"],
        seq=data["seq"],
        time=datetime.fromisoformat(data["time"]) if data["time"] else None,
        metadata=data["metadata"] or {},
    )
    return data["channel"], data["recipient_id"], message


class LocalCoordinator:
    """One process: in-memory FIFO locks, direct delivery."""

    def __init__(self) -> None:
        self.locks = ConversationLocks()
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def stop(self) -> None:
        self._deliver = None

    def hold(self, key: str):
        return self.locks.hold(key)

    async def fan_out(self, channel: str, recipient_id: str, message: OutgoingMessage) -> None:
        if self._deliver is not None:
            await self._deliver(channel, recipient_id, message)


class RedisCoordinator:
    """Several workers: a Redis lock per conversation and a pub/sub channel for fan-out."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.locks = ConversationLocks()
        self._redis = None
        self._listener: asyncio.Task | None = None
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        import redis.asyncio as redis
        from redis.exceptions import RedisError

        self._deliver = deliver
        self._redis = redis.Redis.from_url(self.url)
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            await self._redis.aclose()
            self._redis = None
            raise StorageError(f"cannot reach Redis at {self.url}: {exc}") from None
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(FANOUT_CHANNEL)
        self._listener = asyncio.create_task(self._listen(pubsub), name="RedisCoordinator:fanout")
        logger.info("Redis coordination started")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            try:
                await self._listener
            except asyncio.CancelledError:
                pass
            self._listener = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        logger.info("Redis coordination stopped")

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        if self._redis is None:
            raise RuntimeError("RedisCoordinator is not started; call 'await coordinator.start(...)' first")
        # The local lock keeps arrival order inside this worker; the Redis lock excludes the others.
        async with self.locks.hold(key):
            lock = self._redis.lock(f"entraide:lock:{key}", timeout=LOCK_TIMEOUT_SECONDS, sleep=0.01, blocking_timeout=LOCK_WAIT_SECONDS)
            acquired = await lock.acquire()
            if not acquired:
                raise StorageError(f"timed out after {LOCK_WAIT_SECONDS:.0f} s waiting for the lock of a conversation")
            try:
                yield
            finally:
                try:
                    await lock.release()
                except Exception as exc:  # noqa: BLE001 - an expired lock must not hide the turn's outcome
                    logger.warning("Redis lock released late (%s): the turn took over %.0f s", exc, LOCK_TIMEOUT_SECONDS)

    async def fan_out(self, channel: str, recipient_id: str, message: OutgoingMessage) -> None:
        if self._redis is None:
            raise RuntimeError("RedisCoordinator is not started")
        await self._redis.publish(FANOUT_CHANNEL, encode(channel, recipient_id, message))

    async def _listen(self, pubsub) -> None:
        try:
            async for item in pubsub.listen():
                if item.get("type") != "message":
                    continue
                try:
                    channel, recipient_id, message = decode(item["data"])
                except (ValueError, KeyError) as exc:
                    logger.error("malformed fan-out message ignored: %s", exc)
                    continue
                if self._deliver is not None:
                    try:
                        await self._deliver(channel, recipient_id, message)
                    except Exception:
                        logger.exception("fan-out delivery through %s failed", channel)
        except asyncio.CancelledError:
            await pubsub.aclose()
            raise


def make_coordinator(redis_url: str | None):
    return RedisCoordinator(redis_url) if redis_url else LocalCoordinator()
