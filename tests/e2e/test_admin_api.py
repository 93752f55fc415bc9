"""The admin API (CONTRACT §7): sign-in, the settings in node.toml's shape, changes that
apply at once and outlive a restart, and the guards around them."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.e2e import Answer, assert_error, chat_body, get, post
from support.ecash import EcashFactory
from support.node import MODEL, RunningNode, run_node

from routstr_node.admin.sessions import FREE_FAILURES, HOLD_AT_MOST_S
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

PASSWORD = "correct horse battery staple"
ADMIN_TOML = f'[admin]\npassword = "{PASSWORD}"\n'
_MODEL = {"id": "m", "upstream": "fake", "context_length": 1000, "max_output_tokens": 10}
_ROUTED = {"id": "r", "context_length": 1000, "max_output_tokens": 10}
SECTIONS = {
    "node",
    "mints",
    "pricing",
    "upstreams",
    "models",
    "admin",
    "limits",
    "logs",
    "sessions",
    "database",
    "nostr",
    "payout",
}


@asynccontextmanager
async def admin_node(
    directory: Path, mint: LocalMint, upstream: RunningUpstream, extra: str = ADMIN_TOML
) -> AsyncIterator[RunningNode]:
    async with run_node(directory, [mint.url], upstream.url, extra_toml=extra) as node:
        yield node


class Admin:
    """A browser-like client: one cookie jar, requests to one node."""

    def __init__(self, node: RunningNode, session: aiohttp.ClientSession) -> None:
        self.node = node
        self.session = session

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Answer:
        data = None if body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        async with self.session.request(
            method, self.node.url + path, data=data, headers=all_headers
        ) as resp:
            raw = await resp.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            return Answer(resp.status, resp.headers.copy(), parsed, raw)  # type: ignore[arg-type]

    async def login(self, password: str = PASSWORD) -> Answer:
        return await self.call("POST", "/admin/login", {"password": password})

    async def settings(self) -> dict[str, Any]:
        answer = await self.call("GET", "/admin/api/settings")
        assert answer.status == 200, answer.raw
        return answer.body  # type: ignore[no-any-return]

    async def patch(self, patch: Any, headers: dict[str, str] | None = None) -> Answer:
        return await self.call("PATCH", "/admin/api/settings", patch, headers)


@asynccontextmanager
async def admin_client(node: RunningNode) -> AsyncIterator[Admin]:
    # unsafe: the node is reached by IP address, whose cookies aiohttp drops by default
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield Admin(node, session)


def _settings_row(node: RunningNode) -> tuple[str, str | None]:
    with closing(sqlite3.connect(node.data_dir / "wallet.sqlite3")) as db:
        row = db.execute("SELECT overrides, admin_password_hash FROM node_settings").fetchone()
    return row[0], row[1]


async def test_login_sets_a_strict_http_only_session_cookie(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    async with admin_node(tmp_path, mint, upstream) as node, admin_client(node) as admin:
        wrong = await admin.login("not the password")
        assert_error(wrong, 401, "invalid_password", "authentication_error")
        assert "Set-Cookie" not in wrong.headers

        answer = await admin.login()
        assert answer.status == 200
        cookie = answer.headers["Set-Cookie"]
        assert cookie.startswith("admin_session=")
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/"} <= attributes
        assert "secure" not in attributes  # plain http: a Secure cookie would never come back
        assert set(await admin.settings()) == SECTIONS

        for body, content_type in [
            (f"password={PASSWORD.replace(' ', '+')}", "application/x-www-form-urlencoded"),
            (json.dumps({"password": PASSWORD}), "application/x-www-form-urlencoded"),  # curl -d
        ]:
            sent = await post(
                f"{node.url}/admin/login", body.encode(), {"Content-Type": content_type}
            )
            assert sent.status == 200, sent.raw
        missing = await post(f"{node.url}/admin/login", {"passwort": PASSWORD})
        assert_error(missing, 400, "password_required")

        behind_tls = await post(
            f"{node.url}/admin/login", {"password": PASSWORD}, {"X-Forwarded-Proto": "https"}
        )
        assert "secure" in behind_tls.headers["Set-Cookie"].lower()


async def test_every_admin_api_route_needs_a_session(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    async with admin_node(tmp_path, mint, upstream) as node:
        for method, path in [
            ("GET", "/admin/api/settings"),
            ("PATCH", "/admin/api/settings"),
            ("PUT", "/admin/api/settings"),
            ("GET", "/admin/api/nothing-here"),
            ("DELETE", "/admin/api/"),
        ]:
            async with (
                aiohttp.ClientSession() as session,
                session.request(method, node.url + path, json={"limits": {}}) as resp,
            ):
                body = json.loads(await resp.read())
            assert resp.status == 401, (method, path)
            assert body["error"]["code"] == "admin_required"
            assert body["error"]["type"] == "authentication_error"
        forged = {"Cookie": "admin_session=made-up"}
        assert_error(await get(f"{node.url}/admin/api/settings", forged), 401, "admin_required")
        async with admin_client(node) as admin:
            await admin.login()
            assert_error(await admin.call("GET", "/admin/api/nothing-here"), 404, "not_found")


async def test_settings_show_node_toml_with_every_secret_redacted(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    nsec = "11" * 32
    extra = ADMIN_TOML + f'[nostr]\nnsec = "{nsec}"\n'
    async with admin_node(tmp_path, mint, upstream, extra) as node, admin_client(node) as admin:
        await admin.login()
        answer = await admin.call("GET", "/admin/api/settings")
        shown = answer.body
        for secret in (PASSWORD, "sk-upstream-secret", nsec):
            assert secret not in answer.raw.decode()
        assert shown["admin"]["password"] == "[REDACTED]"
        assert shown["nostr"]["nsec"] == "[REDACTED]"
        assert shown["upstreams"][0]["api_key"] == "[REDACTED]"
        assert shown["node"]["name"] == "Test Node"
        assert shown["mints"]["trusted"] == [mint.url]
        assert shown["limits"]["requests_per_minute"] == 60
        assert [m["id"] for m in shown["models"]] == [MODEL, "usd-model"]
        assert shown["pricing"]["btc_usd"] == 100000


async def test_a_change_applies_at_once_and_outlives_a_restart(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    async with admin_node(tmp_path, mint, upstream) as node, admin_client(node) as admin:
        await admin.login()
        answer = await admin.patch({"limits": {"requests_per_minute": 7}, "node": {"name": "N2"}})
        assert answer.status == 200, answer.raw
        assert answer.body["limits"]["requests_per_minute"] == 7
        assert answer.body["limits"]["requests_per_hour"] == 1000  # merged key by key
        assert answer.body["admin"]["password"] == "[REDACTED]"
        counted = await get(f"{node.url}/v1/models")
        assert counted.headers["X-RateLimit-Limit"] == "7"
        assert (await get(f"{node.url}/v1/info")).body["name"] == "N2"
        assert (await admin.patch({"limits": {"max_body_bytes": 1000}})).status == 200
        big = await post(f"{node.url}/v1/chat/completions", chat_body("x" * 2000))
        assert_error(big, 413, "body_too_large")

    # node.toml still says 60 and "Test Node": the change made in the panel wins
    async with admin_node(tmp_path, mint, upstream) as node, admin_client(node) as admin:
        counted = await get(f"{node.url}/v1/models")
        assert counted.headers["X-RateLimit-Limit"] == "7"
        await admin.login()
        shown = await admin.settings()
        assert shown["limits"]["requests_per_minute"] == 7
        assert shown["node"]["name"] == "N2"


async def test_invalid_settings_are_refused_naming_the_field(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    async with admin_node(tmp_path, mint, upstream) as node, admin_client(node) as admin:
        await admin.login()
        before = await admin.settings()
        cases: list[tuple[Any, str | None]] = [
            ({"limits": {"requests_per_minute": 0}}, "limits.requests_per_minute"),
            ({"limits": {"requests_per_minute": "many"}}, "limits.requests_per_minute"),
            ({"limits": {"no_such_key": 1}}, "limits.no_such_key"),
            ({"no_such_section": {}}, "no_such_section"),
            ({"models": [{**_MODEL, "upstream": "nowhere"}]}, "models[0].upstream"),
            ({"upstreams": [{"name": "new", "base_url": "ftp://x"}]}, "upstreams[0].base_url"),
            ({"mints": {"trusted": []}}, "mints.trusted"),
            ({"node": {"port": 1}}, "node.port"),
            ({"node": {"data_dir": "/elsewhere"}}, "node.data_dir"),
            ({"admin": {"password": None}}, "admin.password"),
            ({"nostr": {"nsec": "nsec1notakey"}}, "nostr.nsec"),
            ({"nostr": {"nsec": "00" * 32}}, "nostr.nsec"),  # 32 bytes, but no key
            (
                {"models": [{**_ROUTED, "providers": [{"upstream": "nowhere"}]}]},
                "models[0].providers[0].upstream",
            ),
            ({"models": [{**_ROUTED, "providers": []}]}, "models[0].providers"),
            (
                {"models": [{**_ROUTED, "upstream": "fake", "providers": [{"upstream": "fake"}]}]},
                "models[0].upstream",
            ),
            ({"models": [{**_MODEL, "category": "music"}]}, "models[0].category"),
            ({"sessions": {"enabled": "yes"}}, "sessions.enabled"),
            ({"logs": {"access_log": "/tmp/elsewhere.log"}}, "logs.access_log"),  # opened at start
            ({"logs": {"usage_records": False}}, "logs.usage_records"),
            ({"database": {"url": "postgresql://db/x"}}, "database.url"),
            ({"payout": {"lightning_address": "not an address"}}, "payout.lightning_address"),
            ([1, 2], None),
        ]
        for patch, param in cases:
            answer = await admin.patch(patch)
            assert_error(answer, 400, "invalid_setting", "invalid_request_error")
            assert answer.body["error"]["param"] == param, (patch, answer.body)
        assert_error(await _raw_patch(admin, b"{"), 400, "invalid_json")
        assert await admin.settings() == before


async def _raw_patch(admin: Admin, raw: bytes) -> Answer:
    async with admin.session.patch(
        admin.node.url + "/admin/api/settings",
        data=raw,
        headers={"Content-Type": "application/json"},
    ) as resp:
        body = await resp.read()
        return Answer(resp.status, resp.headers.copy(), json.loads(body), body)  # type: ignore[arg-type]


async def test_redacted_keeps_a_secret_and_a_new_one_is_used(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    async with admin_node(tmp_path, mint, upstream) as node, admin_client(node) as admin:
        await admin.login()
        token = await ecash.token(2000, mint_url=mint.url)
        created = await post(f"{node.url}/v1/wallet/create", {"cashu_token": token})
        key = {"Authorization": f"Bearer {created.body['api_key']}"}

        shown = await admin.settings()
        shown["upstreams"][0]["timeout_s"] = 7
        answer = await admin.patch({"upstreams": shown["upstreams"]})  # the key as shown
        assert answer.status == 200, answer.raw
        assert answer.body["upstreams"][0]["api_key"] == "[REDACTED]"
        paid = await post(f"{node.url}/v1/chat/completions", chat_body("hi"), key)
        assert paid.status == 200
        seen = upstream.behaviour.requests[-1].headers["Authorization"]
        assert seen == "Bearer sk-upstream-secret"
        # node.toml's key is not copied into the database: it is read from node.toml
        assert "sk-upstream-secret" not in _settings_row(node)[0]
        moved = [{**shown["upstreams"][0], "base_url": "http://127.0.0.1:9/v1"}]
        refused = await admin.patch({"upstreams": moved})  # a kept key never goes elsewhere
        assert_error(refused, 400, "invalid_setting")
        assert refused.body["error"]["param"] == "upstreams[0].api_key"

        shown["upstreams"][0]["api_key"] = "sk-rotated"
        assert (await admin.patch({"upstreams": shown["upstreams"]})).status == 200
        assert (await post(f"{node.url}/v1/chat/completions", chat_body("hi"), key)).status == 200
        assert upstream.behaviour.requests[-1].headers["Authorization"] == "Bearer sk-rotated"

        renamed = [{**shown["upstreams"][0], "name": "other", "api_key": "[REDACTED]"}]
        refused = await admin.patch({"upstreams": renamed})
        assert_error(refused, 400, "invalid_setting")
        assert refused.body["error"]["param"] == "upstreams[0].api_key"

    stored = _settings_row(node)[0]
    assert "sk-rotated" in stored  # an upstream key set in the panel is needed to use it
    assert PASSWORD not in stored


async def test_models_and_prices_change_without_a_restart(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    async with admin_node(tmp_path, mint, upstream) as node, admin_client(node) as admin:
        await admin.login()
        shown = await admin.settings()
        model = {**shown["models"][0], "id": "renamed-model", "request_sat": 3}
        answer = await admin.patch({"models": [model], "pricing": {"markup_percent": 2.5}})
        assert answer.status == 200, answer.raw
        assert answer.body["pricing"]["markup_percent"] == 2.5
        listed = (await get(f"{node.url}/v1/models")).body["data"]
        assert [m["id"] for m in listed] == ["renamed-model"]
        assert listed[0]["sats_pricing"]["request"] == 4  # 3.075 sat, shown whole, rounded up
        gone = await post(f"{node.url}/v1/chat/completions", chat_body("hi"))
        assert_error(gone, 404, "model_not_available")


async def test_a_model_with_several_providers_is_added_sold_and_kept(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    second = {"name": "second", "base_url": upstream.url, "api_key": "sk-second"}
    routed = {
        **_ROUTED,
        "display_name": "Routed",
        "providers": [
            {"upstream": "fake", "input_sat_per_1m": 9000, "zdr": False},
            {
                "upstream": "second",
                "upstream_model": "other",
                "input_sat_per_1m": 1000,
                "zdr": True,
            },
        ],
    }
    async with admin_node(tmp_path, mint, upstream) as node, admin_client(node) as admin:
        await admin.login()
        shown = await admin.settings()
        answer = await admin.patch(
            {"upstreams": [*shown["upstreams"], second], "models": [*shown["models"], routed]}
        )
        assert answer.status == 200, answer.raw
        assert answer.body["upstreams"][-1]["api_key"] == "[REDACTED]"
        kept = answer.body["models"][-1]
        assert kept["upstream"] is None and kept["display_name"] == "Routed"
        assert [p["upstream_model"] for p in kept["providers"]] == ["r", "other"]
        body = {"model": "r", "messages": [{"role": "user", "content": "hi"}]}
        key = {"Authorization": f"Bearer {await ecash.token(100, mint_url=mint.url)}"}
        paid = await post(
            f"{node.url}/v1/chat/completions", {**body, "provider": {"zdr": True}}, key
        )
        assert paid.status == 200, paid.raw
        assert paid.headers["X-Routstr-Provider"] == "second"
        assert upstream.requests[-1].json["model"] == "other"
        assert upstream.requests[-1].headers["Authorization"] == "Bearer sk-second"
        # the view round-trips: sent back as shown, nothing changes
        again = await admin.patch({"models": answer.body["models"]})
        assert again.status == 200 and again.body == answer.body
    async with admin_node(tmp_path, mint, upstream) as node, admin_client(node) as admin:
        await admin.login()
        assert (await admin.settings())["models"][-1] == kept
        listed = (await get(f"{node.url}/v1/models")).body["data"]
        providers = next(m for m in listed if m["id"] == "r")["providers"]
        assert [(p["name"], p["zdr"]) for p in providers] == [("fake", False), ("second", True)]


async def test_a_newly_trusted_mint_pays_at_once(
    tmp_path: Path,
    mint: LocalMint,
    fee_mint: LocalMint,
    upstream: RunningUpstream,
    ecash: EcashFactory,
) -> None:
    async with admin_node(tmp_path, mint, upstream) as node, admin_client(node) as admin:
        token = await ecash.token(500, mint_url=fee_mint.url)
        refused = await post(f"{node.url}/v1/wallet/create", {"cashu_token": token})
        assert_error(refused, 400, "cashu_mint_untrusted")
        await admin.login()
        answer = await admin.patch({"mints": {"trusted": [mint.url, fee_mint.url]}})
        assert answer.status == 200, answer.raw
        created = await post(f"{node.url}/v1/wallet/create", {"cashu_token": token})
        assert created.status == 201, created.raw
        assert (await get(f"{node.url}/v1/info")).body["mints"] == [mint.url, fee_mint.url]


async def test_logout_and_legacy_cookie(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    async with admin_node(tmp_path, mint, upstream) as node:
        # the password as typed (spaces and all, as a browser sends it), %-encoded, quoted
        for value in (PASSWORD, PASSWORD.replace(" ", "%20"), f'"{PASSWORD}"'):
            legacy = {"Cookie": f"theme=dark; admin_password={value}; lang=en"}
            answer = await get(f"{node.url}/admin/api/settings", legacy)
            assert answer.status == 200, (value, answer.raw)
        prefix = {"Cookie": f"admin_password={PASSWORD.split()[0]}"}
        assert_error(await get(f"{node.url}/admin/api/settings", prefix), 401, "admin_required")
        wrong = {"Cookie": "admin_password=guess"}
        assert_error(await get(f"{node.url}/admin/api/settings", wrong), 401, "admin_required")

        async with admin_client(node) as admin:
            await admin.login()
            assert (await admin.call("GET", "/admin/api/settings")).status == 200
            out = await admin.call("POST", "/admin/logout")
            assert out.status == 200
            assert_error(await admin.call("GET", "/admin/api/settings"), 401, "admin_required")


async def test_a_session_cookie_from_before_logout_stops_working(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    async with admin_node(tmp_path, mint, upstream) as node:
        answer = await post(f"{node.url}/admin/login", {"password": PASSWORD})
        cookie = {"Cookie": answer.headers["Set-Cookie"].split(";")[0]}
        assert (await get(f"{node.url}/admin/api/settings", cookie)).status == 200
        assert (await post(f"{node.url}/admin/logout", b"", cookie)).status == 200
        assert_error(await get(f"{node.url}/admin/api/settings", cookie), 401, "admin_required")


async def test_changes_from_another_origin_are_refused(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    async with admin_node(tmp_path, mint, upstream) as node, admin_client(node) as admin:
        await admin.login()
        evil = {"Origin": "https://evil.example"}
        refused = await admin.patch({"limits": {"requests_per_minute": 1}}, evil)
        assert_error(refused, 403, "forbidden_origin", "permission_error")
        cross = {"Sec-Fetch-Site": "cross-site"}
        assert_error(await admin.patch({"node": {"name": "x"}}, cross), 403, "forbidden_origin")
        login = await post(f"{node.url}/admin/login", {"password": PASSWORD}, evil)
        assert_error(login, 403, "forbidden_origin")
        assert (await admin.settings())["limits"]["requests_per_minute"] == 60

        own = {"Origin": node.url}
        assert (await admin.patch({"node": {"name": "same origin"}}, own)).status == 200
        # behind a reverse proxy that rewrites Host: its X-Forwarded-Host, or public_url
        proxied = {"Origin": "https://node.example", "X-Forwarded-Host": "node.example"}
        assert (await admin.patch({"node": {"name": "proxied"}}, proxied)).status == 200
        public = {"node": {"public_url": "https://public.example"}}
        assert (await admin.patch(public)).status == 200
        named = {"Origin": "https://public.example"}
        assert (await admin.patch({"node": {"name": "public"}}, named)).status == 200
        assert_error(await admin.patch({"node": {"name": "x"}}, evil), 403, "forbidden_origin")


async def test_repeated_wrong_passwords_are_slowed_down(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    async with admin_node(tmp_path, mint, upstream) as node:
        for _ in range(FREE_FAILURES):
            wrong = await post(f"{node.url}/admin/login", {"password": "guess"})
            assert_error(wrong, 401, "invalid_password")
        # six more guesses at once, at the login and in the legacy cookie: they are spaced
        # out as if sent one after another, so two are held and then answered (after
        # 1 s and 3 s), and the rest, which would wait longer, are refused at once
        cookie = {"Cookie": "admin_password=another-guess"}
        answers = await asyncio.gather(
            *(post(f"{node.url}/admin/login", {"password": "guess"}) for _ in range(4)),
            *(get(f"{node.url}/admin/api/settings", cookie) for _ in range(2)),
        )
        refused = [a for a in answers if a.status == 429]
        answered = [a for a in answers if a.status == 401]
        assert (len(answered), len(refused)) == (2, 4), [a.status for a in answers]
        for answer in refused:
            assert_error(answer, 429, "rate_limited")
            assert int(answer.headers["Retry-After"]) > HOLD_AT_MOST_S
        # the right password right after: held until its turn, then let in
        assert (await post(f"{node.url}/admin/login", {"password": PASSWORD})).status == 200
        assert (await post(f"{node.url}/admin/login", {"password": "guess"})).status == 401


async def test_a_password_set_in_the_panel_replaces_the_configured_one(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    new_password = "a new admin password"
    async with (
        admin_node(tmp_path, mint, upstream) as node,
        admin_client(node) as other,
        admin_client(node) as admin,
    ):
        await other.login()
        await admin.login()
        answer = await admin.patch({"admin": {"password": new_password}})
        assert answer.status == 200, answer.raw
        assert answer.body["admin"]["password"] == "[REDACTED]"
        assert (await admin.call("GET", "/admin/api/settings")).status == 200  # still in
        assert_error(await other.call("GET", "/admin/api/settings"), 401, "admin_required")
        assert (await post(f"{node.url}/admin/login", {"password": PASSWORD})).status == 401
        assert (await post(f"{node.url}/admin/login", {"password": new_password})).status == 200

    async with admin_node(tmp_path, mint, upstream) as node:  # node.toml still has the old one
        assert (await post(f"{node.url}/admin/login", {"password": PASSWORD})).status == 401
        assert (await post(f"{node.url}/admin/login", {"password": new_password})).status == 200
    row = _settings_row(node)
    assert row[1] is not None and new_password not in row[0] + row[1]
    assert row[1].startswith("scrypt$")


async def test_without_a_password_one_is_generated_and_shown_once(
    tmp_path: Path,
    mint: LocalMint,
    upstream: RunningUpstream,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ROUTSTR_ADMIN_PASSWORD", raising=False)
    async with admin_node(tmp_path, mint, upstream, extra=""):
        pass
    printed = [line for line in capsys.readouterr().out.splitlines() if "admin password" in line]
    assert len(printed) == 1
    password = printed[0].rsplit(" ", 1)[1]

    async with admin_node(tmp_path, mint, upstream, extra="") as node:
        assert (await post(f"{node.url}/admin/login", {"password": password})).status == 200
    assert "admin password" not in capsys.readouterr().out  # shown only the first time
    stored = (node.data_dir / "wallet.sqlite3").read_bytes()
    assert password.encode() not in stored


async def test_the_panel_page_is_served_with_a_strict_policy(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    async with admin_node(tmp_path, mint, upstream) as node:
        page = await get(f"{node.url}/admin/")
        assert page.status == 200
        assert page.headers["Content-Type"].startswith("text/html")
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy
        assert "unsafe-inline" not in policy and "script-src 'sha256-" in policy
        assert page.headers["X-Frame-Options"] == "DENY"
        assert b"<html" in page.raw.lower()


async def test_changes_that_no_longer_fit_are_left_out(
    tmp_path: Path,
    mint: LocalMint,
    upstream: RunningUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with admin_node(tmp_path, mint, upstream) as node, admin_client(node) as admin:
        await admin.login()
        assert (await admin.patch({"limits": {"requests_per_minute": 9}})).status == 200
    # as if node.toml (or the node's version) had changed under a stored change
    stale = json.dumps({"node": {"name": "kept"}, "limits": {"nope": 1}})
    with closing(sqlite3.connect(node.data_dir / "wallet.sqlite3")) as db, db:
        db.execute("UPDATE node_settings SET overrides = ?", (stale,))

    async with admin_node(tmp_path, mint, upstream) as node, admin_client(node) as admin:
        assert (await get(f"{node.url}/v1/models")).headers["X-RateLimit-Limit"] == "60"
        assert (await get(f"{node.url}/v1/info")).body["name"] == "kept"
        assert "no longer fits node.toml (unknown key 'limits.nope')" in caplog.text
        await admin.login()
        assert (await admin.patch({"node": {"description": "d"}})).status == 200
    assert json.loads(_settings_row(node)[0]) == {"node": {"name": "kept", "description": "d"}}


async def test_bodies_the_settings_could_not_hold_are_refused(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    async with admin_node(tmp_path, mint, upstream) as node, admin_client(node) as admin:
        await admin.login()
        before = await admin.settings()
        deep = b'{"node": {"name": ' + b"[" * 700 + b"]" * 700 + b"}}"
        for raw in [
            b'{"pricing": {"markup_percent": NaN}}',
            b'{"pricing": {"markup_percent": Infinity}}',
            b'{"node": {"name": "A\\ud800B"}}',  # a lone surrogate: not UTF-8 text
            deep,
        ]:
            assert_error(await _raw_patch(admin, raw), 400, "invalid_json")
        for raw, param in [
            (b'{"pricing": {"markup_percent": 1e5000}}', "pricing.markup_percent"),
            (b'{"pricing": {"btc_usd": 1e-10000000}}', "pricing.btc_usd"),
            (
                b'{"upstreams": [{"name": "u", "base_url": "http://x", "timeout_s": 1e400}]}',
                "upstreams[0].timeout_s",
            ),
            (b'{"node": {"name": "' + b"n" * 201 + b'"}}', "node.name"),
            (
                b'{"pricing": {"min_request_msat": 1180591620717411303424}}',
                "pricing.min_request_msat",
            ),
        ]:
            answer = await _raw_patch(admin, raw)
            assert_error(answer, 400, "invalid_setting")
            assert answer.body["error"]["param"] == param
        assert await admin.settings() == before

        odd = await post(f"{node.url}/admin/login", b'{"password": "\\ud800"}')
        assert_error(odd, 400, "invalid_json")

        # a body limit set too low for the API still leaves the panel working
        assert (await admin.patch({"limits": {"max_body_bytes": 1}})).status == 200
        assert (await admin.patch({"limits": {"max_body_bytes": 100_000}})).status == 200
        assert (await post(f"{node.url}/admin/login", {"password": PASSWORD})).status == 200


async def test_a_stored_key_variable_node_toml_does_not_pair_is_left_out(
    tmp_path: Path,
    mint: LocalMint,
    upstream: RunningUpstream,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stored changes meet the rules again at every start, against node.toml as it is
    then: a variable that node.toml no longer pairs with that address is not followed."""
    monkeypatch.setenv("ROUTSTR_TEST_HOST_SECRET", "aws-secret")
    async with admin_node(tmp_path, mint, upstream) as node:
        pass
    stored = {
        "upstreams": [
            {"name": "fake", "base_url": upstream.url, "api_key_env": "ROUTSTR_TEST_HOST_SECRET"}
        ]
    }
    with closing(sqlite3.connect(node.data_dir / "wallet.sqlite3")) as db, db:
        db.execute(
            "INSERT INTO node_settings (id, overrides, updated_at) VALUES (1, ?, 0)"
            " ON CONFLICT (id) DO UPDATE SET overrides = excluded.overrides",
            (json.dumps(stored),),
        )

    async with admin_node(tmp_path, mint, upstream) as node, admin_client(node) as admin:
        assert "upstreams[0].api_key_env" in caplog.text
        await admin.login()
        assert (await admin.settings())["upstreams"][0]["api_key_env"] is None
