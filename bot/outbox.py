"""The Outbox: deliver each outgoing message through the connector of its conversation."""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from bot.errors import ConnectorError, RecipientBlocked
from bot.messages import ConversationKey, OutgoingMessage

logger = logging.getLogger(__name__)


@runtime_checkable
class OutputChannel(Protocol):
    """Anything that can deliver a message to one recipient of one channel."""

    name: str

    async def send(self, recipient_id: str, message: OutgoingMessage) -> None: ...


class CollectingOutput:
    """An output for request/response channels: keeps the messages for the HTTP response."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: list[tuple[str, OutgoingMessage]] = []

    async def send(self, recipient_id: str, message: OutgoingMessage) -> None:
        self.messages.append((recipient_id, message))


class Outbox:
    """Route messages to registered channels by the conversation's channel name.

    A channel with ``fan_out = True`` keeps its connections in one worker only (widget WebSockets), so
    its messages go through the coordinator, which passes them to every worker's ``deliver_local``.
    """

    def __init__(self, coordinator=None) -> None:
        self._channels: dict[str, OutputChannel] = {}
        self.blocked_callback = None
        self.coordinator = coordinator

    def register(self, channel: OutputChannel) -> None:
        if not isinstance(channel, OutputChannel):
            raise TypeError(f"expected an object with 'name' and 'send', got {type(channel).__name__}")
        if channel.name in self._channels:
            raise ValueError(f"a channel named {channel.name!r} is already registered")
        self._channels[channel.name] = channel

    def unregister(self, name: str) -> None:
        self._channels.pop(name, None)

    def has(self, name: str) -> bool:
        return name in self._channels

    async def send(self, key: ConversationKey, message: OutgoingMessage, conversation_id: str | None = None) -> bool:
        """Send one message; return False when it could not be delivered now (it stays in the store)."""
        channel = self._channels.get(key.channel)
        if channel is None:
            logger.warning("no connector for channel %s; conversation %s keeps the message in the store", key.channel, conversation_id)
            return False
        if getattr(channel, "fan_out", False) and self.coordinator is not None:
            await self.coordinator.fan_out(key.channel, key.sender_id, message)
            logger.info("outbound message channel=%s conversation=%s seq=%s", key.channel, conversation_id, message.seq)
            return True
        try:
            await channel.send(key.sender_id, message)
        except RecipientBlocked:
            logger.warning("conversation %s: the user blocked the assistant on %s", conversation_id, key.channel)
            if self.blocked_callback is not None:
                await self.blocked_callback(conversation_id)
            return False
        except ConnectorError as exc:
            logger.error("conversation %s: sending through %s failed: %s", conversation_id, key.channel, exc)
            return False
        logger.info("outbound message channel=%s conversation=%s seq=%s", key.channel, conversation_id, message.seq)
        return True

    async def deliver_local(self, channel_name: str, recipient_id: str, message: OutgoingMessage) -> None:
        """Send through this worker's own connector (the coordinator calls this for fan-out)."""
        channel = self._channels.get(channel_name)
        if channel is not None:
            await channel.send(recipient_id, message)
