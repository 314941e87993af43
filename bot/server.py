"""The aiohttp application behind ``entraide run``: health, Rasa-compatible API, widget, connectors."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import time
from pathlib import Path

from aiohttp import web

from bot.config import Settings, load_settings
from bot.runtime import Runtime

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("bot.server.access")

RUNTIME = web.AppKey("runtime", Runtime)
CONNECTORS = web.AppKey("connectors", list)
MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)
# Seconds /readyz waits for its write check before it reports the store as not ready.
READINESS_TIMEOUT = 5.0

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data:; object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
)


def build_connectors(settings: Settings, runtime: Runtime) -> list:
    """Create the connectors enabled in config.yml; channel libraries are imported only when used."""
    from connectors.rest import RestConnector
    from connectors.web import WebConnector

    assistant = runtime.assistant
    found = []
    if settings.channels.web.enabled:
        found.append(WebConnector(settings.channels.web, assistant))
    if settings.channels.rest.enabled:
        found.append(RestConnector(assistant, settings.channels.web.max_message_length))
    if settings.channels.telegram.enabled:
        from connectors.telegram import TelegramConnector

        found.append(TelegramConnector(settings.channels.telegram, assistant, runtime.store))
    if runtime.matrix is not None:
        # Built by the runtime, because the expert desk posts through it.
        found.append(runtime.matrix)
    return found


@web.middleware
async def security_headers(request: web.Request, handler):
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def cors_middleware(allowed: list[str]):
    @web.middleware
    async def cors(request: web.Request, handler):
        origin = request.headers.get("Origin")
        permitted = origin is not None and (origin in allowed or "*" in allowed)
        if request.method == "OPTIONS" and permitted:
            response = web.Response(status=204)
        else:
            response = await handler(request)
        if permitted:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        return response

    return cors


# Webhooks that a platform calls from a few addresses, already authenticated by a secret header.
RATE_LIMIT_EXEMPT = ("/webhooks/telegram",)


def rate_limit_middleware(per_minute: int):
    from connectors.web.limits import RateLimiter, RepeatCounter

    limiter = RateLimiter(per_minute)
    rejections = RepeatCounter()

    @web.middleware
    async def limit(request: web.Request, handler):
        limited = request.method == "POST" and not request.path.startswith(RATE_LIMIT_EXEMPT)
        if limited and not limiter.allow(request.remote or "unknown"):
            held_back = rejections.hit(request.remote or "unknown")
            if held_back == 0:
                logger.warning("HTTP rate limit reached for %s on %s", request.remote, request.path)
            elif held_back is not None:
                logger.warning(
                    "HTTP rate limit reached for %s on %s, after %d more rejected requests since the last warning",
                    request.remote, request.path, held_back,
                )
            raise web.HTTPTooManyRequests(
                text='{"error": "rate_limited", "message": "too many requests; retry in a minute"}',
                content_type="application/json",
                headers={"Retry-After": "60"},
            )
        return await handler(request)

    return limit


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            access_logger.info("%s %s -> %d", request.method, request.path, exc.status)
        raise
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response({"error": "server_error", "message": "internal error; see the server log"}, status=500)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    checks = {"model": runtime.model is not None}
    try:
        # A write, not only a read, because a database that still runs queries can reject every write.
        await asyncio.wait_for(runtime.store.check_write(), READINESS_TIMEOUT)
        checks["store"] = True
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        logger.warning("readiness: store cannot write: %r", exc)
        checks["store"] = False
    for connector in request.app[CONNECTORS]:
        checks[f"connector:{connector.name}"] = connector.ready
    ready = all(checks.values())
    return web.json_response({"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503)


async def model_parse(request: web.Request) -> web.Response:
    from connectors.rest import json_error, read_json

    body = await read_json(request)
    text = body.get("text")
    if not isinstance(text, str):
        raise json_error(400, "missing_field", "'text' must be a string")
    max_length = request.app[RUNTIME].settings.channels.web.max_message_length
    if len(text) > max_length:
        raise json_error(400, "too_long", f"'text' is longer than {max_length} characters")
    result = request.app[RUNTIME].model.parse(text)
    if isinstance(body.get("message_id"), str):
        result["message_id"] = body["message_id"]
    return web.json_response(result)


async def model_status(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    return web.json_response(
        {"fingerprint": runtime.model.metadata.get("fingerprint"), "model_file": str(runtime.model_path or "")}
    )


def build_app(runtime: Runtime, connectors: list | None = None) -> web.Application:
    """Create the application; ``runtime`` must be entered, connectors are started with the app."""
    settings = runtime.settings
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[
            json_errors,
            security_headers,
            cors_middleware(settings.channels.web.allowed_origins),
            rate_limit_middleware(settings.server.requests_per_minute),
        ],
    )
    app[MAX_BODY_BYTES] = settings.server.max_body_bytes
    app[RUNTIME] = runtime
    app[CONNECTORS] = connectors if connectors is not None else build_connectors(settings, runtime)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post("/model/parse", model_parse)
    app.router.add_get("/status", model_status)
    for connector in app[CONNECTORS]:
        connector.setup_routes(app)
        runtime.outbox.register(connector)
    app.cleanup_ctx.append(_connectors_context)
    return app


async def _connectors_context(app: web.Application):
    started = []
    try:
        for connector in app[CONNECTORS]:
            await connector.start()
            started.append(connector)
        yield
    finally:
        for connector in reversed(started):
            try:
                await connector.stop()
            except Exception:
                logger.exception("connector %s failed to stop", connector.name)


def make_runner(app: web.Application) -> web.AppRunner:
    """Return the runner of ``app``.

    A client that disconnects does not cancel its request's handler: a turn it started is stored
    whole, and its replies wait for the next request or the widget's history.
    """
    return web.AppRunner(app, access_log=None, handler_cancellation=False)


async def serve(settings: Settings, host: str, port: int, ready: asyncio.Event | None = None) -> None:
    """Run the server until SIGINT or SIGTERM."""
    started = time.perf_counter()
    settings.check_secrets()
    async with Runtime(settings, progress=lambda text: logger.info("%s", text)) as runtime:
        app = build_app(runtime)
        runner = make_runner(app)
        await runner.setup()
        # The model, the domain and the libraries' objects live as long as the process. Frozen,
        # they are left out of the collector's full passes, which otherwise pause every request.
        gc.collect()
        gc.freeze()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            logger.info("entraide serving on http://%s:%d (ready in %.1f s)", host, port, time.perf_counter() - started)
            print(f"entraide: serving on http://{host}:{port}", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            if ready is not None:
                ready.set()
            await stop.wait()
            logger.info("entraide stopping")
        finally:
            await runner.cleanup()
    logger.info("entraide stopped")


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.config) if args.config else None)
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    if not logging.getLogger().handlers or args.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
    asyncio.run(serve(settings, host, port))
    return 0
