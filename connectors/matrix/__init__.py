"""The Matrix channel (also Tchap): expert desk rooms and direct chats, through matrix-nio."""

from connectors.matrix.client import MatrixClient, MatrixError, MatrixRateLimited, MatrixRequestError, MatrixUnavailable
from connectors.matrix.connector import MatrixConnector

__all__ = ["MatrixClient", "MatrixConnector", "MatrixError", "MatrixRateLimited", "MatrixRequestError", "MatrixUnavailable"]
