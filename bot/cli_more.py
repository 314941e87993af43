"""Commands that run the assistant: shell, db and requests (run is in bot.server)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

from bot.config import load_settings
from bot.messages import IncomingMessage, OutgoingMessage


class ShellOutput:
    name = "shell"

    def __init__(self) -> None:
        self.printed = 0

    async def send(self, recipient_id: str, message: OutgoingMessage) -> None:
        label = f"[{message.label}] " if message.label else ""
        print(f"{label}{message.text}")
        for index, button in enumerate(message.buttons, start=1):
            print(f"  {index}. {button.title}  ({button.payload})")
        sys.stdout.flush()


async def _shell(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bot.dialogue.events import ActionExecuted, UserUttered
    from bot.runtime import Runtime

    settings = load_settings(Path(args.config) if args.config else None)
    interactive = sys.stdin.isatty()
    sender = args.sender or f"shell-{uuid.uuid4().hex[:12]}"
    output = ShellOutput()
    async with Runtime(settings, progress=lambda text: print(text, file=sys.stderr)) as runtime:
        runtime.outbox.register(output)
        assistant = runtime.assistant
        if interactive:
            print("Écrivez votre message (Ctrl-D pour quitter).")
        last_buttons: list = []
        loop = asyncio.get_running_loop()
        while True:
            try:
                line = await loop.run_in_executor(None, _read_line, interactive)
            except EOFError:
                break
            text = line.rstrip("\n")
            payload = None
            # In the shell, a button is chosen by its number.
            if text.strip().isdigit() and 0 < int(text.strip()) <= len(last_buttons):
                payload = last_buttons[int(text.strip()) - 1].payload
            if not interactive:
                print(f"> {text}")
            conversation = await runtime.store.conversation("shell", sender)
            before = conversation.last_seq
            replies = await assistant.handle(IncomingMessage(channel="shell", sender_id=sender, text=text, payload=payload))
            last_buttons = [button for reply in replies for button in reply.buttons]
            if args.debug:
                for stored in await runtime.store.events(conversation.id, since=before):
                    event = stored.event
                    if isinstance(event, UserUttered) and event.intent:
                        entities = ", ".join(f"{e['entity']}={e['value']}" for e in event.entities) or "-"
                        print(f"    intent={event.intent} confidence={event.confidence:.2f} entities={entities}", file=sys.stderr)
                    elif isinstance(event, ActionExecuted):
                        print(f"    action={event.name} policy={event.policy}", file=sys.stderr)
    return 0


def _read_line(interactive: bool) -> str:
    if interactive:
        return input("vous> ")
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line


def cmd_shell(args: argparse.Namespace) -> int:
    return asyncio.run(_shell(args))


def cmd_db(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bot.storage import migrate
    from bot.storage.store import Store

    settings = load_settings(Path(args.config) if args.config else None)

    async def run() -> None:
        store = Store(settings.storage.url)
        await store.start(migrate_schema=False)
        try:
            await migrate.upgrade(store.engine, args.revision)
            print(f"database at revision {await migrate.current_revision(store.engine)}")
        finally:
            await store.stop()

    asyncio.run(run())
    return 0


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    """Register the long-running and database commands on the ``entraide`` parser."""
    shell = commands.add_parser("shell", parents=[common], help="chat with the assistant in the terminal")
    shell.add_argument("--debug", action="store_true", help="show intent, confidence, entities, actions and policies per turn")
    shell.add_argument("--sender", help="conversation id to use or resume (default: a new one)")
    shell.set_defaults(handler=cmd_shell)

    db = commands.add_parser("db", parents=[common], help="database schema commands")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser("upgrade", parents=[common], help="apply migrations up to a revision")
    upgrade.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    upgrade.set_defaults(handler=cmd_db)

    from bot.cli_requests import add_requests_command

    add_requests_command(commands, common)

    run = commands.add_parser("run", parents=[common], help="serve the widget, the HTTP API and the enabled channels")
    run.add_argument("--host", help="address to listen on (default: server.host, 127.0.0.1)")
    run.add_argument("--port", type=int, help="TCP port to listen on (default: server.port, 5005)")
    run.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    # aiohttp and the model stack load only for the commands that need them.
    from bot.server import cmd_run as run_server

    return run_server(args)
