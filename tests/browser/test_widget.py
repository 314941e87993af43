"""The widget on the demo ENT page, used in headless Chromium as a pupil or a parent would use it."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from bot.dialogue.events import ExpertUttered
from tests.server.conftest import LiveServer

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
expect = playwright_api.expect
Page = playwright_api.Page

PASSWORD_QUESTION = "j'ai oublié mon mot de passe"
PASSWORD_ANSWER = "Mot de passe oublié"
HELPED_QUESTION = "Cette réponse vous est-elle utile ?"
EXPERT_OFFER = "Je peux transmettre votre question"
EXPERT_LABEL = "Conseiller ENT — niveau 2"
PAGE_TITLE = "Accueil — ENT du collège Jean Moulin"

LAUNCHER = "#entraide-launcher"
PANEL = "#entraide-panel"
INPUT = "#entraide-input"
MESSAGES = "#entraide-log .entraide-msg"
SYNC_TIMEOUT = 10.0
# A message gets data-seq once the server echoed it, so its optimistic copy has none.
SEQ_PATTERN = re.compile(r"^\d+$")


async def open_panel(page: Page) -> None:
    await page.get_by_role("button", name="Besoin d'aide").click()
    await expect(page.locator(INPUT)).to_be_focused()


async def ask(page: Page, text: str) -> None:
    """Type a message, send it with Enter and wait for the server's echo of it."""
    await page.locator(INPUT).fill(text)
    await page.locator(INPUT).press("Enter")
    await expect(user_message(page, text).last).to_have_attribute("data-seq", SEQ_PATTERN)



def user_message(page: Page, text: str):
    return page.locator(f"{MESSAGES}.entraide-msg--user").filter(has_text=text)


def bot_message(page: Page, text: str):
    return page.locator(f"{MESSAGES}.entraide-msg--bot").filter(has_text=text)


def last_choice(page: Page, title: str):
    """The reply button ``title`` of the latest message that offers replies."""
    return page.get_by_role("group", name="Réponses proposées").last.get_by_role("button", name=title, exact=True)


async def displayed_seqs(page: Page) -> list[int]:
    values = await page.locator(f"{MESSAGES}[data-seq]").evaluate_all("items => items.map(item => item.dataset.seq)")
    return [int(value) for value in values]


async def displayed_messages(page: Page) -> list[tuple[int, str]]:
    pairs = await page.locator(f"{MESSAGES}[data-seq]").evaluate_all(
        "items => items.map(item => [item.dataset.seq, item.querySelector('.entraide-msg__text').textContent])"
    )
    return [(int(seq), text) for seq, text in pairs]


async def stored_seqs(server: LiveServer, page: Page) -> list[int]:
    """The seqs of the conversation's transcript in the store, for the page's session."""
    session_id = await page.evaluate("localStorage.getItem('entraide.session')")
    conversation = await server.runtime.store.conversation("web", session_id, create=False)
    return [message.seq for message in await server.runtime.assistant.history(conversation.id)]


async def wait_until_in_sync(server: LiveServer, page: Page) -> list[int]:
    """Wait until the page shows exactly the stored transcript, then return its seqs."""
    deadline = time.monotonic() + SYNC_TIMEOUT
    while True:
        displayed, stored = await displayed_seqs(page), await stored_seqs(server, page)
        if displayed == stored or time.monotonic() > deadline:
            assert displayed == stored
            return displayed
        await asyncio.sleep(0.1)


# ----- a conversation -----


async def test_french_question_answered(page, page_errors):
    await open_panel(page)
    await ask(page, PASSWORD_QUESTION)

    await expect(bot_message(page, PASSWORD_ANSWER)).to_be_visible()
    await expect(bot_message(page, HELPED_QUESTION)).to_be_visible()
    await expect(last_choice(page, "Oui")).to_be_enabled()
    await expect(last_choice(page, "Non")).to_be_enabled()
    await expect(user_message(page, PASSWORD_QUESTION)).to_have_count(1)
    await expect(page.locator(INPUT)).to_have_value("")
    assert page_errors == []


async def test_no_button_offers_expert(page, page_errors):
    await open_panel(page)
    await ask(page, PASSWORD_QUESTION)
    await last_choice(page, "Non").click()

    await expect(bot_message(page, EXPERT_OFFER)).to_be_visible()
    await expect(user_message(page, "Non")).to_have_count(1)
    # The first question's buttons no longer apply once the user answered it.
    first_buttons = page.get_by_role("group", name="Réponses proposées").first.get_by_role("button")
    await expect(first_buttons.first).to_be_disabled()
    await expect(first_buttons.last).to_be_disabled()
    await expect(page.locator(INPUT)).to_be_focused()
    assert page_errors == []


