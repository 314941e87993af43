"""The Telegram channel, on python-telegram-bot 22: polling or webhook, commands, buttons and files.

See docs/telegram.md for the BotFather token and the polling and webhook settings.
"""

from connectors.telegram.connector import WEBHOOK_PATH, TelegramConnector
from connectors.telegram.outbound import CHANNEL, render_html, split_text

__all__ = ["CHANNEL", "WEBHOOK_PATH", "TelegramConnector", "render_html", "split_text"]
