"""Several real ``routstr-node run`` processes on one PostgreSQL database (created and
dropped per test): one node, whichever process a client reaches."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from support.accounts import balance_of, funded_auth, listed_withdrawals
from support.e2e import chat_body, get, post, until
from support.ecash import EcashFactory
from support.mint_proxy import MintProxy
from support.node import _free_port as free_port
from support.node import node_toml
from support.node_process import NodeProcess
from support.postgres import temporary_database
from support.tcp_cut import tcp_cut

from routstr_node.audit_command import run_audit
from routstr_node.config import load_settings
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream
from routstr_node.identity import KEY_FILE, npub

SWAP = "POST /v1/swap"
PASSWORD = "correct horse battery staple"


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with temporary_database() as url:
        yield url


def _config(tmp_path: Path, name: str, mint_url: str, upstream: RunningUpstream, url: str) -> Path:
    port = free_port()
    config = tmp_path / f"{name}.toml"
    config.write_text(
        node_toml(
            tmp_path / f"data-{name}",
            port,
            [mint_url],
            upstream.url,
            f'[database]\nurl = "{url}"\n[limits]\nrequests_per_minute = 100000\n'
            "requests_per_hour = 1000000\nrequests_per_day = 10000000\n"
            f'[admin]\npassword = "{PASSWORD}"\n',
        )
    )
    return config


@pytest.fixture
async def two_nodes(
    tmp_path: Path, proxy: MintProxy, upstream: RunningUpstream, database: str
) -> AsyncIterator[tuple[NodeProcess, NodeProcess]]:
    """Two processes of one node: each with a data_dir of its own, the ledger shared; the
    mint reached through a proxy that can hold a call."""
    nodes = []
    for name in ("a", "b"):
        config = _config(tmp_path, name, proxy.url, upstream, database)
        nodes.append(NodeProcess(config, load_settings(config).node.port))
    try:
        for node in nodes:
            await node.start()
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            await node.kill()


async def _audit(node: NodeProcess) -> dict[str, Any]:
    report = await run_audit(load_settings(node.config))
    assert report["balanced"], report
    return report


async def test_an_account_made_on_one_process_is_spent_and_refunded_on_the_other(
    two_nodes: tuple[NodeProcess, NodeProcess], ecash: EcashFactory, proxy: MintProxy
) -> None:
    a, b = two_nodes
    auth = await funded_auth(a.url, ecash, proxy.url, 1000)
    assert (await balance_of(b.url, auth))["balance_msat"] == 1_000_000
    body = chat_body("hello", max_tokens=10)
    answers = await asyncio.gather(
        *(post(f"{node.url}/v1/chat/completions", body, auth) for node in (a, b, a, b))
    )
    assert all(answer.status == 200 for answer in answers), [a.raw for a in answers]
    spent = sum(int(answer.headers["X-Routstr-Cost-Msats"]) for answer in answers)
    assert (await balance_of(a.url, auth))["balance_msat"] == 1_000_000 - spent
    withdrawn = await post(f"{b.url}/v1/wallet/withdraw", {}, auth)  # everything left
    assert withdrawn.status == 200, withdrawn.raw
    assert await ecash.redeem(withdrawn.body["cashu_token"]) == (1_000_000 - spent) // 1000
    await _audit(a)


async def test_one_token_raced_across_processes_pays_once(
    two_nodes: tuple[NodeProcess, NodeProcess], ecash: EcashFactory, proxy: MintProxy
) -> None:
    a, b = two_nodes
    token = await ecash.token(200, mint_url=proxy.url)
    created = await asyncio.gather(
        *(
            post(f"{node.url}/v1/wallet/create", {"cashu_token": token})
            for node in (a, b, a, b, a, b)
        )
    )
    keys = {answer.body["api_key"] for answer in created if answer.status == 201}
    assert len(keys) == 1, [answer.raw for answer in created]  # asked again: the same keys
    assert all(answer.status in (201, 400, 409, 503) for answer in created)
    report = await _audit(a)
    assert report["balances_msat"] == 200_000


async def test_concurrent_spending_from_both_processes_never_overspends(
    two_nodes: tuple[NodeProcess, NodeProcess], ecash: EcashFactory, proxy: MintProxy
) -> None:
    a, b = two_nodes
    auth = await funded_auth(a.url, ecash, proxy.url, 300)  # a few requests' worth
    body = chat_body("hello " * 20, max_tokens=40)
    answers = await asyncio.gather(
        *(post(f"{node.url}/v1/chat/completions", body, auth) for node in (a, b) * 10)
    )
    paid = [answer for answer in answers if answer.status == 200]
    assert all(answer.status in (200, 402) for answer in answers)
    spent = sum(int(answer.headers["X-Routstr-Cost-Msats"]) for answer in paid)
    left = (await balance_of(b.url, auth))["balance_msat"]
    assert paid and len(paid) < len(answers)
    assert left >= 0 and left == 300_000 - spent
    await _audit(b)


async def test_a_dead_process_s_swap_is_finished_by_another(
    two_nodes: tuple[NodeProcess, NodeProcess], ecash: EcashFactory, proxy: MintProxy
) -> None:
    """SIGKILL one process while the mint holds its withdrawal's swap: the other finishes
    it once the dead one's lease ran out (no restart), and the audit balances."""
    a, b = two_nodes
    auth = await funded_auth(a.url, ecash, proxy.url, 1000)
    proxy.hold(SWAP)
    sent = asyncio.ensure_future(post(f"{a.url}/v1/wallet/withdraw", {"amount": 300}, auth))
    await proxy.came(SWAP)
    await a.kill()
    with contextlib.suppress(aiohttp.ClientError):
        await sent  # the client's connection died with the process
    proxy.release()
    await proxy.reached(SWAP)

    [withdrawal] = await until(lambda: listed_withdrawals(b.url, auth), timeout_s=180)
    assert withdrawal["amount"] == 300
    assert await ecash.redeem(withdrawal["cashu_token"]) == 300
    after = await balance_of(b.url, auth)
    assert (after["balance_msat"], after["reserved_msat"]) == (700_000, 0)
    await _audit(b)


