"""Nodes on a real Nostr relay: announcing (NIP-91, kind 38421), discovering each other
in GET /v1/providers, refusing forged announcements, surviving relays that are down.

Everything that depends on the network is polled with a deadline; nothing sleeps a
fixed time and nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aionostr.event import Event as ReferenceEvent  # an independent check of signatures
from support.e2e import get
from support.node import RunningNode
from support.nostr_client import eventually, query, send
from support.nostr_node import admin_patch, node_pubkey, run_nostr_node
from support.relay import RunningRelay, free_port, run_relay

import routstr_node
from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream
from routstr_node.identity import public_key_hex
from routstr_node.nostr.event import Event, sign, valid_event

KIND = 38421
PROXIED = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]


async def _providers(node: RunningNode) -> dict[str, Any]:
    answer = await get(f"{node.url}/v1/providers")
    assert answer.status == 200, answer.raw
    body: dict[str, Any] = answer.body
    assert set(body) == {"providers", "nodes"}
    # the contract's list of this node's own upstreams, exactly as before
    [provider] = body["providers"]
    assert provider == {
        "name": "fake",
        "models": ["test-model", "usd-model"],
        "endpoints": provider["endpoints"],
        "status": "active",
    }
    assert sorted(provider["endpoints"]) == sorted(PROXIED)
    return body


async def _listed(node: RunningNode, pubkey: str, name: str | None = None) -> dict[str, Any]:
    """The node's listing of ``pubkey`` once it is there (with ``name``, if given)."""

    async def probe() -> dict[str, Any] | None:
        for entry in (await _providers(node))["nodes"]:
            if entry["pubkey"] == pubkey and name in (None, entry["name"]):
                return dict(entry)
        return None

    return await eventually(probe, f"{pubkey[:8]}… ({name}) in {node.url}/v1/providers")


async def _announced(relay: RunningRelay, pubkey: str, name: str | None = None) -> dict[str, Any]:
    """The newest kind 38421 event of ``pubkey`` the relay holds (with ``name``, if given)."""

    async def probe() -> dict[str, Any] | None:
        events = await query(relay.url, {"kinds": [KIND], "authors": [pubkey]})
        newest = max(events, key=lambda e: e["created_at"], default=None)
        if newest is None or name not in (None, json.loads(newest["content"])["name"]):
            return None
        return newest

    return await eventually(probe, f"an announcement by {pubkey[:8]}… ({name}) on the relay")


def _test_announcement(secret: bytes, name: str, created_at: int | None = None) -> Event:
    """An announcement signed by a test key, as another node would publish it."""
    content = json.dumps({"name": name, "about": "a test key"})
    tags = (("d", "test"), ("u", f"https://{name}.example"), ("mint", "https://mint.example"))
    when = int(time.time()) if created_at is None else created_at
    return sign(secret, created_at=when, kind=KIND, tags=tags, content=content)


async def test_an_announcing_node_publishes_a_signed_provider_event(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, relay: RunningRelay
) -> None:
    async with run_nostr_node(
        tmp_path / "a",
        [mint.url],
        upstream.url,
        relays=[relay.url],
        announce=True,
        public_url="https://a.example.com",
        name="Announcer A",
    ) as node:
        pubkey = await node_pubkey(node)
        raw = await _announced(relay, pubkey)

        event = valid_event(raw)
        assert event is not None, raw  # our own check of id and signature...
        reference = ReferenceEvent(**{k: raw[k] for k in ReferenceEvent.__slots__})
        assert reference.verify()  # ...and an independent one
        assert raw["kind"] == KIND
        assert raw["tags"] == [
            ["d", pubkey],
            ["u", "https://a.example.com"],
            ["mint", mint.url.rstrip("/")],
            ["version", routstr_node.__version__],
        ]
        assert json.loads(raw["content"]) == {
            "name": "Announcer A",
            "about": node.settings.node.description,
        }
        own = await _listed(node, pubkey)  # the node sees its own announcement too
        assert own["self"] is True


async def test_a_second_node_lists_the_first(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, relay: RunningRelay
) -> None:
    async with (
        run_nostr_node(
            tmp_path / "first",
            [mint.url],
            upstream.url,
            relays=[relay.url],
            announce=True,
            public_url="https://first.example.com",
            name="First Node",
        ) as first,
        run_nostr_node(
            tmp_path / "second", [mint.url], upstream.url, relays=[relay.url], announce=False
        ) as second,
    ):
        pubkey = await node_pubkey(first)
        listed = await _listed(second, pubkey)
        raw = await _announced(relay, pubkey)
        assert listed == {
            "pubkey": pubkey,
            "npub": (await get(f"{first.url}/v1/info")).body["npub"],
            "name": "First Node",
            "about": first.settings.node.description,
            "urls": ["https://first.example.com"],
            "mints": [mint.url.rstrip("/")],
            "version": routstr_node.__version__,
            "announced_at": raw["created_at"],
            "self": False,
        }
        nodes = (await _providers(second))["nodes"]
        dates = [n["announced_at"] for n in nodes]
        assert dates == sorted(dates, reverse=True)  # newest first


