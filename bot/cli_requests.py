"""``entraide requests``: list, show and export the escalated requests.

Times are printed in UTC. ``export`` writes one row (CSV) or one JSON object (JSONL) per request,
to a file or to standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from bot.config import load_settings
from bot.errors import HandoffError

EXPORT_FIELDS = (
    "reference",
    "status",
    "level",
    "desk",
    "expertise",
    "channel",
    "profile",
    "school",
    "assignee",
    "created_at",
    "claimed_at",
    "resolved_at",
    "closed_at",
    "outcome",
    "satisfaction",
    "posted",
    "summary",
    "conversation_id",
)
STATUSES = ("new", "claimed", "resolved", "closed")


def _date(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid date {value!r}: expected YYYY-MM-DD") from None


def _time(value: datetime | None) -> str:
    from bot.storage.store import aware

    return aware(value).strftime("%Y-%m-%d %H:%M") if value else "-"


def _iso(value: datetime | None) -> str | None:
    from bot.storage.store import aware

    return aware(value).isoformat() if value else None


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", choices=STATUSES, help="only requests in this status")
    parser.add_argument("--desk", help="only requests now at this desk (its name in config.yml)")
    parser.add_argument("--level", type=int, choices=(1, 2, 3), help="only requests now at this support level")
    parser.add_argument("--since", type=_date, metavar="YYYY-MM-DD", help="only requests created on or after this day (UTC)")


async def _with_book(args: argparse.Namespace, work) -> int:
    from bot.handoff.requests import RequestBook
    from bot.storage.store import Store

    settings = load_settings(Path(args.config) if args.config else None)
    store = Store(settings.storage.url)
    await store.start()
    try:
        return await work(store, RequestBook(store, settings.handoff.reference_prefix))
    finally:
        await store.stop()


async def _search(book, args: argparse.Namespace):
    return await book.search(status=args.status, desk=args.desk, level=args.level, since=args.since)


def cmd_list(args: argparse.Namespace) -> int:
    async def work(store, book) -> int:
        requests = await _search(book, args)
        header = f"{'reference':<16} {'status':<9} {'lvl':>3} {'desk':<14} {'created (UTC)':<17} {'assignee':<24} {'channel':<9} satisfaction"
        print(header)
        for request in requests:
            satisfaction = f"{request.satisfaction}/5" if request.satisfaction else "-"
            print(
                f"{request.reference:<16} {request.status:<9} {request.level:>3} {request.desk or '-':<14} "
                f"{_time(request.created_at):<17} {request.assignee or '-':<24} {request.channel or '-':<9} {satisfaction}"
            )
        print(f"{len(requests)} request(s)")
        return 0

    return asyncio.run(_with_book(args, work))


def cmd_show(args: argparse.Namespace) -> int:
    async def work(store, book) -> int:
        request = await book.get(args.reference)
        if request is None:
            raise HandoffError(f"request {args.reference} not found; list the references with 'entraide requests list'")
        for name in EXPORT_FIELDS:
            value = getattr(request, name)
            if isinstance(value, datetime):
                value = _time(value) + " UTC"
            elif value is None:
                value = "-"
            print(f"{name + ':':<17}{value}")
        print("\ntranscript:")
        for at, role, text in await _transcript(store, request):
            print(f"  {_time(at)}  {role:<24} {text}")
        print("\ntransitions:")
        for transition in await book.transitions(request):
            note = f"  ({transition.note})" if transition.note else ""
            print(
                f"  {_time(transition.at)}  {transition.from_status or '-':>8} -> {transition.to_status:<8} "
                f"by {transition.actor}, desk {transition.desk or '-'}, level {transition.level or '-'}{note}"
            )
        return 0

    return asyncio.run(_with_book(args, work))


async def _transcript(store, request) -> list[tuple[datetime, str, str]]:
    """Return the messages of the session in which the request was opened, up to its closing."""
    from bot.dialogue.events import BotUttered, ExpertUttered, Restarted, SessionStarted, UserUttered
    from bot.storage.store import aware

    created = aware(request.created_at)
    closed = aware(request.closed_at)
    events = [stored.event for stored in await store.events(request.conversation_id)]
    start = 0
    for index, event in enumerate(events):
        if isinstance(event, (SessionStarted, Restarted)) and aware(event.timestamp) <= created:
            start = index
    lines = []
    for event in events[start:]:
        at = aware(event.timestamp)
        if closed is not None and at > closed:
            break
        if isinstance(event, UserUttered) and event.text:
            lines.append((at, "user", event.text))
        elif isinstance(event, BotUttered):
            lines.append((at, "bot", event.text))
        elif isinstance(event, ExpertUttered):
            lines.append((at, f"expert ({event.label or '-'})", event.text))
    return lines


def cmd_export(args: argparse.Namespace) -> int:
    async def work(store, book) -> int:
        requests = await _search(book, args)
        rows = []
        for request in requests:
            row: dict[str, Any] = {}
            for name in EXPORT_FIELDS:
                value = getattr(request, name)
                row[name] = _iso(value) if isinstance(value, datetime) else value
            if args.format == "jsonl":
                row["transitions"] = [
                    {
                        "at": _iso(item.at),
                        "from": item.from_status,
                        "to": item.to_status,
                        "actor": item.actor,
                        "desk": item.desk,
                        "level": item.level,
                        "note": item.note,
                    }
                    for item in await book.transitions(request)
                ]
            rows.append(row)
        if args.out:
            with open(args.out, "w", encoding="utf-8", newline="") as output:
                _write(rows, args.format, output)
            print(f"wrote {len(rows)} request(s) to {args.out}", file=sys.stderr)
        else:
            _write(rows, args.format, sys.stdout)
        return 0

    return asyncio.run(_with_book(args, work))


def _write(rows: list[dict[str, Any]], form: str, output: TextIO) -> None:
    if form == "csv":
        writer = csv.DictWriter(output, fieldnames=EXPORT_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        return
    for row in rows:
        output.write(json.dumps(row, ensure_ascii=False) + "\n")


def add_requests_command(commands, common: argparse.ArgumentParser) -> None:
    """Register ``entraide requests``."""
    requests = commands.add_parser("requests", parents=[common], help="list, show and export the requests handed to desks")
    actions = requests.add_subparsers(dest="requests_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", parents=[common], help="one line per request, oldest first")
    _add_filters(listing)
    listing.set_defaults(handler=cmd_list)

    show = actions.add_parser("show", parents=[common], help="a request's fields, transcript and transitions")
    show.add_argument("reference", help="the request reference, such as ENT-2026-00042")
    show.set_defaults(handler=cmd_show)

    export = actions.add_parser("export", parents=[common], help="write the requests as CSV or JSON Lines")
    export.add_argument("--format", choices=("csv", "jsonl"), required=True, help="csv: one row per request; jsonl: one object per line, with transitions")
    export.add_argument("--out", metavar="FILE", help="file to write (default: standard output)")
    _add_filters(export)
    export.set_defaults(handler=cmd_export)
