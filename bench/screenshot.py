"""Take the README's screenshot of the widget: the demo ENT page with a French question answered.

Start a server first, then point this script at it:

    ENTRAIDE_DATABASE_URL=sqlite+aiosqlite:////tmp/screenshot.db entraide run --port 5005
    python bench/screenshot.py --url http://127.0.0.1:5005/ --out docs/images/widget.png

It drives Debian's Chromium (the ``chromium`` package) through Playwright's async API, so
``playwright install`` is not needed. The browser profile is new, so the panel starts a new
conversation.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from playwright.async_api import async_playwright, expect

# The pupil of the demo page asks. The panel's log is about 420 px high at 1200x800, and this
# question, its answer for pupils and the Oui / Non buttons fit in it together.
QUESTION = "je suis élève, comment écrire sur le blog ?"
VIEWPORT = {"width": 1200, "height": 800}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def take_screenshot(url: str, out: Path, chromium: Path, question: str = QUESTION) -> None:
    """Open the widget on ``url``, ask ``question`` and save the viewport as a PNG to ``out``."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport=VIEWPORT, locale="fr-FR", reduced_motion="reduce")
            page = await context.new_page()
            await page.goto(url)
            await page.get_by_role("button", name="Besoin d'aide").click()
            await page.locator("#entraide-input").fill(question)
            await page.locator("#entraide-input").press("Enter")
            # The answer ends with the "did it help?" question and its Oui / Non buttons.
            await expect(page.get_by_role("button", name="Non", exact=True)).to_be_visible(timeout=15_000)
            await expect(page.locator(".entraide-typing")).to_be_empty()
            # Blur the field, so the screenshot shows no caret and no focus ring.
            await page.evaluate("document.activeElement.blur()")
            # The log keeps its newest message in view. Scroll the question up to its top instead,
            # so the intro above it gives way to the question, the answer and the buttons.
            await page.locator("#entraide-log .entraide-msg--user").last.evaluate("item => item.scrollIntoView({block: 'start'})")
            out.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(out))
        finally:
            await browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Save a screenshot of the widget answering a French question.")
    parser.add_argument("--url", required=True, help="URL of the demo page of a running server, such as http://127.0.0.1:5005/")
    parser.add_argument("--out", type=Path, default=Path("docs/images/widget.png"), help="PNG file to write (default: docs/images/widget.png)")
    parser.add_argument("--question", default=QUESTION, help=f"question to ask (default: {QUESTION!r})")
    parser.add_argument("--chromium", type=Path, default=Path("/usr/bin/chromium"), help="Chromium executable (default: /usr/bin/chromium)")
    args = parser.parse_args(argv)

    if not args.chromium.exists():
        print(f"screenshot: {args.chromium} not found; install the chromium package or pass --chromium", file=sys.stderr)
        return 1
    asyncio.run(take_screenshot(args.url, args.out, args.chromium, args.question))
    print(f"screenshot: saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
