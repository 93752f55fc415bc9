"""The admin panel's usage page in headless Chromium (CONTRACT §11): real charts of the
node's usage records (earnings per day, requests per model, errors per provider) and
the latest requests, drawn by the Chart.js the node serves itself, under a CSP that
allows nothing but the page's own origin. A screenshot goes to the test's directory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect
from support.accounts import funded_auth
from support.browser import EXPECT_TIMEOUT_MS, PageWatch, launch_chromium
from support.e2e import chat_body, get, post, until
from support.ecash import EcashFactory
from support.node import MODEL, USD_MODEL, RunningNode, run_node

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

PASSWORD = "usage page admin password"
ADMIN = {"Cookie": f"admin_password={PASSWORD}"}

expect.set_options(timeout=EXPECT_TIMEOUT_MS)

# what a chart holds, and how many of its pixels were painted
_CHART = """(id) => {
    const canvas = document.getElementById(id);
    const chart = Chart.getChart(canvas);
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) painted += 1;
    return {
        labels: chart.data.labels,
        data: chart.data.datasets.map((d) => d.data),
        painted,
        width: canvas.width,
    };
}"""


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as running:
        yield running


@pytest.fixture
async def usage_node(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> AsyncIterator[RunningNode]:
    extra = f'[admin]\npassword = "{PASSWORD}"\n[limits]\nrequests_per_minute = 600\n'
    async with run_node(tmp_path / "node", [mint.url], upstream.url, extra_toml=extra) as node:
        yield node


async def _usage(node: RunningNode, group_by: str) -> list[dict[str, Any]]:
    answer = await get(f"{node.url}/admin/api/usage?group_by={group_by}", ADMIN)
    assert answer.status == 200, answer.raw
    data: list[dict[str, Any]] = answer.body["data"]
    return data


async def _log_in(page: Page, node: RunningNode) -> None:
    await page.goto(node.url + "/admin/")
    await page.locator("#password").fill(PASSWORD)
    await page.locator("#login-form").get_by_role("button", name="Log in").click()
    await expect(page.locator("#settings")).to_be_visible()


async def test_the_usage_page_draws_the_records(
    browser: Browser,
    usage_node: RunningNode,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    mint: LocalMint,
    tmp_path: Path,
) -> None:
    node = usage_node
    auth = await funded_auth(node.url, ecash, mint.url, 3000)
    chat = f"{node.base_url}/chat/completions"
    for i in range(3):
        assert (await post(chat, chat_body(f"question {i}"), auth)).status == 200
    usd = chat_body("in dollars").replace(MODEL.encode(), USD_MODEL.encode())
    assert (await post(chat, usd, auth)).status == 200
    upstream.behaviour.fail_status = 500
    assert (await post(chat, chat_body("this fails"), auth)).status == 502
    upstream.behaviour.fail_status = None

    async def all_recorded() -> list[dict[str, Any]] | None:
        groups = await _usage(node, "model")
        return groups if sum(g["requests"] for g in groups) == 5 else None

    by_model = await until(all_recorded)
    by_day = await _usage(node, "day")
    by_provider = await _usage(node, "provider")

    context = await browser.new_context(viewport={"width": 1200, "height": 1400})
    page = await context.new_page()
    watch = PageWatch(node.url)
    watch.attach(page)
    try:
        await _log_in(page, node)
        async with page.expect_response(lambda r: r.url.endswith("/admin/usage")) as info:
            await page.get_by_role("link", name="Usage").click()
        csp = (await info.value).headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "unsafe" not in csp and "default-src 'none'" in csp

        await expect(page.locator("#usage")).to_be_visible()
        await expect(page.locator("body[data-loaded]")).to_have_count(1)
        await expect(page.locator("#total-requests")).to_have_text("5")
        await expect(page.locator("#total-errors")).to_have_text("1")

        models = await page.evaluate(_CHART, "chart-models")
        assert models["labels"] == [g["key"] for g in by_model] == [MODEL, USD_MODEL]
        assert models["data"] == [[g["requests"] for g in by_model]] == [[4, 1]]
        providers = await page.evaluate(_CHART, "chart-providers")
        assert providers["labels"] == ["fake"]
        assert providers["data"] == [[g["errors"] for g in by_provider], [5]] == [[1], [5]]
        earnings = await page.evaluate(_CHART, "chart-earnings")
        [today] = by_day
        assert earnings["labels"][-1] == today["key"]
        assert earnings["data"][0][-1] == today["earnings_msat"] / 1000
        assert sum(earnings["data"][0][:-1]) == 0 and len(earnings["labels"]) >= 30
        for chart in (models, providers, earnings):
            assert chart["width"] > 0 and chart["painted"] > 1000  # drawn, not blank

        rows = page.locator("#latest tbody tr")
        await expect(rows).to_have_count(5)
        await expect(rows.first).to_contain_text("502")
        await expect(page.locator("#latest tbody tr.error")).to_have_count(1)

        shot = tmp_path / "admin-usage-page.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")

        # the page's own files only: the charting library came from the node
        assert any(url.endswith("/admin/assets/chart.umd.min.js") for url in watch.request_urls)
    finally:
        await context.close()
    watch.assert_clean()


async def test_signed_out_the_usage_page_sends_to_the_login(
    browser: Browser, usage_node: RunningNode
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    watch = PageWatch(usage_node.url)
    watch.attach(page)
    try:
        await page.goto(usage_node.url + "/admin/usage")
        await expect(page.locator("#signed-out")).to_be_visible()
        await expect(page.locator("#usage")).to_be_hidden()
    finally:
        await context.close()
    watch.assert_clean()
    missing = await get(usage_node.url + "/admin/assets/panel.html")
    assert missing.status == 404
