"""Load benchmark of ``entraide run``: widget users over WebSocket, REST turns and ``/model/parse``.

Run it by hand from the repository root. It is never part of the test suite:

    python -m bench.load --spawn --users 100 500 1000 --messages 5 --think 10 --duration 60

Every phase runs for a fixed duration and stops by itself. Only 127.0.0.1 is contacted.

1. Widget: N simulated users keep a WebSocket open on ``/widget/ws``. Each sends ``--messages``
   French questions with a random think time between 0.5 and 1.5 times ``--think`` seconds, then
   closes and starts over as a new conversation until the phase ends. The latency of a turn runs
   from sending the message to the first bot frame whose ``seq`` follows the echo of that message.
2. REST: ``--rest-clients`` clients post full turns to ``/webhooks/rest/webhook`` back to back.
3. Parse: as many clients post to ``/model/parse`` back to back.

``--rasa-url`` runs phases 2 and 3 against a Rasa server too (Rasa has no widget WebSocket) and
prints entraide's ratios to it. ``--spawn`` starts a fresh ``entraide run`` for each phase, on a
free port with a new SQLite database, and stops it by PID when the phase ends. All simulated users
share 127.0.0.1, so the spawned server gets a configuration whose rate limits cannot be reached. A
server that you start yourself needs the same (see ``bench_config``), or it responds 429 and closes
sockets with 4429.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

logger = logging.getLogger("bench.load")

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
# Limits that no benchmark reaches. The shipped defaults apply per client address, and all simulated
# users come from 127.0.0.1.
UNREACHABLE_LIMIT = 1_000_000_000
READY_TIMEOUT = 300.0
# The widget target: this many concurrent users with p99 under 500 ms and no error.
WIDGET_TARGET_USERS = 1000
STOP_TIMEOUT = 15.0

# Questions users of an ENT ask, written for this benchmark (not copied from the training data).
QUESTIONS = [
    "Bonjour",
    "bonjour, j'ai un souci avec l'ENT",
    "Je n'arrive plus à me connecter à l'ENT depuis ce matin",
    "J'ai oublié mon mot de passe, comment je fais ?",
    "je me souviens plus de mon identifiant",
    "Mon compte est bloqué après plusieurs essais",
    "Comment activer mon compte la première fois ?",
    "où trouver le code d'activation pour mon premier accès",
    "Je ne peux pas me connecter avec EduConnect",
    "la connexion avec FranceConnect ne marche pas",
    "L'application mobile ne s'ouvre plus sur mon téléphone",
    "comment installer l'appli sur ma tablette ?",
    "Je ne reçois pas les messages des professeurs",
    "comment envoyer un message au professeur principal",
    "Où voir les devoirs de ma fille pour demain ?",
    "le cahier de textes est vide alors que le prof a donné du travail",
    "Je ne vois pas les notes du trimestre",
    "comment justifier une absence de mon fils",
    "où sont rangés les documents partagés par la classe ?",
    "je n'arrive pas à déposer un fichier dans mon espace",
    "Comment désactiver les notifications par courriel ?",
    "je ne reçois aucune notification sur mon portable",
    "J'ai trois enfants, comment passer d'un compte à l'autre ?",
    "mon deuxième enfant n'apparaît pas dans mon compte parent",
    "Comment créer un groupe pour ma classe de 4e ?",
    "je n'ai pas les droits pour publier dans l'espace de l'école",
    "Comment ouvrir un blog de classe ?",
    "les élèves peuvent-ils commenter les articles du blog ?",
    "J'ai une erreur 500 quand j'ouvre la messagerie",
    "la page reste blanche après la connexion",
    "Le site affiche « service indisponible »",
    "Je voudrais parler à quelqu'un",
    "est-ce que je peux avoir un conseiller ?",
    "je suis enseignant au collège",
    "Je suis parent d'élève",
    "je suis directrice d'école",
    "mon établissement est le 0751234A",
    "Tu es un robot ?",
    "merci beaucoup",
    "Merci, c'est bon",
    "oui",
    "non, ça ne marche toujours pas",
    "au revoir",
    "Quel temps fait-il à Lyon ?",
    "c'est quoi la date des vacances de printemps",
    "jarrive pa a me co",
    "mdp oublié",
    "pb de connexion sur l'ENT stp",
]


# ----- the server under test ---------------------------------------------------------------


def free_port() -> int:
    """Return a port on 127.0.0.1 that was free a moment ago; the caller binds it soon after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def bench_config(directory: Path, models: Path | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a copy of the repository's config.yml for benchmarks into ``directory`` and return its path.

    The copy reads the repository's data, keeps models in ``models`` (default ``directory/models``),
    stores into ``directory/bench.db`` and raises every rate limit out of reach. ``extra`` is merged
    over the result, key by key.
    """
    from bot._yaml import load_yaml
    from bot.errors import ConfigError

    raw = json.loads(json.dumps(load_yaml(REPO / "config.yml", ConfigError)))
    data = raw.setdefault("data", {})
    for key in ("nlu", "stories", "domain", "tests"):
        data[key] = str(REPO / data.get(key, key))
    data["models"] = str(models or directory / "models")
    raw.setdefault("storage", {})["url"] = f"sqlite+aiosqlite:///{directory / 'bench.db'}"
    raw.setdefault("server", {})["requests_per_minute"] = UNREACHABLE_LIMIT
    web = raw.setdefault("channels", {}).setdefault("web", {})
    web["messages_per_minute"] = UNREACHABLE_LIMIT
    web["connections_per_minute"] = UNREACHABLE_LIMIT
    if extra:
        _merge(raw, extra)
    path = directory / "config.yml"
    # JSON is valid YAML.
    path.write_text(json.dumps(raw, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def entraide_command() -> str:
    """Return the ``entraide`` script of the running interpreter's environment."""
    return str(Path(sys.executable).parent / "entraide")


def read_status_kib(pid: int, field_name: str) -> int | None:
    """Read a ``/proc/<pid>/status`` field in KiB (VmHWM is the peak resident set, VmRSS the current)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    return None


def descendants(pid: int) -> list[int]:
    """Return the PIDs of every live descendant of ``pid``."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            found.append(int(child))
            queue.append(int(child))
    return found


def tree_peak_kib(pid: int) -> int | None:
    """Sum the peak resident sets of ``pid`` and its live descendants, in KiB (an upper bound)."""
    peaks = [read_status_kib(item, "VmHWM") for item in [pid, *descendants(pid)]]
    known = [peak for peak in peaks if peak is not None]
    return sum(known) if known else None


def cpu_seconds(pid: int) -> float | None:
    """Return the user plus system CPU time of ``pid`` so far, in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces, so fields 14 and 15 are counted after it.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http_ok(url: str, deadline: float, process: subprocess.Popen | None = None) -> float:
    """Poll ``url`` until it responds 200 and return the seconds that took.

    Raises RuntimeError when ``process`` exits first, TimeoutError after ``deadline``.
    """
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    started = time.perf_counter()
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before {url} responded 200; see its log")
        try:
            with opener.open(url, timeout=2.0) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not respond 200 before the deadline; see the server log")
        time.sleep(0.02)


class SpawnedServer:
    """``entraide run`` in a child process on 127.0.0.1, stopped by PID.

    ``ready_seconds`` is the time from launching the command to the first 200 from ``/readyz``.
    """

    def __init__(
        self, config: Path, log_path: Path, command: list[str] | None = None, environment: dict[str, str] | None = None
    ) -> None:
        self.config = config
        self.log_path = log_path
        self.command = command or [entraide_command()]
        self.environment = environment or {}
        self.port = 0
        self.ready_seconds = 0.0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("SpawnedServer is not running: call start() first")
        return self.process.pid

    def start(self, timeout: float = READY_TIMEOUT) -> float:
        """Launch the server, wait for ``/readyz`` and return the seconds from launch to ready."""
        if self.process is not None:
            raise RuntimeError(f"SpawnedServer is already running (PID {self.process.pid})")
        self.port = free_port()
        command = [*self.command, "run", "--config", str(self.config), "--host", LOOPBACK, "--port", str(self.port)]
        # ENTRAIDE_DATABASE_URL would override the temporary database of the benchmark configuration.
        environment = {key: value for key, value in os.environ.items() if key != "ENTRAIDE_DATABASE_URL"}
        environment.update(self.environment)
        launched = time.perf_counter()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.config.parent, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=environment, start_new_session=True,
            )
        try:
            wait_http_ok(f"{self.url}/readyz", time.monotonic() + timeout, self.process)
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.perf_counter() - launched
        logger.info("entraide ready at %s (PID %d) in %.2f s", self.url, self.process.pid, self.ready_seconds)
        return self.ready_seconds

    def stop(self) -> None:
        """Send SIGTERM, then SIGKILL after ``STOP_TIMEOUT`` seconds. Do nothing when not running."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.warning("entraide (PID %d) still running %g s after SIGTERM; sending SIGKILL", process.pid, STOP_TIMEOUT)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)


# ----- measurements ------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float | None:
    """Return the nearest-rank percentile ``share`` (0-100) of ``values``, or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * share // 100))
    return ordered[int(rank) - 1]


@dataclass
class PhaseResult:
    """Figures of one phase. Latencies are in seconds, and throughput counts turns or parses per second."""

    name: str
    target: str
    concurrency: int
    window: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    empty_replies: int = 0
    connections: int = 0
    server_cpu: float | None = None
    server_rss_kib: int | None = None
    server_peak_kib: int | None = None
    client_cpu: float = 0.0
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.window if self.window else 0.0

    def summary(self) -> dict[str, Any]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 2)

        return {
            "phase": self.name,
            "target": self.target,
            "concurrency": self.concurrency,
            "window_s": round(self.window, 2),
            "completed": len(self.latencies),
            "per_second": round(self.throughput, 1),
            "p50_ms": ms(percentile(self.latencies, 50)),
            "p95_ms": ms(percentile(self.latencies, 95)),
            "p99_ms": ms(percentile(self.latencies, 99)),
            "max_ms": ms(max(self.latencies) if self.latencies else None),
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "empty_replies": self.empty_replies,
            "connections": self.connections,
            "server_cpu_share": None if self.server_cpu is None or not self.window else round(self.server_cpu / self.window, 2),
            "server_rss_mib": None if self.server_rss_kib is None else round(self.server_rss_kib / 1024, 1),
            "server_peak_mib": None if self.server_peak_kib is None else round(self.server_peak_kib / 1024, 1),
            "client_cpu_share": round(self.client_cpu / self.window, 2) if self.window else None,
            "load_average": [round(value, 2) for value in self.load_average],
        }


class Probe:
    """Sample the server's CPU time, resident memory and the client's own CPU time around a phase."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._server_cpu: float | None = None
        self._client_cpu = 0.0

    @staticmethod
    def _own_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def begin(self) -> None:
        self._server_cpu = cpu_seconds(self.pid) if self.pid else None
        self._client_cpu = self._own_cpu()

    def end(self, result: PhaseResult) -> None:
        result.client_cpu = self._own_cpu() - self._client_cpu
        result.load_average = os.getloadavg()
        if not self.pid:
            return
        now = cpu_seconds(self.pid)
        if now is not None and self._server_cpu is not None:
            result.server_cpu = now - self._server_cpu
        result.server_rss_kib = read_status_kib(self.pid, "VmRSS")
        result.server_peak_kib = tree_peak_kib(self.pid)


# ----- widget users over WebSocket -------------------------------------------------------------


class TurnFailed(Exception):
    """A widget turn that ended without a bot reply. ``kind`` names why (timeout, closed, error:<code>)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


async def _next_frame(socket: aiohttp.ClientWebSocketResponse, timeout: float) -> dict[str, Any]:
    try:
        message = await socket.receive(timeout=timeout)
    except asyncio.TimeoutError:
        raise TurnFailed("timeout") from None
    if message.type != aiohttp.WSMsgType.TEXT:
        raise TurnFailed(f"closed:{socket.close_code}")
    return json.loads(message.data)


async def _await_reply(socket: aiohttp.ClientWebSocketResponse, client_id: str, timeout: float) -> None:
    """Wait for the echo of ``client_id``, then for the first bot or expert message after it."""
    deadline = time.monotonic() + timeout
    echo_seq = None
    while True:
        frame = await _next_frame(socket, max(0.001, deadline - time.monotonic()))
        kind = frame.get("type")
        if kind == "error":
            raise TurnFailed(f"error:{frame.get('code')}")
        if kind != "message":
            continue
        if frame.get("role") == "user" and frame.get("client_id") == client_id:
            echo_seq = frame["seq"]
        elif echo_seq is not None and frame.get("role") in {"bot", "expert"} and frame["seq"] > echo_seq:
            return


async def widget_user(
    session: aiohttp.ClientSession, ws_url: str, options: argparse.Namespace, rng: random.Random,
    start_at: float, measure_from: float, deadline: float, result: PhaseResult,
) -> None:
    """Play one user: connect, say hello, ask ``options.messages`` questions, start over until ``deadline``."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    while time.monotonic() < deadline:
        try:
            async with session.ws_connect(ws_url, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)) as socket:
                result.connections += 1
                await socket.send_json({"type": "hello", "session_id": None, "token": None, "last_seq": 0, "lang": "fr"})
                welcome = await _next_frame(socket, options.reply_timeout)
                if welcome.get("type") != "welcome":
                    raise TurnFailed(f"hello:{welcome.get('type')}")
                for _ in range(options.messages):
                    await asyncio.sleep(rng.uniform(0.5, 1.5) * options.think)
                    if time.monotonic() >= deadline:
                        return
                    client_id = str(uuid.uuid4())
                    sent = time.perf_counter()
                    sent_at = time.monotonic()
                    await socket.send_json({"type": "message", "client_id": client_id, "text": rng.choice(QUESTIONS)})
                    try:
                        await _await_reply(socket, client_id, options.reply_timeout)
                    except TurnFailed as exc:
                        if exc.kind.startswith("closed"):
                            raise
                        # The widget keeps its socket open when a reply is late or refused, and so does this user.
                        result.errors[exc.kind] += 1
                        continue
                    if sent_at >= measure_from and time.monotonic() <= deadline:
                        result.latencies.append(time.perf_counter() - sent)
        except TurnFailed as exc:
            result.errors[exc.kind] += 1
        except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError) as exc:
            result.errors[f"connect:{type(exc).__name__}"] += 1
            # Back off a little, as the widget does, instead of hammering a failing server.
            await asyncio.sleep(1.0)


