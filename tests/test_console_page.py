"""The staff console (/console) in real headless Chromium, beside a patient's chat page, against
the real platform and Rasa: a nurse signs in, claims the case the patient opened, answers,
hands back to the bot and resolves, and the patient sees each step live."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from core.settings import Settings
from tests.support import running_app
from tests.test_chat_page import CHROMIUM, CHROMIUM_ARGS
from webapp.app import STATIC_DIR

pytestmark = [pytest.mark.rasa, pytest.mark.browser]
ADMIN_TOKEN = "test-admin-token-console-page-0123"


@pytest.fixture
def live_settings(make_live_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    if not (STATIC_DIR / "console.html").exists():
        pytest.fail("the console page is not built: run `make test`, which builds it")
    # A database of its own: the console lists every case, and this test's must be the only one.
    return make_live_settings(f"sqlite:///{tmp_path / 'console.db'}", admin_token=ADMIN_TOKEN)


async def _send(page: Page, text: str) -> None:
    await page.locator("#chat-input").fill(text)
    await page.keyboard.press("Enter")


async def test_a_nurse_works_a_case_from_the_console_while_the_patient_watches(
    live_settings: Settings,
) -> None:
    async with running_app(live_settings) as (url, _), async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        patient = await browser.new_page()
        nurse = await browser.new_page()
        problems: list[str] = []
        for page in (patient, nurse):
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on(
                "console",
                lambda m: (
                    problems.append(m.text)
                    if m.type == "error" and "Content Security Policy" in m.text
                    else None
                ),
            )

        await patient.goto(url)
        await expect(patient.locator("#connection-status")).to_contain_text("Connected")
        await _send(patient, "I want to talk to a real person")
        await patient.locator(".message button", has_text="Yes").last.click()
        await expect(patient.locator('.message[data-sender="bot"]').last).to_contain_text(
            "staff", timeout=15_000
        )

        await nurse.goto(f"{url}/console")
        await nurse.locator("#token").fill(ADMIN_TOKEN)
        await nurse.locator("#staff-name").fill("Dana Reyes")
        await nurse.locator("#signin-form button[type=submit]").click()
        row = nurse.locator("[data-case-id]").first
        await expect(row).to_be_visible(timeout=10_000)
        await row.locator("button").click()
        await expect(nurse.locator("#case-detail")).to_contain_text("asked to talk to a person")
        await expect(nurse.locator("#transcript")).to_contain_text("real person")
        await expect(nurse.locator("#reply-text")).to_be_disabled()

        await nurse.locator("#claim").click()
        await expect(nurse.locator("#reply-text")).to_be_enabled(timeout=10_000)
        staff_lines = patient.locator('.message[data-sender="system"] .message-text')
        await expect(staff_lines.last).to_contain_text("Dana", timeout=10_000)

        await nurse.locator("#reply-text").fill("Hello, this is Dana. How can I help?")
        await nurse.locator("#reply-text").press("Enter")
        staff_reply = patient.locator('.message[data-sender="staff"] .message-text')
        await expect(staff_reply.last).to_contain_text("Hello, this is Dana.", timeout=10_000)

        # The patient's answer shows up in the console's transcript (it refreshes itself).
        await _send(patient, "my ankle hurts after a fall")
        await expect(nurse.locator("#transcript")).to_contain_text("ankle", timeout=15_000)

        await nurse.locator("#handback").click()
        await expect(staff_lines.last).to_contain_text("virtual assistant", timeout=10_000)
        await nurse.locator("#resolve").click()
        await expect(patient.locator(".message button", has_text="Good").last).to_be_visible(
            timeout=10_000
        )
        await expect(nurse.locator("[data-case-id]")).to_have_count(0, timeout=10_000)
        assert problems == []
        await browser.close()
