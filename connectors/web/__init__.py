"""The web widget channel."""

from connectors.web.connector import WebConnector

__all__ = ["WebConnector"]
