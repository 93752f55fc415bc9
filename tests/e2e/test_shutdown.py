"""SIGTERM: requests in flight finish and settle; nothing stays reserved."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import sys
from pathlib import Path

import aiohttp
import pytest
from support.ecash import EcashFactory
from support.node import MODEL, node_toml

from routstr_node.audit_command import run_audit
from routstr_node.config import load_settings
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream
from routstr_node.server import serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_healthy(url: str, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            assert process.returncode is None, "the node exited during start-up"
            try:
                async with session.get(url + "/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the node did not become healthy")


async def test_sigterm_lets_requests_in_flight_finish(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, ecash: EcashFactory
) -> None:
    port = _free_port()
    config = tmp_path / "node.toml"
    config.write_text(node_toml(tmp_path / "data", port, [mint.url], upstream.url))
    node_cli = Path(sys.executable).parent / "routstr-node"
    process = await asyncio.create_subprocess_exec(
        str(node_cli),
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_healthy(url, process)
        token = await ecash.token(2000, mint_url=mint.url)
        headers = {"Authorization": f"Bearer {token}"}
        body = {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
        async with aiohttp.ClientSession() as session:
            # redeem the token first, so both requests below spend from one account
            async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
                assert r.status == 200
            upstream.behaviour.delay_s = 1.5
            upstream.behaviour.requests.clear()

            async def plain() -> int:
                async with session.post(
                    url + "/v1/chat/completions", json=body, headers=headers
                ) as resp:
                    await resp.read()
                    return resp.status

            async def streamed() -> bytes:
                async with session.post(
                    url + "/v1/chat/completions", json={**body, "stream": True}, headers=headers
                ) as resp:
                    assert resp.status == 200
                    return await resp.read()

            tasks = [asyncio.create_task(plain()), asyncio.create_task(streamed())]
            for _ in range(200):
                if len(upstream.behaviour.requests) >= 2:
                    break
                await asyncio.sleep(0.02)
            assert len(upstream.behaviour.requests) == 2
            process.send_signal(signal.SIGTERM)
            status, stream_body = await asyncio.gather(*tasks)
        assert status == 200
        assert b'"cost"' in stream_body and stream_body.endswith(b"data: [DONE]\n\n")
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    with sqlite3.connect(tmp_path / "data" / "wallet.sqlite3") as db:
        reserved = db.execute("SELECT SUM(reserved_msat) FROM accounts").fetchone()[0]
        open_reservations = db.execute(
            "SELECT COUNT(*) FROM reservations WHERE state = 'open'"
        ).fetchone()[0]
    assert reserved == 0 and open_reservations == 0
    report = await run_audit(load_settings(config))
    assert report["balanced"], report


async def test_a_port_in_use_is_a_one_line_error_and_the_wallet_is_left_closed(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        config = tmp_path / "node.toml"
        config.write_text(node_toml(tmp_path / "data", port, [mint.url], upstream.url))
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "routstr-node"),
            "run",
            "--config",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    last = stderr.decode().strip().splitlines()[-1]
    assert last == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use", stderr
    assert "Traceback" not in stderr.decode()
    report = await run_audit(load_settings(config))  # the wallet it opened is intact
    assert report["balanced"], report


async def test_a_stream_still_running_after_the_grace_is_settled_before_the_wallet_closes(
    tmp_path: Path,
    mint: LocalMint,
    upstream: RunningUpstream,
    ecash: EcashFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past the grace aiohttp cancels the handler; its settlement (and the X-Cashu change
    made at the mint) still finishes, on a wallet that waits for it."""
    upstream.behaviour.chunk_delay_s = 60  # the first chunk, then nothing
    port = _free_port()
    config = tmp_path / "node.toml"
    config.write_text(node_toml(tmp_path / "data", port, [mint.url], upstream.url))
    ready, stop = asyncio.Event(), asyncio.Event()
    served = asyncio.create_task(serve(load_settings(config), ready=ready, stop=stop, grace_s=0.4))
    await asyncio.wait_for(ready.wait(), 30)
    token = await ecash.token(300, mint_url=mint.url)
    body = {
        "model": MODEL,
        "max_tokens": 20,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers={"X-Cashu": token}
        ) as resp,
    ):
        assert resp.status == 200
        assert await resp.content.readany()  # the stream is under way
        stop.set()
        await asyncio.wait_for(served, 60)
    assert "not issued now" not in caplog.text
    with sqlite3.connect(tmp_path / "data" / "wallet.sqlite3") as db:
        states = db.execute("SELECT state FROM reservations").fetchall()
        change = db.execute("SELECT token FROM outgoing_tokens WHERE purpose = 'change'").fetchall()
    assert states and all(state != "open" for (state,) in states)
    [(change_token,)] = change
    assert 0 < await ecash.redeem(change_token) <= 300
    report = await run_audit(load_settings(config))
    assert report["balanced"], report
