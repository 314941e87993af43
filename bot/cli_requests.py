"""``entraide requests``: list, show and export the escalated requests."""

from __future__ import annotations

import argparse


def add_requests_command(commands, common: argparse.ArgumentParser) -> None:
    """Register ``entraide requests``."""
