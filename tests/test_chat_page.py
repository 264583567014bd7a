"""The patient chat page in real headless Chromium against the real platform and Rasa."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Callable

import pytest
from playwright.async_api import Page, async_playwright, expect

from core.settings import Settings
from tests.fakes.twilio_server import FakeTwilio
from tests.support import free_port, running_app
from webapp.app import STATIC_DIR

pytestmark = [pytest.mark.rasa, pytest.mark.browser]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
def live_settings(make_live_settings: Callable[..., Settings], sqlite_url: str) -> Settings:
    if not (STATIC_DIR / "index.html").exists():
        pytest.fail("the chat page is not built: run `make test`, which builds it")
    return make_live_settings(sqlite_url)


async def _send(page: Page, text: str) -> None:
    await page.locator("#chat-input").fill(text)
    await page.keyboard.press("Enter")


async def test_a_patient_chats_reloads_and_sees_the_history(live_settings: Settings) -> None:
    async with running_app(live_settings) as (url, _), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: dialogs.append(d.message))
        await page.goto(url)
        await expect(page.locator("#connection-status")).to_contain_text("Connected")
        await expect(page.get_by_label("Message", exact=False).first).to_be_visible()

        await _send(page, "hello")
        bot = page.locator('.message[data-sender="bot"] .message-text')
        await expect(bot.first).to_contain_text("assistant", timeout=15_000)

        # Hostile markup is shown as text, never run or rendered.
        await _send(page, "<img src=x onerror=alert(1)><script>alert(2)</script>")
        patient = page.locator('.message[data-sender="patient"] .message-text')
        await expect(patient.last).to_have_text(
            "<img src=x onerror=alert(1)><script>alert(2)</script>"
        )
        await expect(page.locator("#messages img")).to_have_count(0)
        await expect(bot).to_have_count(2, timeout=15_000)

        before = await page.locator(".message[data-id]").evaluate_all(
            "els => els.map(e => e.dataset.id)"
        )
        await page.reload()
        await expect(page.locator("#connection-status")).to_contain_text("Connected")
        await expect(page.locator(".message[data-id]")).to_have_count(len(before))
        after = await page.locator(".message[data-id]").evaluate_all(
            "els => els.map(e => e.dataset.id)"
        )
        assert after == before
        assert dialogs == []
        await browser.close()


async def test_buttons_work_from_the_keyboard(live_settings: Settings) -> None:
    async with running_app(live_settings) as (url, _), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        await page.goto(url)
        await expect(page.locator("#connection-status")).to_contain_text("Connected")
        await _send(page, "I want to speak to a human")
        yes = page.locator(".message button", has_text="Yes")
        await expect(yes).to_be_visible(timeout=15_000)
        await yes.focus()
        await page.keyboard.press("Enter")
        await expect(
            page.locator('.message[data-sender="bot"] .message-text').last
        ).to_contain_text("staff", timeout=15_000)
        await browser.close()


async def test_a_patient_links_a_phone_with_the_code_texted_to_it(
    make_live_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    with FakeTwilio() as fake:
        port = free_port()
        settings = make_live_settings(
            sqlite_url,
            public_base_url=f"http://127.0.0.1:{port}",
            twilio_account_sid=fake.account_sid,
            twilio_auth_token=fake.auth_token,
            twilio_from_number="+15017122661",
            twilio_api_base_url=fake.base_url,
        )
        phone = f"+1202555{uuid.uuid4().int % 10000:04d}"
        async with running_app(settings, port=port) as (url, _), async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page()
            await page.goto(url)
            await expect(page.locator("#connection-status")).to_contain_text("Connected")
            await page.locator("#sms-toggle").click()
            await page.get_by_label("Mobile phone number").fill(phone[2:])
            await page.locator("#sms-send-code").click()
            await expect(page.locator("#sms-code-sent")).to_contain_text(phone[-4:])
            sent = [m for m in fake.messages if m["to"] == phone]
            assert len(sent) == 1
            code = re.search(r"\b(\d{6})\b", sent[0]["body"])
            assert code is not None
            wrong = "000000" if code.group(1) != "000000" else "111111"
            await page.locator("#sms-code").fill(wrong)
            await page.locator("#sms-confirm").click()
            await expect(page.locator("#sms-error")).to_have_attribute("data-code", "invalid_code")
            await page.locator("#sms-code").fill(code.group(1))
            await page.locator("#sms-confirm").click()
            await expect(page.locator("#sms-linked")).to_contain_text(phone[-4:])
            # After a reload the page still knows where texts go.
            await page.reload()
            await expect(page.locator("#connection-status")).to_contain_text("Connected")
            await expect(page.locator("#sms-linked")).to_contain_text(phone[-4:])
            await expect(page.locator("#sms-toggle")).to_be_hidden()
            await browser.close()