async def test_an_admin_change_reaches_the_other_process_within_5_s(
    two_nodes: tuple[NodeProcess, NodeProcess],
) -> None:
    a, b = two_nodes
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as on_a,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as on_b,
    ):
        for http, node in ((on_a, a), (on_b, b)):
            async with http.post(f"{node.url}/admin/login", json={"password": PASSWORD}) as r:
                assert r.status == 200
        patch = {"pricing": {"markup_percent": 25}}
        async with on_a.patch(f"{a.url}/admin/api/settings", json=patch) as changed:
            assert changed.status == 200, await changed.text()

        async def seen_on_b() -> bool | None:
            async with on_b.get(f"{b.url}/admin/api/settings") as resp:
                settings = await resp.json()
            return True if settings["pricing"]["markup_percent"] == 25 else None

        await until(seen_on_b, timeout_s=5)


async def test_workers_serve_one_node_on_one_port(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, database: str, ecash: EcashFactory
) -> None:
    config = _config(tmp_path, "w", mint.url, upstream, database)
    port = load_settings(config).node.port
    supervisor = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from routstr_node.cli import main; main()",
        "run", "--config", str(config), "--workers", "2",
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        await until(lambda: _healthy(url), timeout_s=60)
        auth = await funded_auth(url, ecash, mint.url, 1000)
        body = chat_body("hi", max_tokens=5)
        answers = await asyncio.gather(
            *(post(f"{url}/v1/chat/completions", body, auth) for _ in range(8))
        )
        assert all(answer.status == 200 for answer in answers), [a.raw for a in answers]
    finally:
        supervisor.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            assert await supervisor.wait() == 0


