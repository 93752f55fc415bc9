"""The admin panel in a real browser (CONTRACT §7): headless Chromium drives the page
that a real node serves at /admin/, against the node's own admin API.

Every test gets a fresh node (its own data dir, the session's mint and fake upstream)
and a fresh browser context (no cookies); the browser itself starts once. What the page
did is checked through the page and, independently, through the API or a paid request.
No test sleeps: Playwright's `expect` waits for what the page shows, and the lock-out
countdown runs on Playwright's fake clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, Locator, Page, expect
from support.browser import EXPECT_TIMEOUT_MS, PageWatch, launch_chromium
from support.e2e import chat_body, post
from support.ecash import EcashFactory
from support.node import MODEL, RunningNode, run_node

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

PASSWORD = "correct horse battery staple"
UPSTREAM_KEY = "sk-upstream-secret"  # what tests/support/node.py configures
REQUESTS_PER_MINUTE = 600  # the page and the API calls must not hit the node's rate limit
REDACTED = "[REDACTED]"

expect.set_options(timeout=EXPECT_TIMEOUT_MS)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as running:
        yield running


@pytest.fixture
async def admin_node(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> AsyncIterator[RunningNode]:
    extra = f"""
[admin]
password = "{PASSWORD}"
[limits]
requests_per_minute = {REQUESTS_PER_MINUTE}
"""
    async with run_node(tmp_path / "node", [mint.url], upstream.url, extra_toml=extra) as node:
        yield node


@dataclass
class Panel:
    node: RunningNode
    context: BrowserContext
    page: Page
    watch: PageWatch

    @property
    def url(self) -> str:
        return self.node.url + "/admin/"

    def field(self, param: str) -> Locator:
        return self.page.locator(f'[data-param="{param}"]')

    async def open(self) -> None:
        await self.page.goto(self.url)

    async def log_in(self, password: str = PASSWORD) -> None:
        await self.open()
        await self.page.locator("#password").fill(password)
        await self.page.locator("#login-form").get_by_role("button", name="Log in").click()
        await expect(self.page.locator("#settings")).to_be_visible()

    async def save(self) -> dict[str, Any]:
        """Click Save, wait for the node's answer; the PATCH body the page sent."""
        async with self.page.expect_request(_is_patch) as request_info:
            await self.page.locator("#save").click()
        request = await request_info.value
        await request.response()
        body: dict[str, Any] = request.post_data_json
        return body

    async def session_cookie(self) -> str:
        cookies = {c["name"]: c for c in await self.context.cookies(self.node.url)}
        cookie = cookies["admin_session"]
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        return cookie["value"]

    async def api_settings(self, session: str | None = None) -> tuple[int, Any]:
        """GET /admin/api/settings outside the browser, with the browser's session."""
        cookie = session if session is not None else await self.session_cookie()
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                self.node.url + "/admin/api/settings",
                headers={"Cookie": f"admin_session={cookie}"},
            ) as resp,
        ):
            return resp.status, json.loads(await resp.read())


# every input of the settings has a label of its own and a unique id
_UNLABELLED = """() => {
    const problems = [];
    const ids = new Set();
    for (const el of document.querySelectorAll("#settings [data-param]")) {
        if (!["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName)) continue;
        if (ids.has(el.id)) problems.push("duplicate id " + el.id);
        ids.add(el.id);
        if (!el.labels || el.labels.length === 0) problems.push("no label: " + el.dataset.param);
    }
    return problems;
}"""


def _is_patch(request: Any) -> bool:
    return bool(request.method == "PATCH" and request.url.endswith("/admin/api/settings"))


@pytest.fixture
async def panel(browser: Browser, admin_node: RunningNode) -> AsyncIterator[Panel]:
    context = await browser.new_context()
    page = await context.new_page()
    watch = PageWatch(admin_node.url)
    watch.attach(page)
    yield Panel(admin_node, context, page, watch)
    await context.close()
    # every test: no CSP violation or script error, nothing fetched from elsewhere
    watch.assert_clean()


async def paid_chat(node: RunningNode, ecash: EcashFactory, mint: LocalMint) -> None:
    token = await ecash.token(500, mint_url=mint.url)
    answer = await post(
        node.url + "/v1/chat/completions",
        chat_body("hello there", max_tokens=5),
        headers={"X-Cashu": token},
    )
    assert answer.status == 200, answer.body