async def test_forged_announcements_are_not_listed(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, relay: RunningRelay
) -> None:
    genuine_key, forger_key, marker_key = (bytes([n]) * 32 for n in (0x51, 0x52, 0x53))
    genuine_pubkey = public_key_hex(genuine_key)
    async with run_nostr_node(
        tmp_path / "reader", [mint.url], upstream.url, relays=[relay.url], announce=False
    ) as node:
        genuine = _test_announcement(genuine_key, "genuine", int(time.time()) - 60)
        assert (await send(relay.url, genuine.to_json()))[2] is True
        await _listed(node, genuine_pubkey, "genuine")

        # a newer "update" of the genuine node carrying someone else's signature
        hijack = _test_announcement(genuine_key, "hijacked")
        other = _test_announcement(forger_key, "hijacked")
        bad_signature = {**hijack.to_json(), "sig": other.sig}
        # a signed event whose content was changed afterwards (the id no longer matches)
        signed = _test_announcement(forger_key, "forger")
        tampered = {**signed.to_json(), "content": json.dumps({"name": "tampered"})}
        for forged in (bad_signature, tampered):
            ok = await send(relay.url, forged)
            assert ok[2] is True, ok  # the test relay stores them: it checks no signature

        # sent after the forgeries on the same relay: once it is listed, they were read
        marker = _test_announcement(marker_key, "marker")
        assert (await send(relay.url, marker.to_json()))[2] is True
        await _listed(node, public_key_hex(marker_key), "marker")
        nodes = (await _providers(node))["nodes"]
        assert public_key_hex(forger_key) not in {n["pubkey"] for n in nodes}
        assert [n["name"] for n in nodes if n["pubkey"] == genuine_pubkey] == ["genuine"]


async def test_announce_off_publishes_nothing_until_switched_on(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, relay: RunningRelay
) -> None:
    marker_key = bytes([0x61]) * 32
    async with run_nostr_node(
        tmp_path / "quiet",
        [mint.url],
        upstream.url,
        relays=[relay.url],
        announce=False,
        public_url="https://quiet.example.com",
        name="Quiet Node",
    ) as node:
        pubkey = await node_pubkey(node)
        # the node is up and following the relay: it sees an announcement made now
        await send(relay.url, _test_announcement(marker_key, "quiet-marker").to_json())
        await _listed(node, public_key_hex(marker_key), "quiet-marker")
        assert await query(relay.url, {"kinds": [KIND], "authors": [pubkey]}) == []

        # switched on by the admin: announced; renamed: announced again, newer
        await admin_patch(node, {"nostr": {"announce": True}})
        first = await _announced(relay, pubkey, "Quiet Node")
        await admin_patch(node, {"node": {"name": "Renamed Node"}})
        renamed = await _announced(relay, pubkey, "Renamed Node")
        assert renamed["created_at"] > first["created_at"]
        assert (await _listed(node, pubkey, "Renamed Node"))["self"] is True


async def test_without_public_url_nothing_is_announced_until_it_is_set(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, relay: RunningRelay
) -> None:
    marker_key = bytes([0x62]) * 32
    async with run_nostr_node(
        tmp_path / "no-url", [mint.url], upstream.url, relays=[relay.url], announce=True
    ) as node:
        pubkey = await node_pubkey(node)
        await send(relay.url, _test_announcement(marker_key, "url-marker").to_json())
        await _listed(node, public_key_hex(marker_key), "url-marker")
        assert await query(relay.url, {"kinds": [KIND], "authors": [pubkey]}) == []

        await admin_patch(node, {"node": {"public_url": "https://late.example.com"}})
        raw = await _announced(relay, pubkey)
        assert ["u", "https://late.example.com"] in raw["tags"]


@contextlib.asynccontextmanager
async def _silent_server() -> AsyncIterator[int]:
    """A port that accepts connections and never answers (a hung relay)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_relays_that_are_down_do_not_hurt_serving(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    async with _silent_server() as silent_port:
        down = [f"ws://127.0.0.1:{free_port()}", f"ws://127.0.0.1:{silent_port}"]
        async with run_nostr_node(
            tmp_path / "lonely",
            [mint.url],
            upstream.url,
            relays=down,
            announce=True,
            public_url="https://lonely.example.com",
        ) as node:
            for _ in range(3):
                health = await get(f"{node.url}/health")
                assert (health.status, health.body) == (200, {"status": "ok"})
                assert (await get(f"{node.url}/v1/models")).status == 200
                assert (await get(f"{node.url}/v1/info")).status == 200
                assert (await _providers(node))["nodes"] == []


async def test_relays_that_are_down_do_not_hold_up_the_one_that_works(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, relay: RunningRelay
) -> None:
    async with _silent_server() as silent_port:
        relays = [f"ws://127.0.0.1:{free_port()}", f"ws://127.0.0.1:{silent_port}", relay.url]
        async with run_nostr_node(
            tmp_path / "mixed",
            [mint.url],
            upstream.url,
            relays=relays,
            announce=True,
            public_url="https://mixed.example.com",
        ) as node:
            pubkey = await node_pubkey(node)
            await _announced(relay, pubkey)
            assert (await _listed(node, pubkey))["self"] is True
            assert (await get(f"{node.url}/health")).status == 200


async def test_a_node_without_relays_lists_no_nodes(node: RunningNode) -> None:
    assert (await _providers(node))["nodes"] == []


async def test_discovery_follows_a_relay_that_restarts(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream
) -> None:
    port = free_port()
    before_key, after_key = bytes([0x71]) * 32, bytes([0x72]) * 32
    async with (
        run_relay(tmp_path / "relay-1", port=port) as first,
        run_nostr_node(
            tmp_path / "follower", [mint.url], upstream.url, relays=[first.url], announce=False
        ) as node,
    ):
        await send(first.url, _test_announcement(before_key, "before").to_json())
        await _listed(node, public_key_hex(before_key), "before")
        await first.stop()
        async with run_relay(tmp_path / "relay-2", port=port) as second:
            await send(second.url, _test_announcement(after_key, "after").to_json())
            await _listed(node, public_key_hex(after_key), "after")
            assert (await get(f"{node.url}/health")).status == 200