async def run_widget_phase(base_url: str, users: int, options: argparse.Namespace, pid: int | None) -> PhaseResult:
    """Run ``users`` widget users and measure the turns sent after the ramp and completed before the end."""
    result = PhaseResult("widget", "entraide", users)
    ws_url = base_url.replace("http://", "ws://", 1) + "/widget/ws"
    ramp = min(options.ramp, options.duration / 2)
    connector = aiohttp.TCPConnector(limit=0)
    probe = Probe(pid)
    async with aiohttp.ClientSession(connector=connector) as session:
        now = time.monotonic()
        measure_from = now + ramp
        deadline = measure_from + options.duration
        tasks = [
            asyncio.create_task(
                widget_user(session, ws_url, options, random.Random(options.seed * 100_003 + index), now + ramp * index / users,
                            measure_from, deadline, result),
                name=f"widget-user-{index}",
            )
            for index in range(users)
        ]
        await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
        probe.begin()
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        probe.end(result)
        result.window = options.duration
        # Turns in flight at the deadline end within the reply timeout; they are not counted.
        done, pending = await asyncio.wait(tasks, timeout=options.reply_timeout + 5.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return result


# ----- HTTP clients: REST turns and /model/parse ---------------------------------------------


async def http_client(
    session: aiohttp.ClientSession, url: str, body_for, deadline: float, timeout: float, result: PhaseResult, check_reply: bool,
) -> None:
    """Post bodies to ``url`` back to back until ``deadline``; record each latency or error."""
    while time.monotonic() < deadline:
        body = body_for()
        sent = time.perf_counter()
        try:
            async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                payload = await response.read()
                if response.status != 200:
                    result.errors[f"http:{response.status}"] += 1
                    continue
        except asyncio.TimeoutError:
            result.errors["timeout"] += 1
            continue
        except (aiohttp.ClientError, ConnectionError) as exc:
            result.errors[f"connect:{type(exc).__name__}"] += 1
            await asyncio.sleep(0.5)
            continue
        if time.monotonic() > deadline:
            return
        result.latencies.append(time.perf_counter() - sent)
        if check_reply and not json.loads(payload):
            result.empty_replies += 1


async def run_http_phase(
    name: str, target: str, url: str, clients: int, options: argparse.Namespace, pid: int | None
) -> PhaseResult:
    """Run ``clients`` closed-loop HTTP clients against ``url`` for ``options.duration`` seconds."""
    result = PhaseResult(name, target, clients)
    rng = random.Random(options.seed)
    run = uuid.uuid4().hex[:8]
    counters = [0] * clients

    def body_maker(index: int):
        def make() -> dict[str, Any]:
            text = rng.choice(QUESTIONS)
            if name == "parse":
                return {"text": text}
            # A new conversation every --messages turns, so trackers stay as short as the widget's.
            conversation = counters[index] // options.messages
            counters[index] += 1
            return {"sender": f"bench-{run}-{index}-{conversation}", "message": text}

        return make

    connector = aiohttp.TCPConnector(limit=clients)
    probe = Probe(pid)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm-up: a few requests per client, not counted.
        warm = PhaseResult(name, target, clients)
        warm_deadline = time.monotonic() + options.warmup
        await asyncio.gather(*(http_client(session, url, body_maker(index), warm_deadline, options.reply_timeout, warm, False)
                               for index in range(clients)))
        probe.begin()
        started = time.monotonic()
        deadline = started + options.duration
        await asyncio.gather(*(http_client(session, url, body_maker(index), deadline, options.reply_timeout, result, name == "rest")
                               for index in range(clients)))
        result.window = options.duration
        probe.end(result)
    return result


# ----- reporting ---------------------------------------------------------------------------


def print_result(result: PhaseResult) -> None:
    row = result.summary()
    count = f"{row['concurrency']} {'users' if row['phase'] == 'widget' else 'clients'}"
    print(
        f"{row['target']:<9}{row['phase']:<7}{count:>11}  {row['per_second']:>8}/s  "
        f"p50 {row['p50_ms']} ms  p95 {row['p95_ms']} ms  p99 {row['p99_ms']} ms  max {row['max_ms']} ms  "
        f"errors {row['errors']} {row['error_kinds'] or ''}  empty {row['empty_replies']}  "
        f"server cpu {row['server_cpu_share']} cores  rss {row['server_rss_mib']} MiB  peak {row['server_peak_mib']} MiB  "
        f"client cpu {row['client_cpu_share']} cores  load average {load_text(row['load_average'])}",
        flush=True,
    )


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def compare(results: list[PhaseResult], options: argparse.Namespace) -> list[str]:
    """Return one line per target that the results can decide."""
    lines = []
    by_key = {(item.target, item.name, item.concurrency): item for item in results}
    largest = max((item for item in results if item.name == "widget"), key=lambda item: item.concurrency, default=None)
    if largest is not None:
        row = largest.summary()
        met = row["p99_ms"] is not None and row["p99_ms"] < 500 and row["errors"] == 0
        if largest.concurrency >= WIDGET_TARGET_USERS:
            lines.append(f"widget {largest.concurrency} users: p99 {row['p99_ms']} ms < 500 ms and no error: {verdict(met)}")
        else:
            lines.append(f"widget: the target needs {WIDGET_TARGET_USERS} users; this run had {largest.concurrency}, so it decides nothing")
    for name, factor in (("parse", 10), ("rest", 20)):
        ours = by_key.get(("entraide", name, options.rest_clients))
        theirs = by_key.get(("rasa", name, options.rest_clients))
        if ours is None or theirs is None or not theirs.throughput:
            continue
        ratio = ours.throughput / theirs.throughput
        lines.append(f"{name} throughput entraide/rasa = {ratio:.1f}x (target >= {factor}x): {verdict(ratio >= factor)}")
        if name == "rest":
            ours_p99, theirs_p99 = percentile(ours.latencies, 99), percentile(theirs.latencies, 99)
            if ours_p99 and theirs_p99:
                share = ours_p99 / theirs_p99
                lines.append(
                    f"rest p99: entraide {ours_p99 * 1000:.0f} ms, rasa {theirs_p99 * 1000:.0f} ms, "
                    f"entraide/rasa = {share:.2f} (target <= 0.10): {verdict(share <= 0.1)}"
                )
    ours_peaks = [item.server_peak_kib for item in results if item.target == "entraide" and item.server_peak_kib]
    if options.rasa_pid and ours_peaks:
        ours_peak, theirs_peak = max(ours_peaks), tree_peak_kib(options.rasa_pid)
        if theirs_peak:
            share = ours_peak / theirs_peak
            lines.append(
                f"peak RSS after the load: entraide {ours_peak / 1024:.0f} MiB, rasa {theirs_peak / 1024:.0f} MiB, "
                f"entraide/rasa = {share:.2f} (target <= 0.20): {verdict(share <= 0.2)}"
            )
    return lines


def machine() -> dict[str, Any]:
    """Describe the machine: CPU model, cores, memory, Python version."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {"cpu": model, "nproc": os.cpu_count(), "memory_gib": round(memory_kib / 1024 / 1024, 1), "python": sys.version.split()[0]}


def machine_text() -> str:
    """Return the machine's description on one line, for the head of a report."""
    found = machine()
    return f"{found['cpu']}, {found['nproc']} CPUs, {found['memory_gib']} GiB, Python {found['python']}"


def load_text(values: tuple[float, ...] | list[float] | None = None) -> str:
    """Return the 1, 5 and 15-minute load averages with two decimals."""
    return " ".join(f"{value:.2f}" for value in (values if values is not None else os.getloadavg()))


# ----- entry point -------------------------------------------------------------------------


def phase_plan(options: argparse.Namespace) -> list[tuple[str, int]]:
    """List the phases to run as (name, concurrency), in order."""
    plan = [("widget", users) for users in options.users] if "widget" in options.phases else []
    return plan + [(name, options.rest_clients) for name in ("rest", "parse") if name in options.phases]


async def run_phase(name: str, concurrency: int, base_url: str, pid: int | None, options: argparse.Namespace) -> list[PhaseResult]:
    """Run one phase against entraide, then against Rasa for the HTTP phases when ``--rasa-url`` is given."""
    if name == "widget":
        return [await run_widget_phase(base_url, concurrency, options, pid)]
    path = {"rest": "/webhooks/rest/webhook", "parse": "/model/parse"}[name]
    targets = [("entraide", base_url, pid)]
    if options.rasa_url:
        targets.append(("rasa", options.rasa_url.rstrip("/"), options.rasa_pid))
    return [await run_http_phase(name, target, url + path, concurrency, options, target_pid) for target, url, target_pid in targets]


@contextmanager
def entraide_server(options: argparse.Namespace, directory: Path | None):
    """Yield (base URL, PID) of the server to measure: a fresh spawned one with ``--spawn``, else ``--url``."""
    if not options.spawn:
        yield options.url.rstrip("/"), options.server_pid
        return
    directory.mkdir(parents=True, exist_ok=True)
    # The phases share one model folder, so only the first spawned server trains.
    models = options.models or directory.parent / "models"
    server = SpawnedServer(bench_config(directory, models=models), directory / "server.log")
    try:
        server.start()
        removal_notice = "" if options.workdir else " (removed at the end; pass --workdir to keep it)"
        print(
            f"spawned entraide PID {server.pid} at {server.url}, ready in {server.ready_seconds:.2f} s, "
            f"log {server.log_path}{removal_notice}",
            flush=True,
        )
        yield server.url, server.pid
    finally:
        server.stop()


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="base URL of a running entraide server on 127.0.0.1, such as http://127.0.0.1:5005")
    where.add_argument("--spawn", action="store_true", help="start a fresh entraide run for each phase, on a free port with a new database")
    parser.add_argument("--server-pid", type=int, help="PID of the running server, to read its memory and CPU time")
    parser.add_argument("--workdir", type=Path, help="with --spawn: keep the config, database and server log here (default: a temporary folder, removed)")
    parser.add_argument("--models", type=Path, help="with --spawn: model folder to reuse (default: a temporary one, trained at start)")
    parser.add_argument("--users", type=int, nargs="+", default=[100, 500, 1000], help="widget users per phase (default: 100 500 1000)")
    parser.add_argument("--messages", type=int, default=5, help="messages per conversation before starting a new one (default: 5)")
    parser.add_argument("--think", type=float, default=10.0, help="mean think time before each widget message, in seconds, drawn from 0.5x-1.5x (default: 10)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per phase (default: 60)")
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which widget users connect, not measured (default: 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each HTTP phase (default: 3)")
    parser.add_argument("--rest-clients", type=int, default=16, help="concurrent clients of the REST and parse phases (default: 16)")
    parser.add_argument("--reply-timeout", type=float, default=10.0, help="seconds to wait for one reply before counting an error (default: 10)")
    parser.add_argument("--phases", nargs="+", choices=["widget", "rest", "parse"], default=["widget", "rest", "parse"],
                        help="phases to run, in this order: widget, rest, parse (default: all three)")
    parser.add_argument("--rasa-url", help="base URL of a Rasa server started with --enable-api on 127.0.0.1")
    parser.add_argument("--rasa-pid", type=int, help="PID of that Rasa server, to read its memory and CPU time")
    parser.add_argument("--seed", type=int, default=1, help="random seed of questions and think times (default: 1)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    options = parser.parse_args(argv)
    for url in (options.url, options.rasa_url):
        if url and not url.startswith(f"http://{LOOPBACK}:"):
            parser.error(f"{url}: only http://127.0.0.1:<port> servers may be measured")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    temporary = None
    workdir = options.workdir
    if options.spawn and workdir is None:
        temporary = tempfile.TemporaryDirectory(prefix="entraide-load-")
        workdir = Path(temporary.name)
    try:
        print(f"machine: {machine_text()}; started {time.strftime('%Y-%m-%d %H:%M:%S %z')}; load average {load_text()}")
        settings = [f"duration {options.duration} s", f"seed {options.seed}"]
        if "widget" in options.phases:
            settings.append(f"widget: messages {options.messages}, think {options.think} s, ramp {options.ramp} s")
        if {"rest", "parse"} & set(options.phases):
            settings.append(f"HTTP: {options.rest_clients} clients, warm-up {options.warmup} s")
        print("settings: " + "; ".join(settings), flush=True)
        results = []
        for index, (name, concurrency) in enumerate(phase_plan(options)):
            # A spawned server starts afresh for each phase, so that no phase inherits the state another left.
            directory = workdir / f"{index + 1}-{name}-{concurrency}" if options.spawn else None
            with entraide_server(options, directory) as (base_url, pid):
                for result in asyncio.run(run_phase(name, concurrency, base_url, pid, options)):
                    print_result(result)
                    results.append(result)
        lines = compare(results, options)
        for line in lines:
            print(line)
        if options.json:
            options.json.write_text(json.dumps({
                "machine": machine(),
                "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                "arguments": {key: str(value) if isinstance(value, Path) else value for key, value in vars(options).items()},
                "results": [item.summary() for item in results],
                "targets": lines,
            }, indent=2, ensure_ascii=False), encoding="utf-8")
    finally:
        if temporary is not None:
            temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
