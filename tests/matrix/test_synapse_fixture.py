"""Check the Synapse fixture and the nio helpers with two users: a bot and an expert."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable

import nio
import pytest

from tests.support.matrix import expect, join_invites, make_client, send_text, sync_until
from tests.support.synapse import MatrixAccount, SynapseRequestError, SynapseServer


def message_from(sender: str, event_id: str | None = None) -> Callable[[nio.Event], bool]:
    def matches(event: nio.Event) -> bool:
        if not isinstance(event, nio.RoomMessageText) or event.sender != sender:
            return False
        return event_id is None or event.event_id == event_id

    return matches


@pytest.fixture
def bot_account(synapse: SynapseServer) -> MatrixAccount:
    return synapse.register(f"bot_{secrets.token_hex(4)}")


@pytest.fixture
def expert_account(synapse: SynapseServer) -> MatrixAccount:
    return synapse.register(f"expert_{secrets.token_hex(4)}")


@pytest.fixture
async def bot(synapse: SynapseServer, bot_account: MatrixAccount) -> AsyncIterator[nio.AsyncClient]:
    client = await make_client(synapse, bot_account)
    yield client
    await client.close()


@pytest.fixture
async def expert(
    synapse: SynapseServer, expert_account: MatrixAccount
) -> AsyncIterator[nio.AsyncClient]:
    client = await make_client(synapse, expert_account)
    yield client
    await client.close()


async def test_register_creates_usable_account(synapse: SynapseServer) -> None:
    username = f"teacher_{secrets.token_hex(4)}"

    account = synapse.register(username, "correct-horse")
    client = await make_client(synapse, account)
    try:
        whoami = expect(await client.whoami(), nio.WhoamiResponse)
    finally:
        await client.close()

    assert account.user_id == f"@{username}:{synapse.server_name}"
    assert account.password == "correct-horse"
    assert whoami.user_id == account.user_id
    assert whoami.device_id == account.device_id


def test_register_rejects_taken_username(
    synapse: SynapseServer, bot_account: MatrixAccount
) -> None:
    username = bot_account.user_id[1:].split(":")[0]

    with pytest.raises(SynapseRequestError) as caught:
        synapse.register(username)

    assert caught.value.errcode == "M_USER_IN_USE"


async def test_invited_expert_receives_message(
    bot: nio.AsyncClient, expert: nio.AsyncClient, expert_account: MatrixAccount
) -> None:
    created = expect(
        await bot.room_create(name="Guichet test", invite=[expert_account.user_id], federate=False),
        nio.RoomCreateResponse,
    )
    joined = await join_invites(expert)
    sent_id = await send_text(bot, created.room_id, "Nouvelle demande de Mme Martin")
    received = await sync_until(
        expert, message_from(bot.user_id, sent_id), room_id=created.room_id
    )

    assert joined == [created.room_id]
    assert created.room_id in expert.rooms
    assert received.body == "Nouvelle demande de Mme Martin"


async def test_thread_reply_keeps_relation(
    bot: nio.AsyncClient, expert: nio.AsyncClient, expert_account: MatrixAccount
) -> None:
    created = expect(
        await bot.room_create(invite=[expert_account.user_id], federate=False),
        nio.RoomCreateResponse,
    )
    room_id = created.room_id
    await join_invites(expert)
    root_id = await send_text(bot, room_id, "Demande : mot de passe oublié")
    await sync_until(expert, message_from(bot.user_id, root_id), room_id=room_id)

    reply_id = await send_text(expert, room_id, "!prendre", thread_root=root_id)
    reply = await sync_until(bot, message_from(expert.user_id), room_id=room_id)
    relation = reply.source["content"]["m.relates_to"]

    assert reply.event_id == reply_id
    assert reply.body == "!prendre"
    assert relation["rel_type"] == "m.thread"
    assert relation["event_id"] == root_id
    assert relation["m.in_reply_to"]["event_id"] == root_id
