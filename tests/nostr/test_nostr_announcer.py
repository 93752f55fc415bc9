"""When the announcer publishes: at start, after a settings change, not in between, and
not to a relay that just failed (no network here: ``publish`` is replaced)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from routstr_node.config import Settings
from routstr_node.nostr import announcer as announcer_module
from routstr_node.nostr.announced import FILE
from routstr_node.nostr.announcer import ANNOUNCE_EVERY_S, Announcer, _Relay
from routstr_node.nostr.event import Event, verify
from routstr_node.nostr.keys import KeyCache
from routstr_node.nostr.relay_client import RelayError

GOOD, BAD = "ws://good.example", "ws://bad.example"


def _settings(tmp_path: Path, **node: Any) -> Settings:
    return Settings.model_validate(
        {
            "node": {"data_dir": str(tmp_path), "public_url": "https://n.example", **node},
            "mints": {"trusted": ["https://mint.example"]},
            "nostr": {"relays": [GOOD, BAD], "announce": True},
        }
    )


def _always(settings: Settings) -> Callable[[], Settings]:
    return lambda: settings


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Event]]:
    sent: list[tuple[str, Event]] = []

    async def publish(session: aiohttp.ClientSession, url: str, event: Event) -> None:
        sent.append((url, event))
        if url == BAD:
            raise RelayError("refused the event: blocked")

    monkeypatch.setattr(announcer_module, "publish", publish)
    return sent


async def test_publishes_at_start_and_after_each_change_only(
    tmp_path: Path, published: list[tuple[str, Event]]
) -> None:
    current = _settings(tmp_path)
    async with aiohttp.ClientSession() as session:
        announcer = Announcer(session, lambda: current, KeyCache())
        await announcer.check()
        assert [url for url, _ in published] == [GOOD, BAD]
        first = published[0][1]
        assert verify(first)

        published.clear()
        await announcer.check()  # nothing changed; the failed relay waits for its retry
        assert published == []

        current = _settings(tmp_path, name="Renamed")
        await announcer.check()
        assert [url for url, _ in published] == [GOOD]
        renamed = published[0][1]
        assert json.loads(renamed.content)["name"] == "Renamed"
        assert renamed.created_at > first.created_at  # replaces it, even within a second


async def test_nothing_without_public_url_or_with_announce_off(
    tmp_path: Path, published: list[tuple[str, Event]]
) -> None:
    no_url = _settings(tmp_path, public_url="")
    off = _settings(tmp_path).model_copy(
        update={"nostr": _settings(tmp_path).nostr.model_copy(update={"announce": False})}
    )
    async with aiohttp.ClientSession() as session:
        for settings in (no_url, off):
            await Announcer(session, _always(settings), KeyCache()).check()
    assert published == []


def test_an_unchanged_announcement_is_due_again_after_an_hour() -> None:
    wanted = ("pubkey", (("d", "x"),), "{}")
    relay = _Relay(accepted=wanted, accepted_at=1000.0)
    assert not relay.due(wanted, 1000.0 + ANNOUNCE_EVERY_S - 1)
    assert relay.due(wanted, 1000.0 + ANNOUNCE_EVERY_S)
    assert relay.due(("pubkey", (), "{}"), 1001.0)  # changed: due at once
    relay.retry_at = 2000.0
    assert not relay.due(("pubkey", (), "{}"), 1999.0)  # but not before its retry


async def test_a_clock_that_ran_ahead_once_does_not_date_every_later_announcement(
    tmp_path: Path, published: list[tuple[str, Event]]
) -> None:
    """A record written while the clock was a day ahead: dated by the clock again (else
    followers, which refuse events dated ahead, would not list the node for a day)."""
    now = int(time.time())
    (tmp_path / FILE).write_text(json.dumps({"last_created_at": now + 86_400, "relays": {}}))
    async with aiohttp.ClientSession() as session:
        await Announcer(session, _always(_settings(tmp_path)), KeyCache()).check()
    dates = {event.created_at for _, event in published}
    assert len(dates) == 1 and now <= dates.pop() <= int(time.time())

    # a few seconds ahead (many changes in one second, before a restart): still newer
    published.clear()
    (tmp_path / FILE).write_text(json.dumps({"last_created_at": now + 30, "relays": {}}))
    async with aiohttp.ClientSession() as session:
        await Announcer(session, _always(_settings(tmp_path)), KeyCache()).check()
    assert {event.created_at for _, event in published} == {now + 31}
