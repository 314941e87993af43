"""In-process CPU time per turn: REST turns through ``Assistant.handle``, without HTTP.

Run from the repository root, by hand, never by the test suite::

    python -m bench.turns --rounds 60

The script builds the runtime of ``entraide run`` on a new SQLite file, then sends ``--conversations``
concurrent conversations of 5 turns each, ``--rounds`` times, drawn from the load benchmark's
questions. It prints the CPU time of the whole process per turn (every thread, the database thread
included) and the wall-clock time per turn. A first round warms up the caches and is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.load import QUESTIONS, bench_config
from bot.config import load_settings
from bot.messages import IncomingMessage
from bot.outbox import CollectingOutput
from bot.runtime import Runtime

TURNS_PER_CONVERSATION = 5


async def measure(config: Path, conversations: int, rounds: int) -> tuple[int, float, float]:
    """Return (turns, CPU seconds, wall-clock seconds) of ``rounds`` rounds, after one warm-up round."""
    settings = load_settings(config)
    async with Runtime(settings, seed=1) as runtime:
        assistant = runtime.assistant

        async def converse(client: int, round_number: int) -> None:
            for turn in range(TURNS_PER_CONVERSATION):
                text = QUESTIONS[(client * 7 + turn + round_number) % len(QUESTIONS)]
                message = IncomingMessage(channel="rest", sender_id=f"bench-{client}-{round_number}", text=text)
                await assistant.handle(message, output=CollectingOutput("rest"), catch_up=True)

        await asyncio.gather(*(converse(client, -1) for client in range(conversations)))
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        for round_number in range(rounds):
            await asyncio.gather(*(converse(client, round_number) for client in range(conversations)))
        cpu, wall = time.process_time() - cpu_started, time.perf_counter() - wall_started
    return rounds * conversations * TURNS_PER_CONVERSATION, cpu, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="In-process CPU time per REST turn, without HTTP.")
    parser.add_argument("--rounds", type=int, default=60, help="measured rounds (default: 60)")
    parser.add_argument("--conversations", type=int, default=16, help="concurrent conversations per round (default: 16)")
    parser.add_argument("--models", type=Path, help="model folder to reuse (default: a temporary one, trained at start)")
    options = parser.parse_args(argv)
    if options.rounds < 1 or options.conversations < 1:
        parser.error("--rounds and --conversations must be at least 1")

    # Logging stays at INFO, as in the server, so its cost counts. Records go to /dev/null, not the terminal.
    logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w", encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="entraide-turns-") as directory:
        config = bench_config(Path(directory), options.models)
        turns, cpu, wall = asyncio.run(measure(config, options.conversations, options.rounds))
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}, load average {load}")
    print(f"{turns} turns: CPU {cpu / turns * 1000:.3f} ms per turn, wall clock {wall / turns * 1000:.3f} ms per turn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
