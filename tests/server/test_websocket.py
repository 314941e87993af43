"""The widget's WebSocket protocol, spoken by an aiohttp client as the widget would speak it."""

from __future__ import annotations

import time
import uuid
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import WSMsgType

from bot.config import Settings
from bot.dialogue.events import ExpertUttered
from tests.server.conftest import ALLOWED_ORIGIN, JWT_SECRET, OTHER_ORIGIN, LiveServer

FRAME_TIMEOUT = 10.0
PASSWORD_QUESTION = "j'ai oublié mon mot de passe"
EXPERT_LABEL = "Conseiller ENT — niveau 2"


def identity_token(subject: str, secret: str = JWT_SECRET, lifetime: int = 600, **claims: Any) -> str:
    """Sign a token as the ENT's server does. A negative ``lifetime`` makes an expired token."""
    payload = {"sub": subject, "exp": int(time.time()) + lifetime, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


async def connect(client: aiohttp.ClientSession, server: LiveServer, **headers: str) -> aiohttp.ClientWebSocketResponse:
    return await client.ws_connect(server.ws_url, headers=headers)


async def say_hello(
    socket: aiohttp.ClientWebSocketResponse, session_id: str | None = None, token: str | None = None, last_seq: int = 0
) -> dict[str, Any]:
    """Send the hello frame and return the welcome frame."""
    await socket.send_json({"type": "hello", "session_id": session_id, "token": token, "last_seq": last_seq, "lang": "fr"})
    welcome = await socket.receive_json(timeout=FRAME_TIMEOUT)
    assert welcome["type"] == "welcome", welcome
    return welcome


async def send_message(socket: aiohttp.ClientWebSocketResponse, text: str, client_id: str | None = None) -> list[dict[str, Any]]:
    """Send a text message and return every frame up to the end of the bot's turn, typing frames left out."""
    await socket.send_json({"type": "message", "client_id": client_id or str(uuid.uuid4()), "text": text})
    return await frames_until_turn_ends(socket)


async def press_button(socket: aiohttp.ClientWebSocketResponse, title: str, payload: str) -> list[dict[str, Any]]:
    await socket.send_json({"type": "button", "client_id": str(uuid.uuid4()), "title": title, "payload": payload})
    return await frames_until_turn_ends(socket)


async def frames_until_turn_ends(socket: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = await socket.receive_json(timeout=FRAME_TIMEOUT)
        if frame["type"] == "typing":
            if frame["role"] == "bot" and frame["active"] is False:
                return frames
            continue
        frames.append(frame)


async def replay_and_send(socket: aiohttp.ClientWebSocketResponse, text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Send a message right after the welcome; return (replayed history, frames of the new turn).

    The server replays the history before it reads any frame of the socket, so every message
    frame before the echo of this message is history.
    """
    client_id = str(uuid.uuid4())
    frames = await send_message(socket, text, client_id)
    echo = next(index for index, frame in enumerate(frames) if frame.get("client_id") == client_id)
    return frames[:echo], frames[echo:]


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [frame["seq"] for frame in frames if frame["type"] == "message"]


async def receive_close(socket: aiohttp.ClientWebSocketResponse) -> tuple[list[dict[str, Any]], int | None]:
    """Read until the server closes the socket; return the frames read before and the close code."""
    frames = []
    while True:
        message = await socket.receive(timeout=FRAME_TIMEOUT)
        if message.type == WSMsgType.TEXT:
            frames.append(message.json())
            continue
        assert message.type in {WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED}, message
        return frames, socket.close_code


async def assert_still_serving(client: aiohttp.ClientSession, server: LiveServer) -> None:
    """Check that a new widget connection still gets a reply."""
    async with await connect(client, server) as socket:
        await say_hello(socket)
        frames = await send_message(socket, PASSWORD_QUESTION)
    assert any(frame.get("role") == "bot" for frame in frames)


async def conversation_count(server: LiveServer) -> int:
    return len(await server.runtime.store.conversations(limit=100_000))


# ----- the normal exchange -----


async def test_hello_welcome(client, server):
    async with await connect(client, server) as socket:
        welcome = await say_hello(socket)
    assert welcome["session_id"]
    assert welcome["max_length"] == 2000
    assert welcome["identity"] is None


async def test_message_echo_and_reply(client, server):
    async with await connect(client, server) as socket:
        await say_hello(socket)
        frames = await send_message(socket, PASSWORD_QUESTION, client_id="question-1")

    echo, *replies = frames
    assert echo["type"] == "message"
    assert echo["role"] == "user"
    assert echo["client_id"] == "question-1"
    assert echo["text"] == PASSWORD_QUESTION
    assert [reply["role"] for reply in replies] == ["bot", "bot", "bot"]
    assert "conversation est enregistrée" in replies[0]["text"]
    assert "Mot de passe oublié" in replies[1]["text"]
    assert replies[2]["buttons"] == [{"title": "Oui", "payload": "/affirm"}, {"title": "Non", "payload": "/deny"}]
    assert seqs(frames) == sorted(seqs(frames))
    assert len(set(seqs(frames))) == len(frames)
    assert all(frame["id"] == f"m{frame['seq']}" for frame in frames)


async def test_typing_frames_around_turn(client, server):
    async with await connect(client, server) as socket:
        await say_hello(socket)
        await socket.send_json({"type": "message", "client_id": "typing-1", "text": PASSWORD_QUESTION})
        first = await socket.receive_json(timeout=FRAME_TIMEOUT)
        rest = await frames_until_turn_ends(socket)
    assert first == {"type": "typing", "role": "bot", "active": True}
    assert rest


async def test_button_shows_title(client, server):
    async with await connect(client, server) as socket:
        await say_hello(socket)
        await send_message(socket, PASSWORD_QUESTION)
        echo, *replies = await press_button(socket, "Non", "/deny")
    assert echo["role"] == "user"
    assert echo["text"] == "Non"
    assert "transmettre votre question" in replies[0]["text"]


async def test_same_client_id_handled_once(client, server):
    async with await connect(client, server) as socket:
        welcome = await say_hello(socket)
        first = await send_message(socket, PASSWORD_QUESTION, client_id="resent-1")
        again = await send_message(socket, PASSWORD_QUESTION, client_id="resent-1")
    conversation = await server.runtime.store.conversation("web", welcome["session_id"], create=False)
    history = await server.runtime.assistant.history(conversation.id)
    assert first
    assert again == []
    assert len([item for item in history if item.text == PASSWORD_QUESTION]) == 1


# ----- history and reconnection -----


async def test_history_after_last_seq(client, server):
    async with await connect(client, server) as socket:
        welcome = await say_hello(socket)
        first_turn = await send_message(socket, PASSWORD_QUESTION)
        second_turn = await press_button(socket, "Non", "/deny")
    seen = seqs(first_turn)

    async with await connect(client, server) as socket:
        resumed = await say_hello(socket, session_id=welcome["session_id"], last_seq=seen[-1])
        replayed, new_turn = await replay_and_send(socket, "merci")

    assert resumed["session_id"] == welcome["session_id"]
    assert seqs(replayed) == seqs(second_turn)
    assert min(seqs(new_turn)) > max(seqs(second_turn))


async def test_history_whole_on_page_load(client, server):
    async with await connect(client, server) as socket:
        welcome = await say_hello(socket)
        received = await send_message(socket, PASSWORD_QUESTION)

    async with await connect(client, server) as socket:
        await say_hello(socket, session_id=welcome["session_id"], last_seq=0)
        replayed, _ = await replay_and_send(socket, "merci")

    assert seqs(replayed) == seqs(received)
    assert [frame["text"] for frame in replayed] == [frame["text"] for frame in received]
    assert replayed[0]["client_id"] == received[0]["client_id"]


async def test_expert_message_while_away(client, server):
    async with await connect(client, server) as socket:
        welcome = await say_hello(socket)
        received = await send_message(socket, PASSWORD_QUESTION)
    session_id = welcome["session_id"]
    conversation = await server.runtime.store.conversation("web", session_id, create=False)

    delivered = await server.runtime.assistant.deliver(conversation.id, ExpertUttered("Bonjour, je reprends votre demande.", label=EXPERT_LABEL))

    async with await connect(client, server) as socket:
        await say_hello(socket, session_id=session_id, last_seq=max(seqs(received)))
        replayed, _ = await replay_and_send(socket, "merci")

    assert len(replayed) == 1
    assert replayed[0]["seq"] == delivered.seq
    assert replayed[0]["role"] == "expert"
    assert replayed[0]["label"] == EXPERT_LABEL
    assert replayed[0]["text"] == "Bonjour, je reprends votre demande."


async def test_expert_message_pushed_live(client, server):
    async with await connect(client, server) as socket:
        welcome = await say_hello(socket)
        await send_message(socket, PASSWORD_QUESTION)
        conversation = await server.runtime.store.conversation("web", welcome["session_id"], create=False)
        await server.runtime.assistant.deliver(conversation.id, ExpertUttered("Je regarde votre compte.", label=EXPERT_LABEL))
        frame = await socket.receive_json(timeout=FRAME_TIMEOUT)
    assert frame["role"] == "expert"
    assert frame["text"] == "Je regarde votre compte."


async def test_tabs_of_one_session(client, server):
    async with await connect(client, server) as first_tab:
        welcome = await say_hello(first_tab)
        async with await connect(client, server) as second_tab:
            await say_hello(second_tab, session_id=welcome["session_id"])
            sent = await send_message(first_tab, PASSWORD_QUESTION)
            # The second tab gets the echo, the replies and the typing frames of the first tab's turn.
            mirrored = await frames_until_turn_ends(second_tab)
    assert seqs(mirrored) == seqs(sent)


# ----- malformed frames -----


async def test_binary_frame_closes_1003(client, server):
    async with await connect(client, server) as socket:
        await say_hello(socket)
        await socket.send_bytes(b"\x00\x01bonjour")
        _, code = await receive_close(socket)
    assert code == 1003
    await assert_still_serving(client, server)


async def test_oversized_frame_closes_1009(client, server):
    async with await connect(client, server) as socket:
        await say_hello(socket)
        await socket.send_str("a" * (64 * 1024 + 1))
        _, code = await receive_close(socket)
    assert code == 1009
    await assert_still_serving(client, server)


async def test_non_json_frame_error(client, server):
    async with await connect(client, server) as socket:
        await say_hello(socket)
        await socket.send_str("bonjour, ceci n'est pas du JSON")
        error = await socket.receive_json(timeout=FRAME_TIMEOUT)
        frames = await send_message(socket, PASSWORD_QUESTION)
    assert error["type"] == "error"
    assert error["code"] == "bad_request"
    assert error["message"]
    assert any(frame.get("role") == "bot" for frame in frames)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(["hello"], id="not-an-object"),
        pytest.param({"type": "subscribe"}, id="unknown-type"),
        pytest.param({"type": "message", "client_id": "x"}, id="missing-text"),
        pytest.param({"type": "button", "client_id": "x", "title": "Oui", "payload": 3}, id="payload-not-string"),
    ],
)
async def test_invalid_frame_error(client, server, frame):
    async with await connect(client, server) as socket:
        await say_hello(socket)
        await socket.send_json(frame)
        error = await socket.receive_json(timeout=FRAME_TIMEOUT)
        frames = await send_message(socket, PASSWORD_QUESTION)
    assert error["code"] == "bad_request"
    assert any(frame.get("role") == "bot" for frame in frames)


async def test_hello_expected_first(client, server):
    async with await connect(client, server) as socket:
        await socket.send_json({"type": "message", "client_id": "early", "text": "bonjour"})
        frames, code = await receive_close(socket)
    assert [frame["code"] for frame in frames] == ["bad_request"]
    assert code == 1008
    await assert_still_serving(client, server)


async def test_message_too_long(client, server):
    limit = server.runtime.settings.channels.web.max_message_length
    async with await connect(client, server) as socket:
        welcome = await say_hello(socket)
        await socket.send_json({"type": "message", "client_id": "long-1", "text": "é" * (limit + 1)})
        error = await socket.receive_json(timeout=FRAME_TIMEOUT)
        frames = await send_message(socket, PASSWORD_QUESTION)
    assert error["type"] == "error"
    assert error["code"] == "too_long"
    assert str(limit) in error["message"]
    assert frames[0]["client_id"] != "long-1"
    conversation = await server.runtime.store.conversation("web", welcome["session_id"], create=False)
    history = await server.runtime.assistant.history(conversation.id)
    assert all(len(item.text) <= limit for item in history)


async def test_message_at_limit_accepted(client, server):
    limit = server.runtime.settings.channels.web.max_message_length
    async with await connect(client, server) as socket:
        await say_hello(socket)
        frames = await send_message(socket, "é" * limit, client_id="at-limit")
    assert frames[0]["client_id"] == "at-limit"


# ----- identity tokens -----

REJECTED_TOKENS = [
    pytest.param(lambda: identity_token("eleve-42", secret="another-secret-that-the-ent-never-shared"), "token_invalid", id="wrong-secret"),
    pytest.param(lambda: identity_token("eleve-42", lifetime=-3600), "token_expired", id="expired"),
    pytest.param(lambda: jwt.encode({"sub": "eleve-42", "exp": int(time.time()) + 600}, None, algorithm="none"), "token_invalid", id="unsigned"),
    pytest.param(lambda: "pas-un-jeton", "token_invalid", id="not-a-jwt"),
    pytest.param(lambda: jwt.encode({"sub": "eleve-42"}, JWT_SECRET, algorithm="HS256"), "token_invalid", id="no-expiry"),
]


@pytest.mark.parametrize(("make_token", "code"), REJECTED_TOKENS)
async def test_token_rejected(client, server, make_token, code):
    before = await conversation_count(server)
    async with await connect(client, server) as socket:
        await socket.send_json({"type": "hello", "session_id": None, "token": make_token(), "last_seq": 0})
        frames, close_code = await receive_close(socket)

    assert [frame["type"] for frame in frames] == ["error"]
    assert frames[0]["code"] == code
    assert frames[0]["message"]
    assert close_code == 4401
    assert await conversation_count(server) == before
    await assert_still_serving(client, server)


async def test_token_identity_in_welcome(client, server):
    token = identity_token("eleve-7", profile="eleve", school="0751234A", name="Camille Martin")
    async with await connect(client, server) as socket:
        welcome = await say_hello(socket, token=token)
    assert welcome["identity"] == {"name": "Camille Martin", "profile": "eleve"}


async def test_token_sets_profile_school(client, server):
    token = identity_token("enseignant-12", profile="enseignant", school="0751234A")
    async with await connect(client, server) as socket:
        welcome = await say_hello(socket, token=token)
        frames = await send_message(socket, "je veux parler à une personne")

    conversation = await server.runtime.store.conversation("web", welcome["session_id"], create=False)
    tracker = await server.runtime.assistant.tracker(conversation.id)
    texts = [frame["text"] for frame in frames if frame["role"] == "bot"]
    assert conversation.profile == "enseignant"
    assert conversation.school == "0751234A"
    assert tracker.slots["profile"] == "enseignant"
    assert tracker.slots["school"] == "0751234A"
    # The handoff form skips the two questions the token answered and asks for the description.
    assert not any(text.startswith("Vous êtes") for text in texts)
    assert not any("code UAI" in text for text in texts)
    assert texts[-1].startswith("Décrivez votre problème")


async def test_token_bad_claims_ignored(client, server):
    token = identity_token("autre-3", profile="astronaute", school="lycée du coin")
    async with await connect(client, server) as socket:
        welcome = await say_hello(socket, token=token)
        await send_message(socket, PASSWORD_QUESTION)
    conversation = await server.runtime.store.conversation("web", welcome["session_id"], create=False)
    assert conversation.profile is None
    assert conversation.school is None


async def test_resume_same_subject(client, server):
    token = identity_token("parent-1", profile="parent")
    async with await connect(client, server) as socket:
        welcome = await say_hello(socket, token=token)
        received = await send_message(socket, PASSWORD_QUESTION)

    # The ENT issues a fresh token for the same user, as after a page change.
    async with await connect(client, server) as socket:
        resumed = await say_hello(socket, session_id=welcome["session_id"], token=identity_token("parent-1", profile="parent"))
        replayed, _ = await replay_and_send(socket, "merci")
    assert resumed["session_id"] == welcome["session_id"]
    assert seqs(replayed) == seqs(received)


async def test_resume_other_subject_refused(client, server):
    async with await connect(client, server) as socket:
        welcome = await say_hello(socket, token=identity_token("parent-2"))
        await send_message(socket, PASSWORD_QUESTION)

    async with await connect(client, server) as socket:
        other = await say_hello(socket, session_id=welcome["session_id"], token=identity_token("parent-3"))
        replayed, _ = await replay_and_send(socket, "bonjour")
    assert other["session_id"] != welcome["session_id"]
    assert replayed == []


async def test_resume_without_token_refused(client, server):
    async with await connect(client, server) as socket:
        welcome = await say_hello(socket, token=identity_token("parent-4"))
        await send_message(socket, PASSWORD_QUESTION)

    async with await connect(client, server) as socket:
        anonymous = await say_hello(socket, session_id=welcome["session_id"])
        replayed, _ = await replay_and_send(socket, "bonjour")
    assert anonymous["session_id"] != welcome["session_id"]
    assert replayed == []


async def test_resume_anonymous_with_token_refused(client, server):
    async with await connect(client, server) as socket:
        welcome = await say_hello(socket)
        await send_message(socket, PASSWORD_QUESTION)

    async with await connect(client, server) as socket:
        signed = await say_hello(socket, session_id=welcome["session_id"], token=identity_token("parent-5"))
    assert signed["session_id"] != welcome["session_id"]


async def test_resume_unknown_session_new(client, server):
    unknown = str(uuid.uuid4())
    async with await connect(client, server) as socket:
        welcome = await say_hello(socket, session_id=unknown)
    assert welcome["session_id"] != unknown


# ----- origins and limits -----


async def test_disallowed_origin_closes_4403(client, server):
    before = await conversation_count(server)
    async with await connect(client, server, Origin=OTHER_ORIGIN) as socket:
        frames, code = await receive_close(socket)
    assert [frame["code"] for frame in frames] == ["origin"]
    assert code == 4403
    assert await conversation_count(server) == before
    await assert_still_serving(client, server)


async def test_allowed_origin_served(client, server):
    async with await connect(client, server, Origin=ALLOWED_ORIGIN) as socket:
        await say_hello(socket)
        frames = await send_message(socket, PASSWORD_QUESTION)
    assert any(frame.get("role") == "bot" for frame in frames)


async def test_same_origin_served(client, server):
    async with await connect(client, server, Origin=server.url) as socket:
        welcome = await say_hello(socket)
    assert welcome["session_id"]


async def test_too_many_messages(client, start_server, settings: Settings):
    settings.channels.web.messages_per_minute = 3
    limited = await start_server(settings)

    async with await connect(client, limited) as socket:
        await say_hello(socket)
        for number in range(3):
            frames = await send_message(socket, f"question {number}")
            assert frames, f"message {number} got no answer"
        await socket.send_json({"type": "message", "client_id": "one-too-many", "text": "encore une"})
        error = await socket.receive_json(timeout=FRAME_TIMEOUT)
        assert not socket.closed

    assert error["type"] == "error"
    assert error["code"] == "rate_limited"
    await assert_still_serving(client, limited)


async def test_too_many_connections(client, start_server, settings: Settings):
    settings.channels.web.connections_per_minute = 2
    limited = await start_server(settings)
    for _ in range(2):
        async with await connect(client, limited) as socket:
            await say_hello(socket)

    async with await connect(client, limited) as socket:
        frames, code = await receive_close(socket)

    assert [frame["code"] for frame in frames] == ["rate_limited"]
    assert code == 4429