async def test_workers_need_postgresql(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    config = tmp_path / "node.toml"
    config.write_text(node_toml(tmp_path / "data", free_port(), [mint.url], upstream.url))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from routstr_node.cli import main; main()",
        "run", "--config", str(config), "--workers", "2",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await child.communicate()
    assert child.returncode != 0
    assert "--workers needs [database] url = postgresql://" in err.decode()


async def _healthy(url: str) -> bool | None:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/health") as resp:
            return True if resp.status == 200 else None
    except aiohttp.ClientError:
        return None


async def test_every_process_answers_under_the_node_s_one_npub(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, database: str
) -> None:
    """No nsec configured: the key the first process generated before (its data_dir's
    nostr.key) moves into the database; a process with a data_dir of its own - even one
    holding another key - answers under the same npub, and so does a restart of it."""
    first, other = os.urandom(32), os.urandom(32)
    nodes = []
    for name, key in (("a", first), ("b", other)):
        config = _config(tmp_path, name, mint.url, upstream, database)
        data_dir = load_settings(config).node.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / KEY_FILE).write_text(key.hex() + "\n")
        nodes.append(NodeProcess(config, load_settings(config).node.port))
    a, b = nodes
    try:
        await a.start()
        await b.start()
        seen = [await _npub(node.url) for node in (a, b)]
        await b.kill()
        (load_settings(b.config).node.data_dir / KEY_FILE).unlink()
        await b.start()
        seen.append(await _npub(b.url))
    finally:
        for node in nodes:
            await node.kill()
    assert seen == [npub(first)] * 3


async def _npub(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/v1/info") as resp:
        assert resp.status == 200
        return str((await resp.json())["npub"])


async def test_a_process_that_lost_the_database_answers_503_then_serves_and_lives_again(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, database: str, ecash: EcashFactory
) -> None:
    """The database cut off while the node serves: a paid request is answered 503
    database_unavailable and costs nothing; once it is back the node serves paid requests
    again and holds its life lock again (else the others would take it for dead)."""
    async with tcp_cut(5432) as cut:
        through = database.replace("127.0.0.1:5432", f"127.0.0.1:{cut.port}")
        config = _config(tmp_path, "cut", mint.url, upstream, through)
        node = NodeProcess(config, load_settings(config).node.port)
        try:
            await node.start()
            auth = await funded_auth(node.url, ecash, mint.url, 1000)
            body = chat_body("hello", max_tokens=10)
            assert await _life_locks(database) == 1
            cut.cut()
            refused = await post(f"{node.url}/v1/chat/completions", body, auth)
            assert refused.status == 503, refused.raw
            assert refused.body["error"]["code"] == "database_unavailable"
            await until(lambda: _life_held(database, 0), timeout_s=30)  # the others see it gone
            cut.restore()
            before = await until(lambda: _balance_or_none(node.url, auth), timeout_s=30)
            assert (before["balance_msat"], before["reserved_msat"]) == (1_000_000, 0)
            paid = await post(f"{node.url}/v1/chat/completions", body, auth)
            assert paid.status == 200, paid.raw
            spent = int(paid.headers["X-Routstr-Cost-Msats"])
            assert (await balance_of(node.url, auth))["balance_msat"] == 1_000_000 - spent
            await until(lambda: _life_held(database, 1), timeout_s=30)
            await _audit(node)
        finally:
            await node.kill()


async def _life_locks(database: str) -> int:
    """How many processes hold a life lock on the database (each its own)."""
    conn = await asyncpg.connect(database)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid = $1 AND granted AND database = (SELECT oid FROM pg_database"
                " WHERE datname = current_database())",
                0x52535452,
            )
        )
    finally:
        await conn.close()


async def _life_held(database: str, count: int) -> bool | None:
    return True if await _life_locks(database) == count else None


async def _balance_or_none(url: str, auth: dict[str, str]) -> dict[str, Any] | None:
    answer = await get(f"{url}/v1/wallet/balance", auth)
    return answer.body if answer.status == 200 else None  # type: ignore[no-any-return]
