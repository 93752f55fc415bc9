"""Withdrawing the node's announcement (NIP-09 deletion request) where it should no longer
be: announce off (admin API or node.toml and a restart), public_url emptied, a relay taken
off the list, a relay that is down at the time; other nodes drop it; announcing again
lists it again.
And the file that remembers where it is (data_dir/nostr-announced.json).

Real relays and nodes; everything that depends on the network is polled with a deadline.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from support.e2e import get
from support.node import RunningNode
from support.nostr_client import eventually, query, send
from support.nostr_node import admin_patch, node_pubkey, run_nostr_node
from support.relay import RunningRelay, free_port, run_relay

from routstr_node.demo.mint import LocalMint
from routstr_node.demo.upstream import RunningUpstream
from routstr_node.identity import public_key_hex
from routstr_node.nostr.announced import FILE, AnnouncedFile
from routstr_node.nostr.announcement import DELETION, KIND, address
from routstr_node.nostr.event import sign, valid_event

DEADLINE_S = 60.0  # a withdrawal retried after a relay came back waits its backoff
T = TypeVar("T")


def _async(check: Callable[[], T | None]) -> Callable[[], Awaitable[T | None]]:
    """A plain check as a probe for ``eventually``."""

    async def probe() -> T | None:
        return check()

    return probe


async def _held(relay_url: str, pubkey: str, kind: int = KIND) -> list[dict[str, Any]]:
    """``pubkey``'s events of ``kind`` on the relay, each once (one stored while the query
    runs can come both as stored and as live)."""
    events = await query(relay_url, {"kinds": [kind], "authors": [pubkey]})
    return list({event["id"]: event for event in events}.values())


async def _on_relay(relay_url: str, pubkey: str, present: bool = True) -> list[dict[str, Any]]:
    """What the relay holds of ``pubkey``'s announcements, once it is there (or gone)."""

    async def probe() -> list[dict[str, Any]] | None:
        held = await _held(relay_url, pubkey)
        return held if bool(held) == present else None

    state = "on" if present else "gone from"
    return await eventually(probe, f"{pubkey[:8]}… {state} {relay_url}", DEADLINE_S)


async def _in_nodes(node: RunningNode, pubkey: str, present: bool = True) -> None:
    """Wait until ``node``'s GET /v1/providers lists ``pubkey`` (or no longer does)."""

    async def probe() -> bool | None:
        nodes = (await get(f"{node.url}/v1/providers")).body["nodes"]
        return True if (pubkey in {n["pubkey"] for n in nodes}) == present else None

    await eventually(probe, f"{pubkey[:8]}… listed={present} by {node.url}", DEADLINE_S)


def _recorded(node: RunningNode) -> list[str]:
    """The relays the node's file says hold its announcement."""
    return sorted(AnnouncedFile(node.data_dir).relays)


async def test_announce_off_withdraws_and_on_announces_again(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, relay: RunningRelay
) -> None:
    async with (
        run_nostr_node(
            tmp_path / "a",
            [mint.url],
            upstream.url,
            relays=[relay.url],
            announce=True,
            public_url="https://a.example.com",
        ) as node,
        run_nostr_node(
            tmp_path / "follower", [mint.url], upstream.url, relays=[relay.url], announce=False
        ) as follower,
    ):
        pubkey = await node_pubkey(node)
        [announced] = await _on_relay(relay.url, pubkey)
        await _in_nodes(follower, pubkey)

        await admin_patch(node, {"nostr": {"announce": False}})
        await _on_relay(relay.url, pubkey, present=False)
        await _in_nodes(follower, pubkey, present=False)
        await _in_nodes(node, pubkey, present=False)  # its own listing goes too
        [raw] = await _held(relay.url, pubkey, DELETION)
        deletion = valid_event(raw)
        assert deletion is not None and deletion.created_at >= announced["created_at"]
        assert raw["tags"] == [
            ["e", announced["id"]],
            ["a", address(pubkey, pubkey)],
            ["k", str(KIND)],
        ]
        assert _recorded(node) == []

        await admin_patch(node, {"nostr": {"announce": True}})
        [again] = await _on_relay(relay.url, pubkey)
        assert again["created_at"] > deletion.created_at
        await _in_nodes(follower, pubkey)
        assert _recorded(node) == [relay.url]

        await admin_patch(node, {"node": {"public_url": ""}})  # nowhere to reach it: withdrawn
        await _on_relay(relay.url, pubkey, present=False)
        await _in_nodes(follower, pubkey, present=False)


