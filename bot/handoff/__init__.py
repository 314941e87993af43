"""Human handoff: requests, routing to desks, and the desks themselves."""

from bot.handoff.desk import HandoffContext, HandoffDesk, HandoffTicket
from bot.handoff.requests import NewRequest, RequestBook, Status
from bot.handoff.routing import RouteQuery, Router

__all__ = ["HandoffContext", "HandoffDesk", "HandoffTicket", "NewRequest", "RequestBook", "RouteQuery", "Router", "Status"]
