"""Run a real Synapse homeserver on 127.0.0.1 for the test suite.

The server uses SQLite in its own data directory, has no federation listener, no key
servers, no URL previews and no metrics, so none of its features needs an outbound
connection. Rate
limits are relaxed because matrix-nio would otherwise wait silently on 429 responses.
Users are created through the shared-secret admin registration API, with the standard
library only, so registering does not pay the cost of importing Synapse.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

# Loose enough that no test run reaches a limit, and still a valid limiter config.
_RELAXED_LIMIT = {"per_second": 1000, "burst_count": 10000}

# Synapse 1.163 reads these rate limiters, each with the plain per_second/burst_count shape.
_FLAT_LIMITERS = (
    "rc_message",
    "rc_registration",
    "rc_joins_per_room",
    "rc_room_creation",
    "rc_admin_redaction",
    "rc_3pid_validation",
    "rc_reports",
    "rc_profile",
    "rc_user_directory",
    "rc_delayed_event_mgmt",
    "rc_media_create",
    "rc_key_requests",
)

# These limiters are split into named sub-limiters.
_NESTED_LIMITERS = {
    "rc_login": ("address", "account", "failed_attempts"),
    "rc_joins": ("local", "remote"),
    "rc_invites": ("per_room", "per_user", "per_issuer"),
    "rc_presence": ("per_user",),
}

_HTTP_TIMEOUT = 5.0

# The server is on loopback: never route requests through a proxy named in the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_POLL_INTERVAL = 0.1
_LOG_TAIL_LINES = 30


class SynapseStartError(RuntimeError):
    """The homeserver exited, or its client API did not respond before the start timeout."""


class SynapseRequestError(RuntimeError):
    """An admin API request to the homeserver failed.

    ``status`` is the HTTP status, ``errcode`` the Matrix error code (such as
    ``M_USER_IN_USE``) when the server sent one.
    """

    def __init__(self, message: str, status: int, errcode: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode


@dataclass(frozen=True)
class MatrixAccount:
    """A registered user and the access token of its first device."""

    user_id: str
    access_token: str
    device_id: str
    password: str


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that the OS reported free.

    Another process may take the port before the caller binds it, so callers retry.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


class SynapseServer:
    """A Synapse homeserver in a child process, bound to 127.0.0.1 on a free port.

    Call :meth:`start`, then :meth:`register` to create users, and :meth:`stop` at the
    end. The data directory keeps the config, the SQLite database, the signing key,
    ``homeserver.log`` (Synapse's own log, WARNING and above) and ``stdout-stderr.log``.
    """

    server_name = "localhost"

    def __init__(
        self,
        data_dir: Path,
        *,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        start_attempts: int = 3,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.start_attempts = start_attempts
        self._shared_secret = secrets.token_hex(32)
        self._macaroon_secret = secrets.token_hex(32)
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.data_dir / "homeserver.yaml"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "homeserver.log"

    @property
    def output_path(self) -> Path:
        return self.data_dir / "stdout-stderr.log"

    @property
    def port(self) -> int:
        if self._port is None or self._process is None:
            raise RuntimeError("SynapseServer is not running: call start() first")
        return self._port

    @property
    def base_url(self) -> str:
        """URL of the client API, such as ``http://127.0.0.1:43127``."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def __enter__(self) -> SynapseServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Write the config, start the homeserver and wait until its client API responds.

        A start that fails because the chosen port was taken in the meantime is retried on
        another port, up to ``start_attempts`` times.

        Raises:
            RuntimeError: the server is already running.
            SynapseStartError: the server exited or did not respond within
                ``start_timeout`` seconds. The message contains the tail of its logs.
        """
        if self._process is not None:
            raise RuntimeError(f"SynapseServer is already running (PID {self._process.pid})")

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_log_config()

        for attempt in range(1, self.start_attempts + 1):
            port = free_port()
            log_offsets = {path: _file_size(path) for path in (self.log_path, self.output_path)}
            try:
                self._start_on(port)
                return
            except SynapseStartError:
                if attempt == self.start_attempts or not self._port_was_taken(log_offsets):
                    raise
                logger.warning(
                    "Synapse could not bind port %d (attempt %d of %d), retrying on another port",
                    port,
                    attempt,
                    self.start_attempts,
                )

    def stop(self) -> None:
        """Stop the homeserver by PID: SIGTERM, then SIGKILL after ``stop_timeout`` seconds.

        Calling it when the server is not running does nothing.
        """
        process = self._process
        if process is None:
            return

        if not self._has_exited(process):
            logger.debug("Sending SIGTERM to Synapse (PID %d)", process.pid)
            self._signal(process, signal.SIGTERM)
            if not self._wait_exit(process, self.stop_timeout):
                logger.warning(
                    "Synapse (PID %d) still running %g s after SIGTERM, sending SIGKILL",
                    process.pid,
                    self.stop_timeout,
                )
                self._signal(process, signal.SIGKILL)
                self._wait_exit(process, self.stop_timeout)

        self._process = None
        self._port = None
        logger.info("Synapse stopped (PID %d, exit code %s)", process.pid, process.returncode)

    def _start_on(self, port: int) -> None:
        self._write_config(port)
        # sys.executable is made absolute because the child runs in data_dir. It is not
        # resolved: resolving a venv's python symlink would leave the venv.
        command = [
            os.path.abspath(sys.executable),
            "-m",
            "synapse.app.homeserver",
            "--config-path",
            str(self.config_path),
        ]
        with self.output_path.open("ab") as output:
            # Its own session keeps a Ctrl-C in the terminal from killing the server
            # before the test teardown stops it.
            process = subprocess.Popen(
                command,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._process = process
        self._port = port
        logger.debug("Started Synapse (PID %d) on port %d", process.pid, port)

        try:
            self._wait_ready(process)
        except BaseException:
            self.stop()
            raise
        logger.info("Synapse ready at %s (PID %d)", self.base_url, process.pid)

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        url = f"{self.base_url}/_matrix/client/versions"
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._has_exited(process):
                raise SynapseStartError(
                    f"Synapse exited with code {process.poll()} before it responded at {url}.\n"
                    + self._log_tails()
                )
            try:
                with _opener.open(url, timeout=_HTTP_TIMEOUT) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise SynapseStartError(
                    f"Synapse (PID {process.pid}) did not respond at {url} within "
                    f"{self.start_timeout:g} s.\n" + self._log_tails()
                )
            time.sleep(_POLL_INTERVAL)

    @staticmethod
    def _port_was_taken(log_offsets: dict[Path, int]) -> bool:
        # Only the lines written by the failed attempt count. Twisted reports a failed
        # bind as CannotListenError with the errno text.
        for path, offset in log_offsets.items():
            try:
                with path.open("rb") as log_file:
                    log_file.seek(offset)
                    text = log_file.read()
            except OSError:
                continue
            if b"Address already in use" in text or b"CannotListenError" in text:
                return True
        return False

    @staticmethod
    def _signal(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            pass

    def _wait_exit(self, process: subprocess.Popen[bytes], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._has_exited(process):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    @staticmethod
    def _has_exited(process: subprocess.Popen[bytes]) -> bool:
        if process.poll() is not None:
            return True
        # A zombie has exited even though its parent has not reaped it yet.
        status = _read_text(Path(f"/proc/{process.pid}/status"))
        for line in status.splitlines():
            if line.startswith("State:"):
                return line.split()[1] == "Z"
        return False

    def _log_tails(self) -> str:
        parts = []
        for path in (self.log_path, self.output_path):
            lines = _read_text(path).splitlines()[-_LOG_TAIL_LINES:]
            body = "\n".join(lines) if lines else "(empty)"
            parts.append(f"--- last lines of {path} ---\n{body}")
        return "\n".join(parts)

    # -- configuration -----------------------------------------------------------

    def _write_config(self, port: int) -> None:
        # JSON is valid YAML, and json.dumps quotes every path and secret correctly.
        self.config_path.write_text(json.dumps(self._homeserver_config(port), indent=2))

    def _homeserver_config(self, port: int) -> dict[str, Any]:
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "report_stats": False,
            "listeners": [
                {
                    "port": port,
                    "bind_addresses": [LOOPBACK],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    # "client" also serves the admin API under /_synapse/admin.
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {
                "name": "sqlite3",
                "args": {"database": str(self.data_dir / "homeserver.db")},
            },
            "media_store_path": str(self.data_dir / "media_store"),
            # Created at the first start when missing.
            "signing_key_path": str(self.data_dir / f"{self.server_name}.signing.key"),
            "log_config": str(self.data_dir / "log.config"),
            "registration_shared_secret": self._shared_secret,
            "macaroon_secret_key": self._macaroon_secret,
            "enable_registration": False,
            # The default of 12 rounds costs about 0.3 s per registration and password
            # login (measured on a 2-core machine).
            "bcrypt_rounds": 4,
            "federation_domain_whitelist": [],
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "url_preview_enabled": False,
            "enable_metrics": False,
            "presence": {"enabled": False},
            # A fresh database queues dozens of background updates with a 1 s sleep
            # between each. Without the sleep, Synapse 1.163 finishes them in about a second.
            "background_updates": {"sleep_enabled": False},
        }
        for name in _FLAT_LIMITERS:
            config[name] = dict(_RELAXED_LIMIT)
        for name, parts in _NESTED_LIMITERS.items():
            config[name] = {part: dict(_RELAXED_LIMIT) for part in parts}
        return config

    def _write_log_config(self) -> None:
        log_config = {
            "version": 1,
            "formatters": {
                "precise": {
                    "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s"
                }
            },
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filename": str(self.log_path),
                }
            },
            "root": {"level": "WARNING", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }
        (self.data_dir / "log.config").write_text(json.dumps(log_config, indent=2))

    # -- users -------------------------------------------------------------------

    def register(
        self, username: str, password: str | None = None, admin: bool = False
    ) -> MatrixAccount:
        """Create a user through the shared-secret admin API and return its first login.

        Synapse lowercases ``username``. A random password is chosen when none is given.

        Raises:
            SynapseRequestError: the server rejected the request, for example with
                ``M_USER_IN_USE`` when the username is taken.
        """
        if password is None:
            password = secrets.token_urlsafe(16)
        url = f"{self.base_url}/_synapse/admin/v1/register"

        # A nonce is valid once, for 60 seconds.
        nonce = self._request_json("GET", url)["nonce"]
        mac = hmac.new(self._shared_secret.encode(), digestmod=hashlib.sha1)
        for part in (nonce, username, password):
            mac.update(part.encode())
            mac.update(b"\x00")
        mac.update(b"admin" if admin else b"notadmin")

        body = {
            "nonce": nonce,
            "username": username,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }
        reply = self._request_json("POST", url, body)
        logger.debug("Registered %s", reply["user_id"])
        return MatrixAccount(
            user_id=reply["user_id"],
            access_token=reply["access_token"],
            device_id=reply["device_id"],
            password=password,
        )

    def _request_json(
        self, method: str, url: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with _opener.open(request, timeout=_HTTP_TIMEOUT) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            raw = error.read().decode(errors="replace")
            try:
                detail = json.loads(raw)
            except ValueError:
                detail = {}
            errcode = detail.get("errcode")
            reason = detail.get("error", raw[:200])
            status = f"HTTP {error.code} {errcode}" if errcode else f"HTTP {error.code}"
            raise SynapseRequestError(
                f"{method} {url} failed with {status}: {reason}",
                status=error.code,
                errcode=errcode,
            ) from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