async def test_announce_off_in_node_toml_withdraws_at_start(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, relay: RunningRelay
) -> None:
    common: dict[str, Any] = {"relays": [relay.url], "public_url": "https://b.example.com"}
    args = (tmp_path / "b", [mint.url], upstream.url)
    async with run_nostr_node(*args, announce=True, **common) as node:
        pubkey = await node_pubkey(node)
        await _on_relay(relay.url, pubkey)
    async with run_nostr_node(*args, announce=False, **common) as node:
        await _on_relay(relay.url, pubkey, present=False)
        assert _recorded(node) == []
        assert len(await _held(relay.url, pubkey, DELETION)) == 1


async def test_a_node_that_never_announced_publishes_nothing(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, relay: RunningRelay
) -> None:
    marker_key = bytes([0x81]) * 32
    async with run_nostr_node(
        tmp_path / "silent",
        [mint.url],
        upstream.url,
        relays=[relay.url],
        announce=False,
        public_url="https://silent.example.com",
    ) as node:
        pubkey = await node_pubkey(node)
        # a marker listed by the node shows it is up and has run its announcer's first round
        marker = sign(marker_key, created_at=int(time.time()), kind=KIND, tags=(), content="{}")
        await send(relay.url, marker.to_json())
        await _in_nodes(node, public_key_hex(marker_key))
        assert await _held(relay.url, pubkey, DELETION) == []
        assert not (node.data_dir / FILE).exists()


async def test_a_relay_taken_off_the_list_is_withdrawn_from_that_relay_only(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, relay: RunningRelay
) -> None:
    async with (
        run_relay(tmp_path / "other-relay") as other,
        run_nostr_node(
            tmp_path / "c",
            [mint.url],
            upstream.url,
            relays=[relay.url, other.url],
            announce=True,
            public_url="https://c.example.com",
        ) as node,
    ):
        pubkey = await node_pubkey(node)
        await _on_relay(other.url, pubkey)
        [kept] = await _on_relay(relay.url, pubkey)

        await admin_patch(node, {"nostr": {"relays": [relay.url]}})
        await _on_relay(other.url, pubkey, present=False)
        # the copy is withdrawn by id only: an address would cover the same announcement
        # on the relay kept too, for every follower that reads both
        [deletion] = await _held(other.url, pubkey, DELETION)
        assert [t[0] for t in deletion["tags"]] == ["e", "k"]
        assert await _held(relay.url, pubkey, DELETION) == []
        # and the relay kept has a newer version than that deletion
        [current] = await _on_relay(relay.url, pubkey)
        assert current["created_at"] > deletion["created_at"] >= kept["created_at"]
        assert _recorded(node) == [relay.url]
        async with run_nostr_node(
            tmp_path / "follower",
            [mint.url],
            upstream.url,
            relays=[relay.url, other.url],
            announce=False,
        ) as follower:
            await _in_nodes(follower, pubkey)  # reads both: still listed


async def test_a_relay_down_at_the_withdrawal_gets_it_once_back(
    tmp_path: Path,
    mint: LocalMint,
    upstream: RunningUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="routstr_node.nostr")
    port, relay_dir = free_port(), tmp_path / "relay"
    async with (
        run_relay(relay_dir, port=port) as relay,
        run_nostr_node(
            tmp_path / "d",
            [mint.url],
            upstream.url,
            relays=[relay.url],
            announce=True,
            public_url="https://d.example.com",
        ) as node,
    ):
        pubkey = await node_pubkey(node)
        await _on_relay(relay.url, pubkey)
        await relay.stop()
        await admin_patch(node, {"nostr": {"announce": False}})

        def failed() -> bool | None:
            return True if "withdrawing the announcement from" in caplog.text else None

        await eventually(_async(failed), "a failed withdrawal in the log", DEADLINE_S)
        assert _recorded(node) == [relay.url]  # still to do
        async with run_relay(relay_dir, port=port) as back:  # same store: it still has it
            await _on_relay(back.url, pubkey, present=False)
            assert (await get(f"{node.url}/health")).status == 200
        assert _recorded(node) == []