# ---------------------------------------------------------------- logging in


async def test_the_login_form_comes_first_on_a_locked_down_page(panel: Panel) -> None:
    response = await panel.page.goto(panel.url)
    assert response is not None and response.status == 200
    headers = response.headers
    assert headers["content-type"].startswith("text/html")
    csp = headers["content-security-policy"]
    for directive in ("default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp

    await expect(panel.page.locator("#login-form")).to_be_visible()
    await expect(panel.page.get_by_label("Admin password")).to_be_focused()
    await expect(panel.page.locator("#settings")).to_be_hidden()
    await expect(panel.page.locator("#logout")).to_be_hidden()
    await expect(panel.page.locator("[data-param]")).to_have_count(0)


async def test_a_wrong_password_shows_an_error_and_no_settings(panel: Panel) -> None:
    await panel.open()
    await panel.page.locator("#password").fill("not the password")
    async with panel.page.expect_response(lambda r: r.url.endswith("/admin/login")) as info:
        await panel.page.locator("#password").press("Enter")
    assert (await info.value).status == 401

    await expect(panel.page.locator("#login-error")).to_have_text("Wrong password.")
    await expect(panel.page.locator("#settings")).to_be_hidden()
    await expect(panel.page.locator("[data-param]")).to_have_count(0)
    assert not [c for c in await panel.context.cookies() if c["name"] == "admin_session"]


async def test_too_many_attempts_lock_the_form_for_retry_after(panel: Panel) -> None:
    clock = panel.page.clock
    await clock.install(time=1_700_000_000)
    await panel.open()
    await expect(panel.page.locator("#login-form")).to_be_visible()
    await clock.pause_at(1_700_000_100)  # from here on, timers run only when told

    submit = panel.page.locator("#login-submit")
    retry_after: str | None = None
    for _ in range(20):
        await panel.page.locator("#password").fill("guessing")
        async with panel.page.expect_response(lambda r: r.url.endswith("/admin/login")) as info:
            await submit.click()
        response = await info.value
        if response.status == 429:
            retry_after = response.headers["retry-after"]
            break
        assert response.status == 401
    assert retry_after is not None and retry_after.isdigit(), "no 429 after 20 wrong passwords"

    seconds = int(retry_after)
    error = panel.page.locator("#login-error")
    await expect(error).to_have_text(f"Too many attempts, try again in {seconds} s.")
    await expect(submit).to_be_disabled()
    await clock.run_for(seconds * 1000)
    await expect(error).to_have_text("You can try again now.")
    await expect(submit).to_be_enabled()


async def test_the_right_password_shows_every_section(panel: Panel, mint: LocalMint) -> None:
    await panel.log_in()
    page = panel.page
    await expect(page.locator("#login")).to_be_hidden()
    await expect(page.locator("#logout")).to_be_visible()
    for section in (
        *("Node", "Mints", "Pricing", "Upstreams", "Models", "Admin", "Limits"),
        *("Logs", "Sessions", "Database", "Nostr", "Payouts"),
    ):
        await expect(page.get_by_role("heading", name=section, exact=True)).to_be_visible()

    await expect(panel.field("node.name")).to_have_value("Test Node")
    for fixed in ("node.host", "node.port", "node.data_dir"):
        await expect(panel.field(fixed)).not_to_be_editable()
    await expect(panel.field("node.port")).to_have_value(str(panel.node.settings.node.port))
    await expect(panel.field("node.name")).to_be_editable()

    rpm = page.get_by_label("Requests per minute")  # labelled for assistive technology
    await expect(rpm).to_have_attribute("data-param", "limits.requests_per_minute")
    await expect(rpm).to_have_attribute("type", "number")
    await expect(rpm).to_have_value(str(REQUESTS_PER_MINUTE))
    await expect(panel.field("mints.trusted")).to_have_value(mint.url.rstrip("/"))
    await expect(panel.field("pricing.price_sources")).to_have_value("kraken\ncoinbase")
    await expect(panel.field("nostr.announce")).not_to_be_checked()
    await expect(panel.field("models[0].id")).to_have_value(MODEL)
    await expect(panel.field("models[1].input_usd_per_1m")).to_have_value("0.15")

    for secret in ("upstreams[0].api_key", "admin.password"):
        await expect(panel.field(secret)).to_have_attribute("type", "password")
        await expect(panel.field(secret)).to_have_value("")
        await expect(panel.field(secret)).to_have_attribute("placeholder", REDACTED)
    await expect(panel.field("nostr.nsec")).to_have_attribute("placeholder", "not set")
    assert UPSTREAM_KEY not in await page.content()
    assert await page.evaluate(_UNLABELLED) == []


# ---------------------------------------------------------------- saving


async def test_saving_a_limit_changes_it_at_once(panel: Panel) -> None:
    await panel.log_in()
    await panel.field("limits.requests_per_minute").fill("1234")
    await expect(panel.page.locator("#status")).to_have_text("Unsaved changes.")

    sent = await panel.save()
    assert sent == {"limits": {"requests_per_minute": 1234}}  # only what changed
    await expect(panel.page.locator("#status")).to_have_text("Saved")
    await expect(panel.field("limits.requests_per_minute")).to_have_value("1234")

    status, settings = await panel.api_settings()
    assert status == 200
    assert settings["limits"]["requests_per_minute"] == 1234
    # applied: the node's own rate limit headers announce the new limit
    async with aiohttp.ClientSession() as http, http.get(panel.node.url + "/v1/models") as resp:
        assert resp.headers["X-RateLimit-Limit"] == "1234"

    await panel.page.reload()
    await expect(panel.field("limits.requests_per_minute")).to_have_value("1234")


async def test_numbers_keep_their_json_type(panel: Panel) -> None:
    await panel.log_in()
    await panel.field("pricing.markup_percent").fill("2.5")
    await panel.field("pricing.min_request_msat").fill("7")
    await panel.field("pricing.btc_usd").fill("")  # empty: follow the live price sources

    sent = await panel.save()
    assert sent == {"pricing": {"markup_percent": 2.5, "min_request_msat": 7, "btc_usd": None}}
    assert isinstance(sent["pricing"]["min_request_msat"], int)
    await expect(panel.page.locator("#status")).to_have_text("Saved")
    _, settings = await panel.api_settings()
    assert settings["pricing"]["markup_percent"] == 2.5
    assert settings["pricing"]["min_request_msat"] == 7
    assert settings["pricing"]["btc_usd"] is None

    # a fraction in a whole-number field is stopped in the page: no float is ever sent
    patches: list[str] = []
    panel.page.on("request", lambda r: patches.append(r.url) if _is_patch(r) else None)
    await panel.field("limits.requests_per_hour").fill("2.5")
    await panel.page.locator("#save").click()
    await expect(panel.page.locator("#status")).to_have_text(
        "limits.requests_per_hour: must be a whole number"
    )
    await expect(panel.field("limits.requests_per_hour")).to_have_attribute("aria-invalid", "true")
    assert patches == []


async def test_an_invalid_value_is_refused_and_its_field_highlighted(panel: Panel) -> None:
    await panel.log_in()
    rpm = panel.field("limits.requests_per_minute")
    await rpm.fill("0")
    async with panel.page.expect_response(_is_patch_response) as info:
        await panel.page.locator("#save").click()
    response = await info.value
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_setting"
    assert error["param"] == "limits.requests_per_minute"

    status = panel.page.locator("#status")
    await expect(status).to_have_text(error["message"])
    await expect(status).to_have_class("error")
    await expect(rpm).to_have_class(re.compile(r"\binvalid\b"))
    await expect(rpm).to_have_attribute("aria-invalid", "true")
    await expect(rpm).to_be_focused()
    await expect(panel.field("limits.requests_per_hour")).not_to_have_class(re.compile("invalid"))
    _, settings = await panel.api_settings()
    assert settings["limits"]["requests_per_minute"] == REQUESTS_PER_MINUTE

    await rpm.fill("700")
    assert await panel.save() == {"limits": {"requests_per_minute": 700}}
    await expect(status).to_have_text("Saved")
    await expect(rpm).not_to_have_class(re.compile("invalid"))


async def test_an_error_inside_a_list_highlights_the_list(panel: Panel) -> None:
    await panel.log_in()
    sources = panel.field("pricing.price_sources")
    await sources.fill("kraken\nnot-an-exchange\n")
    async with panel.page.expect_response(_is_patch_response) as info:
        await panel.page.locator("#save").click()
    error = (await (await info.value).json())["error"]
    assert error["param"] == "pricing.price_sources[1]"
    await expect(sources).to_have_attribute("aria-invalid", "true")
    await expect(panel.page.locator("#status")).to_have_text(error["message"])

    await sources.fill("coinbase\n\n")
    assert await panel.save() == {"pricing": {"price_sources": ["coinbase"]}}
    await expect(panel.page.locator("#status")).to_have_text("Saved")
    await expect(sources).to_have_value("coinbase")


async def test_a_model_added_in_the_panel_is_sold(panel: Panel) -> None:
    await panel.log_in()
    await panel.page.get_by_role("button", name="Add model").click()
    new = "models[2]"
    await expect(panel.field(f"{new}.id")).to_be_focused()
    await panel.field(f"{new}.id").fill("panel-model")
    await expect(panel.field(f"{new}.upstream")).to_have_value("fake")
    assert await panel.page.evaluate(_UNLABELLED) == []
    await expect(panel.page.get_by_label("Model id")).to_have_count(3)
    await panel.field(f"{new}.input_sat_per_1m").fill("1000000")
    await panel.field(f"{new}.output_sat_per_1m").fill("2000000")
    await panel.field(f"{new}.context_length").fill("1000")
    await panel.field(f"{new}.max_output_tokens").fill("2000")  # more than the context

    async with panel.page.expect_response(_is_patch_response) as info:
        await panel.page.locator("#save").click()
    error = (await (await info.value).json())["error"]
    assert error["param"] == f"{new}.max_output_tokens"
    await expect(panel.field(f"{new}.max_output_tokens")).to_have_attribute("aria-invalid", "true")

    await panel.field(f"{new}.max_output_tokens").fill("100")
    sent = await panel.save()
    assert [m["id"] for m in sent["models"]] == [MODEL, "usd-model", "panel-model"]
    assert sent["models"][2]["context_length"] == 1000
    await expect(panel.page.locator("#status")).to_have_text("Saved")
    await expect(panel.field(f"{new}.id")).to_have_value("panel-model")

    async with (
        aiohttp.ClientSession() as http,
        http.get(panel.node.url + "/v1/models") as resp,
    ):
        listed = [m["id"] for m in (await resp.json())["data"]]
    assert "panel-model" in listed

    # removing it again renumbers nothing that stays and takes it off sale
    await panel.page.get_by_role("button", name="Remove model 3").click()
    await expect(panel.field(new + ".id")).to_have_count(0)
    assert await panel.page.evaluate(_UNLABELLED) == []
    sent = await panel.save()
    assert [m["id"] for m in sent["models"]] == [MODEL, "usd-model"]
    await expect(panel.page.locator("#status")).to_have_text("Saved")


async def test_a_model_moved_to_a_providers_list_is_sold_through_it(
    panel: Panel, ecash: EcashFactory, mint: LocalMint
) -> None:
    await panel.log_in()
    model = "models[0]"
    await expect(panel.field(f"{model}.providers")).to_have_value("null")
    await expect(panel.field(f"{model}.zdr")).not_to_be_checked()
    await expect(panel.field(f"{model}.max_audio_seconds")).to_have_value("1500")
    await expect(panel.field(f"{model}.image_sat_by_size")).to_have_value("null")
    for key in ("upstream", "upstream_model", "input_sat_per_1m", "output_sat_per_1m"):
        await panel.field(f"{model}.{key}").fill("")
    provider = {
        "upstream": "fake",
        "upstream_model": "fake-upstream-model",
        "input_sat_per_1m": 1000000,
        "output_sat_per_1m": 2000000,
        "zdr": True,
    }
    await panel.field(f"{model}.providers").fill(json.dumps([provider]))
    sent = await panel.save()
    assert sent["models"][0]["upstream"] is None
    assert sent["models"][0]["providers"] == [provider]
    await expect(panel.page.locator("#status")).to_have_text("Saved")
    _, settings = await panel.api_settings()
    assert settings["models"][0]["upstream"] is None
    assert settings["models"][0]["providers"][0]["zdr"] is True
    token = await ecash.token(500, mint_url=mint.url)
    body = json.loads(chat_body("hello", max_tokens=5)) | {"provider": {"zdr": True}}
    paid = await post(panel.node.url + "/v1/chat/completions", body, headers={"X-Cashu": token})
    assert paid.status == 200, paid.body
    assert paid.headers["X-Routstr-Provider"] == "fake"


async def test_an_upstream_key_is_kept_or_replaced(
    panel: Panel, upstream: RunningUpstream, ecash: EcashFactory, mint: LocalMint
) -> None:
    await panel.log_in()
    key = panel.field("upstreams[0].api_key")

    # another upstream setting changes; the key stays "[REDACTED]" and so stays as it is
    await panel.field("upstreams[0].timeout_s").fill("7")
    sent = await panel.save()
    assert sent["upstreams"][0]["api_key"] == REDACTED
    assert sent["upstreams"][0]["timeout_s"] == 7
    await expect(panel.page.locator("#status")).to_have_text("Saved")
    await paid_chat(panel.node, ecash, mint)
    assert upstream.requests[-1].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"

    # a new key typed in is sent once, then shown as "[REDACTED]" like the old one
    await key.fill("sk-typed-in-the-panel")
    sent = await panel.save()
    assert sent["upstreams"][0]["api_key"] == "sk-typed-in-the-panel"
    await expect(panel.page.locator("#status")).to_have_text("Saved")
    await expect(key).to_have_value("")
    await expect(key).to_have_attribute("placeholder", REDACTED)
    _, settings = await panel.api_settings()
    assert settings["upstreams"][0]["api_key"] == REDACTED
    await paid_chat(panel.node, ecash, mint)
    assert upstream.requests[-1].headers["Authorization"] == "Bearer sk-typed-in-the-panel"
    assert "sk-typed-in-the-panel" not in await panel.page.content()


async def test_a_new_admin_password_replaces_the_old_one(panel: Panel) -> None:
    await panel.log_in()
    await panel.field("admin.password").fill("a brand new admin password")
    assert await panel.save() == {"admin": {"password": "a brand new admin password"}}
    await expect(panel.page.locator("#status")).to_have_text("Saved")
    await expect(panel.field("admin.password")).to_have_value("")
    await panel.page.locator("#logout").click()
    await expect(panel.page.locator("#login-form")).to_be_visible()

    await panel.page.locator("#password").fill(PASSWORD)
    await panel.page.locator("#password").press("Enter")
    await expect(panel.page.locator("#login-error")).to_have_text("Wrong password.")
    await panel.log_in("a brand new admin password")


# ---------------------------------------------------------------- leaving


async def test_logout_returns_to_the_login_form_and_ends_the_session(panel: Panel) -> None:
    await panel.log_in()
    session = await panel.session_cookie()
    assert (await panel.api_settings(session))[0] == 200

    await panel.page.locator("#logout").click()
    await expect(panel.page.locator("#login-form")).to_be_visible()
    await expect(panel.page.locator("#settings")).to_be_hidden()
    await expect(panel.page.locator("[data-param]")).to_have_count(0)  # nothing left behind

    status, body = await panel.api_settings(session)  # the old cookie, replayed
    assert status == 401
    assert body["error"]["code"] == "admin_required"
    await panel.page.reload()
    await expect(panel.page.locator("#login-form")).to_be_visible()


async def test_an_ended_session_sends_the_operator_back_to_login(panel: Panel) -> None:
    await panel.log_in()
    session = await panel.session_cookie()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            panel.node.url + "/admin/logout", headers={"Cookie": f"admin_session={session}"}
        ) as resp,
    ):
        assert resp.status == 200

    await panel.field("limits.requests_per_day").fill("20000")
    await panel.page.locator("#save").click()
    await expect(panel.page.locator("#login-form")).to_be_visible()
    await expect(panel.page.locator("#login-error")).to_contain_text("session has ended")


# ---------------------------------------------------------------- the page's CSP


async def test_the_csp_blocks_what_the_page_does_not_need(panel: Panel) -> None:
    """The page itself runs clean under its CSP (checked after every test); here the
    check is shown to catch something: a script or image from elsewhere is refused."""
    await panel.log_in()
    refused = panel.page.expect_console_message(lambda m: "Content Security Policy" in m.text)
    async with refused as message_info:
        await panel.page.evaluate(
            """() => {
                const script = document.createElement("script");
                script.src = "http://127.0.0.1:9/evil.js";
                document.body.append(script);
            }"""
        )
    message = await message_info.value
    assert message.type == "error"
    assert "evil.js" in message.text
    assert panel.watch.console_errors  # the watch saw it too
    panel.watch.console_errors.clear()
    panel.watch.failed_requests.clear()
    panel.watch.request_urls[:] = [u for u in panel.watch.request_urls if "evil" not in u]


def _is_patch_response(response: Any) -> bool:
    return _is_patch(response.request)
