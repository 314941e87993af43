"""The connector interface every channel implements: a name, start, stop and send."""

from __future__ import annotations

import abc

from bot.messages import OutgoingMessage


class Connector(abc.ABC):
    """A channel between users and the assistant.

    ``start`` begins receiving (polling, sync loop, HTTP routes) and ``stop`` ends it. ``send``
    delivers one message to one recipient and raises ConnectorError (or RecipientBlocked) on failure.
    """

    name: str = ""

    async def start(self) -> None:
        """Begin receiving messages; the default does nothing (request/response channels)."""

    async def stop(self) -> None:
        """Stop receiving and release resources; the default does nothing."""

    @abc.abstractmethod
    async def send(self, recipient_id: str, message: OutgoingMessage) -> None:
        """Deliver ``message`` to ``recipient_id`` on this channel."""

    def setup_routes(self, app) -> None:
        """Add the connector's HTTP routes (webhooks, WebSocket) to the aiohttp application."""

    @property
    def ready(self) -> bool:
        """Tell whether the connector is started and able to send."""
        return True
