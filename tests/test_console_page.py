"""The staff console (/console) in real headless Chromium, beside a patient's chat page, against
the real platform and Rasa: a nurse signs in with her account, claims the case the patient
opened, answers, hands back to the bot and resolves, and the patient sees each step live. An
auditor reads the same console: dashboard charts, transcripts, the audit chain, and no way to act
on a case. Neither page breaks the Content-Security-Policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from core.settings import Settings
from tests.support import running_app
from tests.test_chat_page import CHROMIUM, CHROMIUM_ARGS
from webapp.app import STATIC_DIR
from webapp.auth import Passwords
from webapp.users import create_user

pytestmark = [pytest.mark.rasa, pytest.mark.browser]
ADMIN_TOKEN = "test-admin-token-console-page-0123"
PASSWORD = "correct horse battery staple"
# Cheap hashes keep the test quick; production uses the argon2id defaults.
FAST = Passwords(time_cost=1, memory_kib=8192)
FAST_SETTINGS = {"password_hash_time_cost": 1, "password_hash_memory_kib": 8192}


@pytest.fixture
def live_settings(make_live_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    if not (STATIC_DIR / "console.html").exists():
        pytest.fail("the console page is not built: run `make test`, which builds it")
    # A database of its own: the console lists every case, and this test's must be the only one.
    return make_live_settings(
        f"sqlite:///{tmp_path / 'console.db'}", admin_token=ADMIN_TOKEN, **FAST_SETTINGS
    )


async def _send(page: Page, text: str) -> None:
    await page.locator("#chat-input").fill(text)
    await page.keyboard.press("Enter")


def _watch(pages: list[Page]) -> list[str]:
    """Script errors and Content-Security-Policy violations on these pages."""
    problems: list[str] = []
    for page in pages:
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on(
            "console",
            lambda m: (
                problems.append(m.text)
                if m.type == "error" and "Content Security Policy" in m.text
                else None
            ),
        )
    return problems


async def _patient_asks_for_a_person(browser: Browser, url: str) -> Page:
    patient = await browser.new_page()
    await patient.goto(url)
    await expect(patient.locator("#connection-status")).to_contain_text("Connected")
    await _send(patient, "I want to talk to a real person")
    await patient.locator(".message button", has_text="Yes").last.click()
    await expect(patient.locator('.message[data-sender="bot"]').last).to_contain_text(
        "staff", timeout=15_000
    )
    return patient


async def _sign_in(page: Page, url: str, username: str) -> None:
    await page.goto(f"{url}/console")
    await page.locator("#username").fill(username)
    await page.locator("#password").fill(PASSWORD)
    await page.locator("#signin-form button[type=submit]").click()


async def test_a_nurse_works_a_case_from_the_console_while_the_patient_watches(
    live_settings: Settings,
) -> None:
    async with running_app(live_settings) as (url, _), async_playwright() as pw:
        create_user(
            live_settings.database_url, "dana", PASSWORD, "staff", "Dana Reyes", passwords=FAST
        )
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        nurse = await browser.new_page()
        patient = await _patient_asks_for_a_person(browser, url)
        problems = _watch([patient, nurse])

        await _sign_in(nurse, url, "dana")
        await expect(nurse.locator("#signed-in-as")).to_contain_text("Dana Reyes")
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


async def test_an_auditor_reads_the_dashboard_and_transcripts_but_cannot_act(
    live_settings: Settings,
) -> None:
    async with running_app(live_settings) as (url, _), async_playwright() as pw:
        create_user(
            live_settings.database_url, "lee", PASSWORD, "auditor", "Lee Park", passwords=FAST
        )
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        auditor = await browser.new_page()
        problems = _watch([auditor])
        await _patient_asks_for_a_person(browser, url)

        await auditor.goto(f"{url}/console")
        await auditor.locator("#username").fill("lee")
        await auditor.locator("#password").fill("not the password")
        await auditor.locator("#signin-form button[type=submit]").click()
        await expect(auditor.locator("#error")).to_contain_text("username or password")
        await _sign_in(auditor, url, "lee")

        # The case is there to read, with nothing to press.
        row = auditor.locator("[data-case-id]").first
        await expect(row).to_be_visible(timeout=10_000)
        await row.locator("button").click()
        await expect(auditor.locator("#transcript")).to_contain_text("real person")
        await expect(auditor.locator("#read-only")).to_be_visible()
        for action in ("#claim", "#handback", "#resolve", "#reply-text"):
            await expect(auditor.locator(action)).to_be_hidden()
        await expect(auditor.locator("#tab-kb")).to_be_hidden()

        # The dashboard counts the patient's messages, and Chart.js has drawn them.
        await auditor.locator("#tab-dashboard").click()
        async with httpx.AsyncClient(base_url=url) as client:
            figures = (
                await client.get(
                    "/admin/api/v1/dashboard",
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                )
            ).json()
        patient_messages = figures["messages_per_channel"]["web"]
        assert patient_messages >= 1 and sum(figures["messages_per_channel"].values()) == (
            patient_messages
        )
        messages = auditor.locator("#chart-messages")
        await expect(messages).to_have_attribute(
            "data-total", str(patient_messages), timeout=10_000
        )
        await expect(messages.locator("table")).to_contain_text("Web chat")
        for chart in ("#chart-messages", "#chart-escalations", "#chart-triage", "#chart-latency"):
            await expect(auditor.locator(f"{chart} canvas")).to_be_visible()
        await expect(auditor.locator("#chart-escalations table")).to_contain_text("Cases opened1")
        painted = await messages.locator("canvas").evaluate(
            """canvas => {
                const { width, height } = canvas;
                const pixels = canvas.getContext('2d').getImageData(0, 0, width, height).data;
                let inked = 0;
                for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) inked++;
                return { width, height, inked };
            }"""
        )
        assert painted["width"] > 0 and painted["height"] > 0
        assert painted["inked"] > 100, painted

        # A transcript from the conversation list.
        await auditor.locator("#tab-conversations").click()
        conversation = auditor.locator("[data-conversation-id]").first
        await expect(conversation).to_contain_text("Web chat")
        await conversation.click()
        await expect(auditor.locator("#conversation-transcript")).to_contain_text("real person")

        # The audit log holds that read, and its chain checks out.
        await auditor.locator("#tab-audit").click()
        await expect(auditor.locator("#audit-events")).to_contain_text("user:lee", timeout=10_000)
        await auditor.locator("#audit-verify").click()
        await expect(auditor.locator("#audit-verdict")).to_contain_text("intact")

        await auditor.locator("#sign-out").click()
        await expect(auditor.locator("#signin-form")).to_be_visible()
        await expect(auditor.locator("body")).not_to_contain_text("real person")
        assert problems == []
        await browser.close()