async def test_reload_shows_history(page, widget_server, page_errors):
    await open_panel(page)
    await ask(page, PASSWORD_QUESTION)
    await expect(last_choice(page, "Non")).to_be_visible()
    before = await displayed_messages(page)

    await page.reload()

    # The panel stays open across pages of the tab, and the history is replayed into it.
    await expect(page.locator(PANEL)).to_be_visible()
    await expect(page.locator(f"{MESSAGES}[data-seq]")).to_have_count(len(before))
    assert await displayed_messages(page) == before

    await ask(page, "merci")
    seqs = await wait_until_in_sync(widget_server, page)
    assert len(seqs) == len(set(seqs))
    await expect(user_message(page, PASSWORD_QUESTION)).to_have_count(1)
    assert page_errors == []


async def test_reconnect_without_loss(page, context, widget_server, page_errors):
    await open_panel(page)
    await ask(page, PASSWORD_QUESTION)
    await expect(last_choice(page, "Non")).to_be_visible()
    session_id = await page.evaluate("localStorage.getItem('entraide.session')")
    conversation = await widget_server.runtime.store.conversation("web", session_id, create=False)

    # The network drops, and the server closes every widget socket, as a restart would.
    await context.set_offline(True)
    connector = widget_server.web_connector
    await connector.stop()
    await connector.start()
    expert_text = "Bonjour, je suis le conseiller. Je réinitialise votre mot de passe."
    await widget_server.runtime.assistant.deliver(conversation.id, ExpertUttered(expert_text, label=EXPERT_LABEL))
    await page.locator(INPUT).fill("merci, j'attends")
    await page.locator(INPUT).press("Enter")
    await expect(page.get_by_text("En attente de connexion…")).to_be_visible()

    await context.set_offline(False)

    expert = page.locator(f"{MESSAGES}.entraide-msg--expert")
    await expect(expert).to_have_count(1)
    await expect(expert).to_contain_text(expert_text)
    await expect(expert).to_contain_text(EXPERT_LABEL)
    await expect(user_message(page, "merci, j'attends")).to_have_count(1)
    await expect(user_message(page, "merci, j'attends")).to_have_attribute("data-seq", SEQ_PATTERN)
    await expect(page.get_by_text("En attente de connexion…")).to_have_count(0)
    seqs = await wait_until_in_sync(widget_server, page)
    assert len(seqs) == len(set(seqs))
    assert page_errors == []


# ----- keyboard, untrusted text, accessibility -----


async def test_keyboard_only(page, page_errors):
    for _ in range(40):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "entraide-launcher":
            break
    await expect(page.locator(LAUNCHER)).to_be_focused()

    await page.keyboard.press("Enter")
    await expect(page.locator(LAUNCHER)).to_have_attribute("aria-expanded", "true")
    await expect(page.locator(INPUT)).to_be_focused()

    await page.keyboard.type(PASSWORD_QUESTION)
    await page.keyboard.press("Enter")
    await expect(bot_message(page, PASSWORD_ANSWER)).to_be_visible()

    await page.keyboard.press("Escape")
    await expect(page.locator(PANEL)).to_be_hidden()
    await expect(page.locator(LAUNCHER)).to_have_attribute("aria-expanded", "false")
    await expect(page.locator(LAUNCHER)).to_be_focused()
    assert page_errors == []


async def test_markup_shown_as_text(page, page_errors):
    markup = "<img src=x onerror=\"document.title='piégé'\">"
    await open_panel(page)
    await ask(page, markup)

    await expect(user_message(page, markup).locator(".entraide-msg__text")).to_have_text(markup)
    await expect(page.locator("#entraide-root img")).to_have_count(0)
    assert await page.title() == PAGE_TITLE
    assert page_errors == []


async def test_axe_no_serious_violation(page):
    from axe_playwright_python.async_playwright import Axe

    await open_panel(page)
    await ask(page, PASSWORD_QUESTION)
    await expect(last_choice(page, "Non")).to_be_visible()

    # Axe.run injects axe-core with page.evaluate, which the page's script-src 'self' does not block.
    results = await Axe().run(page)

    serious = [
        f"{violation['id']} ({violation['impact']}): {[node['target'] for node in violation['nodes']]}"
        for violation in results.response["violations"]
        if violation["impact"] in {"serious", "critical"}
    ]
    assert serious == []
