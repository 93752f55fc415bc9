"""Usage records and sessions on PostgreSQL (CONTRACT §11, §12): two node processes on
one database serve one node, so a session started through one continues through the
other, and either answers the whole history and the admin's totals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.accounts import bearer
from support.e2e import chat_body, get, post, until
from support.ecash import EcashFactory
from support.node import MODEL, run_node
from support.postgres import temporary_database

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream

PASSWORD = "postgres records admin password"
ADMIN = {"Cookie": f"admin_password={PASSWORD}"}


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


async def test_two_processes_share_records_and_sessions(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    async with temporary_database() as url:
        extra = (
            f'[admin]\npassword = "{PASSWORD}"\n[sessions]\nenabled = true\n'
            f'[database]\nurl = "{url}"\n'
        )
        async with (
            run_node(tmp_path / "a", [mint.url], upstream.url, extra_toml=extra) as a,
            run_node(tmp_path / "b", [mint.url], upstream.url, extra_toml=extra) as b,
        ):
            created = await post(
                f"{a.base_url}/wallet/create",
                {"cashu_token": await ecash.token(2000, mint_url=mint.url)},
            )
            assert created.status == 201, created.raw
            auth = bearer(created.body["api_key"])
            first = await post(
                f"{a.base_url}/chat/completions", chat_body("one", session_id="shared"), auth
            )
            assert first.status == 200, first.raw
            second = await post(
                f"{b.base_url}/chat/completions", chat_body("two", session_id="shared"), auth
            )
            assert second.status == 200, second.raw
            assert upstream.behaviour.requests[-1].json["messages"] == [
                _user("one"),
                {"role": "assistant", "content": "Echo: one"},
                _user("two"),
            ]
            ids = [first.headers["X-Request-Id"], second.headers["X-Request-Id"]]

            async def both_recorded() -> list[dict[str, Any]] | None:
                answer = await get(f"{a.base_url}/wallet/history", auth)
                data: list[dict[str, Any]] = answer.body["data"]
                return data if len(data) == 2 else None

            history = await until(both_recorded)
            assert [e["request_id"] for e in history] == ids[::-1]
            from_b = await get(f"{b.base_url}/wallet/history", auth)
            assert from_b.body["data"] == history
            usage = await get(f"{b.url}/admin/api/usage?group_by=model", ADMIN)
            [group] = usage.body["data"]
            assert group["key"] == MODEL and group["requests"] == 2
            assert group["earnings_msat"] == sum(
                int(r.headers["X-Routstr-Cost-Msats"]) for r in (first, second)
            )
            listed = await get(f"{b.base_url}/sessions", auth)
            assert [s["id"] for s in listed.body["data"]] == ["shared"]
            assert listed.body["data"][0]["messages"] == 4
