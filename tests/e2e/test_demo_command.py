"""`routstr-node demo` as a user runs it: a subprocess that pays, serves, and stops cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
from openai import AsyncOpenAI

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


def _children() -> dict[int, list[int]]:
    """Parent pid → child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree = _children()
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _read_until_token(stream: asyncio.StreamReader, lines: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    while "ROUTSTR_TOKEN" not in found:
        raw = await stream.readline()
        if not raw:
            raise AssertionError("the demo ended before printing ROUTSTR_TOKEN:\n" + "".join(lines))
        line = raw.decode()
        lines.append(line)
        name, sep, value = line.strip().partition("=")
        if sep and name in ("ROUTSTR_BASE_URL", "ROUTSTR_TOKEN"):
            found[name] = value
        if line.strip().startswith("config "):
            found["config"] = line.split()[1]
        if line.strip().startswith("admin "):  # admin  <url>  (password <password>)
            found["admin"], found["admin_password"] = line.split()[1], line.split()[3].rstrip(")")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_demo_pays_serves_a_funded_token_and_stops_everything_on_sigint() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ROUTSTR_DEMO_DIR"}
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "routstr-node"),
        "demo",
        "--port",
        str(port),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        printed = await asyncio.wait_for(_read_until_token(process.stdout, lines), START_TIMEOUT_S)
        output = "".join(lines)
        assert "cost" in output and "change" in output, output
        for route in ("images.generate", "audio.speech", "audio.transcriptions", "video"):
            assert route in output, output  # each media route, paid through the SDK
        base_url, token = printed["ROUTSTR_BASE_URL"], printed["ROUTSTR_TOKEN"]
        assert base_url == f"http://127.0.0.1:{port}/v1"
        assert token.startswith("cashuB")
        # the two lines are the last it prints while it serves
        assert lines[-2].startswith("ROUTSTR_BASE_URL=") and lines[-1].startswith("ROUTSTR_TOKEN=")
        # what the node earned is what the requests cost, plus the msat below a sat that
        # whole-sat change could not carry, and the demo says so
        earned = re.search(r"earned ([\d,]+) msat", output)
        parts = re.search(r"the costs above, ([\d,]+) msat, plus ([\d,]+) msat", output)
        assert earned is not None, output
        if parts is not None:
            costs, rests = (int(p.replace(",", "")) for p in parts.groups())
            assert int(earned.group(1).replace(",", "")) == costs + rests

        async with AsyncOpenAI(base_url=base_url, api_key=token, max_retries=0) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "paid by the demo"}]
            )
        completion = raw.parse()
        assert completion.choices[0].message.content == "Echo: paid by the demo"
        assert int(raw.headers["X-Routstr-Cost-Msats"]) > 0

        # the admin panel it names opens with the password it prints
        async with aiohttp.ClientSession() as http:
            login = {"password": printed["admin_password"]}
            async with http.post(printed["admin"].removesuffix("/") + "/login", json=login) as resp:
                assert resp.status == 200, await resp.text()

        # the config it prints is the one it runs on: the operator's audit balances on it
        audit = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "routstr-node"),
            "audit",
            "--config",
            printed["config"],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(audit.communicate(), START_TIMEOUT_S)
        assert audit.returncode == 0, (out, err)
        assert json.loads(out)["balanced"] is True

        started = _descendants(process.pid)
        assert started, "the demo should be running a mint child process"
        process.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(process.stdout.read(), STOP_TIMEOUT_S)
        returncode = await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        assert rest.decode().startswith("Stop"), rest  # nothing came after the two lines
        lines.append(rest.decode())
        assert returncode == 0, "".join(lines)
        for _ in range(50):  # the demo reaps its children before it exits; allow 5 s
            if not any(_alive(pid) for pid in started):
                break
            await asyncio.sleep(0.1)
        assert not [pid for pid in started if _alive(pid)], "processes left behind"
    finally:
        if process.returncode is None:
            for pid in _descendants(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.kill()
            await process.wait()
