"""The aiohttp application behind ``entraide run``."""

from __future__ import annotations

import argparse


def add_run_command(commands, common: argparse.ArgumentParser) -> None:
    """Register ``entraide run``."""