async def test_a_new_key_cannot_withdraw_the_old_ones_announcement(
    tmp_path: Path,
    mint: LocalMint,
    upstream: RunningUpstream,
    relay: RunningRelay,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="routstr_node.nostr")
    common: dict[str, Any] = {"relays": [relay.url], "public_url": "https://e.example.com"}
    args = (tmp_path / "e", [mint.url], upstream.url)
    async with run_nostr_node(*args, announce=True, **common) as node:
        old = await node_pubkey(node)
        await _on_relay(relay.url, old)
    (node.data_dir / "nostr.key").write_text("cd" * 32 + "\n")  # the operator changed the key
    async with run_nostr_node(*args, announce=False, **common) as node:

        def warned() -> bool | None:
            return True if "previous key" in caplog.text else None

        await eventually(_async(warned), "the warning about the previous key", DEADLINE_S)
        assert caplog.text.count("previous key") == 1
        assert _recorded(node) == []
        assert await _held(relay.url, old)  # left to the relay: only that key could delete it
        assert "cd" * 32 not in caplog.text


def test_the_file_missing_or_unreadable_counts_as_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = AnnouncedFile(tmp_path / "none")
    assert (missing.relays, missing.last_created_at) == ({}, 0)
    assert not (tmp_path / "none").exists()  # reading creates nothing

    path = tmp_path / FILE
    for text in ("{not json", "[1, 2]", '{"relays": [], "last_created_at": 1}', "[" * 50_000):
        path.write_text(text)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert AnnouncedFile(tmp_path).relays == {}
        assert FILE in caplog.text

    secret = bytes([0x91]) * 32
    event = sign(secret, created_at=1_700_000_000, kind=KIND, tags=(("d", "x"),), content="")
    record = AnnouncedFile(tmp_path)  # a corrupt file is replaced by the next change
    record.accepted("ws://relay.example", event)
    data = json.loads(path.read_text())
    data["relays"]["ws://bad.example"] = {"pubkey": "nope"}
    path.write_text(json.dumps(data))
    again = AnnouncedFile(tmp_path)  # a bad entry is dropped, the good one kept
    assert list(again.relays) == ["ws://relay.example"]
    entry = again.relays["ws://relay.example"]
    assert (entry.pubkey, entry.d, entry.event_ids) == (event.pubkey, "x", (event.id,))
    assert again.last_created_at == event.created_at
    # a newer one is written down before it is sent: until the relay says it took it,
    # it may hold either, and a withdrawal names both
    newer = sign(secret, created_at=1_700_000_001, kind=KIND, tags=(("d", "x"),), content="")
    again.sending("ws://relay.example", newer)
    assert AnnouncedFile(tmp_path).relays["ws://relay.example"].event_ids == (event.id, newer.id)
    again.accepted("ws://relay.example", newer)
    assert AnnouncedFile(tmp_path).relays["ws://relay.example"].event_ids == (newer.id,)
    again.withdrawn("ws://relay.example")
    assert AnnouncedFile(tmp_path).relays == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE]  # no temp file left


async def test_a_corrupt_file_does_not_stop_the_node(
    tmp_path: Path, mint: LocalMint, upstream: RunningUpstream, relay: RunningRelay
) -> None:
    data_dir = tmp_path / "f" / "data"
    data_dir.mkdir(parents=True)
    (data_dir / FILE).write_text("\x00garbage")
    async with run_nostr_node(
        tmp_path / "f",
        [mint.url],
        upstream.url,
        relays=[relay.url],
        announce=True,
        public_url="https://f.example.com",
    ) as node:
        await _on_relay(relay.url, await node_pubkey(node))
        await eventually(_async(lambda: _recorded(node) or None), "the file rewritten")
