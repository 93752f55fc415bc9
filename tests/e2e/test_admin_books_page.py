"""The admin panel's books page in headless Chromium (CONTRACT §13): the books per
mint, the audit run from its button, earnings withdrawn as a token shown with its QR
code (drawn by the node, no CDN, under the page's strict CSP) and to an invoice, and
the payouts made. What the page did is checked again through the API and a wallet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect
from support.browser import EXPECT_TIMEOUT_MS, PageWatch, launch_chromium
from support.e2e import chat_body, get, post
from support.ecash import EcashFactory
from support.invoices import fake_invoice
from support.node import RunningNode, run_node

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

PASSWORD = "books page admin password"
ADMIN = {"Cookie": f"admin_password={PASSWORD}"}

expect.set_options(timeout=EXPECT_TIMEOUT_MS)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as running:
        yield running


@pytest.fixture
async def books_node(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> AsyncIterator[RunningNode]:
    extra = f'[admin]\npassword = "{PASSWORD}"\n[limits]\nrequests_per_minute = 600\n'
    async with run_node(tmp_path / "node", [mint.url], upstream.url, extra_toml=extra) as node:
        yield node


async def _earn(node: RunningNode, ecash: EcashFactory, mint: LocalMint) -> None:
    created = await post(
        f"{node.url}/v1/wallet/create", {"cashu_token": await ecash.token(2000, mint_url=mint.url)}
    )
    assert created.status == 201, created.raw
    auth = {"Authorization": f"Bearer {created.body['api_key']}"}
    for i in range(4):
        answer = await post(
            f"{node.url}/v1/chat/completions", chat_body(f"hello {i}", max_tokens=30), auth
        )
        assert answer.status == 200, answer.raw


async def test_the_books_page_shows_the_books_and_withdraws_earnings(
    browser: Browser,
    books_node: RunningNode,
    ecash: EcashFactory,
    mint: LocalMint,
    tmp_path: Path,
) -> None:
    node = books_node
    await _earn(node, ecash, mint)
    before = (await get(f"{node.url}/admin/api/balances", ADMIN)).body
    earnings_sat = before["totals"]["earnings_msat"] // 1000
    assert earnings_sat > 10

    context = await browser.new_context()
    page = await context.new_page()
    watch = PageWatch(node.url)
    watch.attach(page)
    await page.goto(node.url + "/admin/books")
    await expect(page.locator("#signin")).to_be_visible()  # no session yet
    # the page's other request (refused too) ends before the next page: not cut short
    await page.wait_for_load_state("networkidle")
    await page.goto(node.url + "/admin/")
    await page.locator("#password").fill(PASSWORD)
    await page.locator("#login-form").get_by_role("button", name="Log in").click()
    await expect(page.locator("#settings")).to_be_visible()
    response = await page.goto(node.url + "/admin/books")
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp

    await expect(page.locator("#books")).to_be_visible()
    await expect(page.locator("#mints tr")).to_have_count(1)
    await expect(page.locator("#mints tr").first).to_contain_text(mint.url)
    total = before["totals"]["earnings_msat"] / 1000
    await expect(page.locator("#totals")).to_contain_text(f"{total:,.3f}".rstrip("0").rstrip("."))

    await page.locator("#run-audit").click()
    await expect(page.locator("#audit-result")).to_contain_text("Balanced")

    await page.locator("#amount").fill("3")
    await page.locator("#withdraw-token").click()
    await expect(page.locator("#token-box")).to_be_visible()
    token = await page.locator("#token-out").input_value()
    assert token.startswith("cashu")
    qr = page.locator("#token-qr")
    src = await qr.get_attribute("src")
    assert src is not None and src.startswith("data:image/svg+xml")
    await expect(qr).to_have_js_property("complete", True)
    assert await qr.evaluate("(img) => img.naturalWidth") > 0  # an image the browser drew
    assert await ecash.redeem(token) == 3

    await page.locator("#invoice").fill(fake_invoice(2))
    await page.locator("#pay-invoice").click()
    await expect(page.locator("#withdraw-result")).to_contain_text("Paid 2 sat")
    await expect(page.locator("#payout-rows tr")).to_have_count(2)
    await page.screenshot(path=str(tmp_path / "books.png"), full_page=True)

    after = (await get(f"{node.url}/admin/api/balances", ADMIN)).body
    payouts = (await get(f"{node.url}/admin/api/payouts", ADMIN)).body["payouts"]
    spent = sum(p["amount"] + p["fee"] for p in payouts)
    assert {p["state"] for p in payouts} == {"paid"}
    assert after["totals"]["earnings_msat"] == before["totals"]["earnings_msat"] - spent * 1000
    assert after["totals"]["liabilities_msat"] == before["totals"]["liabilities_msat"]
    await context.close()
    watch.assert_clean()
