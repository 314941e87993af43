"""The HTTP side of ``entraide run``: health, Rasa's parse and REST endpoints, errors, limits, headers."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3

import aiohttp
import pytest

from bot.config import Settings
from tests.server.conftest import ALLOWED_ORIGIN, OTHER_ORIGIN, LiveServer

JSON = {"Content-Type": "application/json"}
ACCESS_LOGGER = "bot.server.access"
PASSWORD_QUESTION = "j'ai oublié mon mot de passe"


async def assert_still_serving(client: aiohttp.ClientSession, server: LiveServer) -> None:
    async with client.post(f"{server.url}/model/parse", json={"text": "bonjour"}) as response:
        assert response.status == 200


# ----- health -----


async def test_healthz_ok(client, server):
    async with client.get(f"{server.url}/healthz") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}


async def test_readyz_ready(client, server):
    async with client.get(f"{server.url}/readyz") as response:
        body = await response.json()
    assert response.status == 200
    assert body["status"] == "ready"
    assert body["checks"] == {"model": True, "store": True, "connector:web": True, "connector:rest": True}


# ----- Rasa-compatible endpoints -----


async def test_status_names_the_model_file(client, server):
    async with client.get(f"{server.url}/status") as response:
        body = await response.json()
    assert response.status == 200
    assert body["model_file"] == str(server.runtime.model_path)
    assert body["model_file"].endswith(".npz")
    assert body["fingerprint"]


async def test_model_parse_rasa_shape(client, server):
    async with client.post(f"{server.url}/model/parse", json={"text": "hello"}) as response:
        body = await response.json()
    assert response.status == 200
    assert body["text"] == "hello"
    assert set(body["intent"]) >= {"name", "confidence"}
    assert isinstance(body["intent"]["name"], str)
    assert 0.0 <= body["intent"]["confidence"] <= 1.0
    assert isinstance(body["entities"], list)
    assert isinstance(body["intent_ranking"], list)
    assert body["intent_ranking"][0]["name"] == body["intent"]["name"]


async def test_model_parse_french_question(client, server):
    async with client.post(f"{server.url}/model/parse", json={"text": PASSWORD_QUESTION}) as response:
        body = await response.json()
    assert body["intent"]["name"] == "password_forgotten"


async def test_model_parse_keeps_message_id(client, server):
    async with client.post(f"{server.url}/model/parse", json={"text": "hello", "message_id": "abc-1"}) as response:
        body = await response.json()
    assert body["message_id"] == "abc-1"


async def test_rest_webhook_rasa_shape(client, server):
    payload = {"sender": "test_user", "message": "Hi there!"}
    async with client.post(f"{server.url}/webhooks/rest/webhook", json=payload) as response:
        body = await response.json()
    assert response.status == 200
    assert isinstance(body, list)
    assert body, "the assistant sent no reply"
    for item in body:
        assert item["recipient_id"] == "test_user"
        assert isinstance(item["text"], str)
        assert set(item) <= {"recipient_id", "text", "buttons"}


async def test_rest_webhook_buttons(client, server):
    payload = {"sender": "rest-buttons", "message": PASSWORD_QUESTION}
    async with client.post(f"{server.url}/webhooks/rest/webhook", json=payload) as response:
        body = await response.json()
    assert "conversation est enregistrée" in body[0]["text"]
    assert "Mot de passe oublié" in body[1]["text"]
    assert body[-1]["buttons"] == [{"title": "Oui", "payload": "/affirm"}, {"title": "Non", "payload": "/deny"}]


async def test_rest_webhook_button_payload(client, server):
    sender = "rest-payload"
    await client.post(f"{server.url}/webhooks/rest/webhook", json={"sender": sender, "message": PASSWORD_QUESTION})
    async with client.post(f"{server.url}/webhooks/rest/webhook", json={"sender": sender, "message": "/deny"}) as response:
        body = await response.json()
    assert "transmettre votre question" in body[0]["text"]


async def test_rest_senders_kept_apart(client, server):
    url = f"{server.url}/webhooks/rest/webhook"
    for sender in ("rest-apart-a", "rest-apart-b"):
        async with client.post(url, json={"sender": sender, "message": PASSWORD_QUESTION}) as response:
            assert response.status == 200

    first = await server.runtime.store.conversation("rest", "rest-apart-a", create=False)
    second = await server.runtime.store.conversation("rest", "rest-apart-b", create=False)
    assert first is not None
    assert second is not None
    assert first.id != second.id


# ----- invalid requests -----

PARSE = "/model/parse"
WEBHOOK = "/webhooks/rest/webhook"
TOO_LONG_TEXT = "é" * 2001

BAD_REQUESTS = [
    pytest.param(PARSE, b'{"text": "hello"', JSON, 400, "invalid_json", id="parse-malformed-json"),
    pytest.param(WEBHOOK, b'{"sender": "u", "message": ', JSON, 400, "invalid_json", id="webhook-malformed-json"),
    pytest.param(PARSE, b'["hello"]', JSON, 400, "invalid_json", id="parse-not-an-object"),
    pytest.param(PARSE, b"{}", JSON, 400, "missing_field", id="parse-missing-text"),
    pytest.param(PARSE, b'{"text": 12}', JSON, 400, "missing_field", id="parse-text-not-string"),
    pytest.param(WEBHOOK, b'{"message": "bonjour"}', JSON, 400, "missing_field", id="webhook-missing-sender"),
    pytest.param(WEBHOOK, b'{"sender": "u"}', JSON, 400, "missing_field", id="webhook-missing-message"),
    pytest.param(WEBHOOK, b'{"sender": "u", "message": "a", "message_id": 3}', JSON, 400, "invalid_field", id="webhook-bad-message-id"),
    pytest.param(PARSE, b"text=hello", {"Content-Type": "text/plain"}, 415, "unsupported_media_type", id="parse-wrong-content-type"),
    pytest.param(WEBHOOK, b"sender=u&message=hi", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type", id="webhook-form-body"),
    pytest.param(PARSE, b'{"text": "\xff\xfe"}', JSON, 400, "invalid_encoding", id="parse-invalid-utf8"),
    pytest.param(WEBHOOK, b'{"sender": "u", "message": "\xc3("}', JSON, 400, "invalid_encoding", id="webhook-invalid-utf8"),
    pytest.param(PARSE, json.dumps({"text": TOO_LONG_TEXT}).encode(), JSON, 400, "too_long", id="parse-too-long"),
    pytest.param(WEBHOOK, json.dumps({"sender": "u", "message": TOO_LONG_TEXT}).encode(), JSON, 400, "too_long", id="webhook-too-long"),
]


@pytest.mark.parametrize(("path", "body", "headers", "status", "code"), BAD_REQUESTS)
async def test_bad_request_rejected(client, server, caplog, path, body, headers, status, code):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)

    async with client.post(f"{server.url}{path}", data=body, headers=headers) as response:
        content_type = response.content_type
        error = await response.json(content_type=None)

    assert response.status == status
    assert content_type == "application/json"
    assert error["error"] == code
    assert error["message"]
    assert f"POST {path} -> {status}" in caplog.messages
    await assert_still_serving(client, server)


async def test_oversized_body_rejected(client, server, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    limit = server.runtime.settings.server.max_body_bytes
    body = json.dumps({"text": "a" * (limit + 1)}).encode()

    async with client.post(f"{server.url}/model/parse", data=body, headers=JSON) as response:
        error = await response.json()

    assert response.status == 413
    assert error["error"] == "too_large"
    assert str(limit) in error["message"]
    assert "POST /model/parse -> 413" in caplog.messages
    await assert_still_serving(client, server)


async def test_unknown_route_404(client, server):
    async with client.get(f"{server.url}/webhooks/unknown") as response:
        assert response.status == 404
    await assert_still_serving(client, server)


# ----- rate limit -----


async def test_rate_limit_per_address(client, start_server, settings: Settings, caplog):
    settings.server.requests_per_minute = 3
    limited = await start_server(settings)
    url = f"{limited.url}/model/parse"

    statuses = []
    for _ in range(3):
        async with client.post(url, json={"text": "bonjour"}) as response:
            statuses.append(response.status)
    async with client.post(url, json={"text": "bonjour"}) as response:
        error = await response.json()
        retry_after = response.headers.get("Retry-After")
    for _ in range(3):
        async with client.post(url, json={"text": "bonjour"}) as repeated:
            statuses.append(repeated.status)

    assert statuses == [200, 200, 200, 429, 429, 429]
    assert response.status == 429
    assert error["error"] == "rate_limited"
    assert retry_after == "60"
    # One warning for the address within the minute, however many requests were rejected.
    warnings = [message for message in caplog.messages if message.startswith("HTTP rate limit reached")]
    assert warnings == ["HTTP rate limit reached for 127.0.0.1 on /model/parse"]


def test_repeat_counter_reports_held_back_count():
    from connectors.web.limits import RepeatCounter

    counter = RepeatCounter(window=60.0, max_keys=2)

    assert counter.hit("a", now=0.0) == 0
    assert counter.hit("a", now=1.0) is None
    assert counter.hit("a", now=2.0) is None
    assert counter.hit("a", now=61.0) == 2
    assert counter.hit("b", now=61.0) == 0
    # A third key over max_keys drops the keys reported more than a window ago.
    assert counter.hit("c", now=125.0) == 0
    assert list(counter._reported) == ["c"]


async def test_rate_limit_spares_others(client, start_server, settings: Settings):
    settings.server.requests_per_minute = 1
    limited = await start_server(settings)
    url = f"{limited.url}/model/parse"
    await client.post(url, json={"text": "bonjour"})
    async with client.post(url, json={"text": "bonjour"}) as response:
        assert response.status == 429

    # 127.0.0.2 is another loopback address: the request still goes to the server on 127.0.0.1.
    other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=other) as neighbour:
        async with neighbour.post(url, json={"text": "bonjour"}) as response:
            assert response.status == 200

    async with client.get(f"{limited.url}/healthz") as response:
        assert response.status == 200


# ----- headers -----


async def test_demo_page_security_headers(client, server):
    async with client.get(f"{server.url}/") as response:
        policy = response.headers.get("Content-Security-Policy", "")
        nosniff = response.headers.get("X-Content-Type-Options")
        assert response.status == 200
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert "object-src 'none'" in policy
    assert nosniff == "nosniff"


async def test_widget_script_nosniff(client, server):
    async with client.get(f"{server.url}/widget/widget.js") as response:
        assert response.status == 200
        assert response.headers.get("X-Content-Type-Options") == "nosniff"


async def test_cors_allowed_origin(client, server):
    headers = {"Origin": ALLOWED_ORIGIN}
    async with client.post(f"{server.url}/model/parse", json={"text": "bonjour"}, headers=headers) as response:
        assert response.status == 200
        assert response.headers.get("Access-Control-Allow-Origin") == ALLOWED_ORIGIN


async def test_cors_other_origin(client, server):
    headers = {"Origin": OTHER_ORIGIN}
    async with client.post(f"{server.url}/model/parse", json={"text": "bonjour"}, headers=headers) as response:
        assert response.status == 200
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_cors_preflight_allowed(client, server):
    headers = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    async with client.options(f"{server.url}/webhooks/rest/webhook", headers=headers) as response:
        assert response.status == 204
        assert response.headers.get("Access-Control-Allow-Origin") == ALLOWED_ORIGIN
        assert "POST" in response.headers.get("Access-Control-Allow-Methods", "")


async def test_cors_preflight_other_origin(client, server):
    headers = {"Origin": OTHER_ORIGIN, "Access-Control-Request-Method": "POST"}
    async with client.options(f"{server.url}/webhooks/rest/webhook", headers=headers) as response:
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_rest_receives_missed_expert_message(client, server):
    from bot.dialogue.events import ExpertUttered

    sender = "rest-missed"
    await client.post(f"{server.url}/webhooks/rest/webhook", json={"sender": sender, "message": "bonjour"})
    conversation = await server.runtime.store.conversation("rest", sender)
    await server.runtime.assistant.deliver(conversation.id, ExpertUttered(text="Je regarde votre compte.", label="Assistance"))
    async with client.post(f"{server.url}/webhooks/rest/webhook", json={"sender": sender, "message": "merci"}) as response:
        body = await response.json()
    async with client.post(f"{server.url}/webhooks/rest/webhook", json={"sender": sender, "message": "au revoir"}) as response:
        later = await response.json()
    assert body[0]["text"] == "Je regarde votre compte."
    assert "Je regarde votre compte." not in [item["text"] for item in later]


# ----- clients that go away, a database that refuses writes -----


async def test_clients_leaving_mid_turn_lose_nothing(client, start_server, settings: Settings):
    live = await start_server(settings)
    senders = [f"leaving-{index}" for index in range(20)]

    async def leave_early(sender: str) -> None:
        # The whole request goes out, then the connection closes without waiting for the response.
        body = json.dumps({"sender": sender, "message": PASSWORD_QUESTION}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(
            b"POST /webhooks/rest/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(leave_early(sender) for sender in senders))
    # Wait until the server has seen every request, then for the turns in progress.
    for _ in range(200):
        if all([await live.runtime.store.conversation("rest", sender, create=False) for sender in senders]):
            break
        await asyncio.sleep(0.05)
    await live.runtime.assistant.drain()
    async with client.get(f"{live.url}/readyz") as response:
        assert response.status == 200
    # Every turn was stored whole, and what a client missed comes with its next request.
    for sender in senders:
        conversation = await live.runtime.store.conversation("rest", sender, create=False)
        kinds = [item.event.kind for item in await live.runtime.store.events(conversation.id)]
        assert "user" in kinds, sender
        assert "bot" in kinds, sender
    async with client.post(f"{live.url}/webhooks/rest/webhook", json={"sender": senders[0], "message": "merci"}) as response:
        assert response.status == 200
        replies = [item["text"] for item in await response.json()]
    assert any("mot de passe" in text for text in replies)


async def test_readyz_reports_a_database_that_refuses_writes(client, start_server, settings: Settings, tmp_path):
    live = await start_server(settings)
    other = sqlite3.connect(tmp_path / "entraide.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        async with client.get(f"{live.url}/readyz") as response:
            body = await response.json()
        assert response.status == 503
        assert body["checks"]["store"] is False
    finally:
        other.execute("ROLLBACK")
        other.close()
    async with client.get(f"{live.url}/readyz") as response:
        assert response.status == 200
