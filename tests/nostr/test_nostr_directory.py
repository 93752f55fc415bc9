"""The directory of other nodes: newest announcement per node key, bounded, minus the
ones their authors withdrew (NIP-09); and what this node's own announcement says."""

from __future__ import annotations

import json
from pathlib import Path

import routstr_node
from routstr_node.config import Settings
from routstr_node.identity import npub, public_key_hex
from routstr_node.nostr.announcement import (
    DELETION,
    KIND,
    MAX_CONTENT_BYTES,
    MAX_D_CHARS,
    address,
    announcement,
)
from routstr_node.nostr.deletions import MAX_D_PER_KEY, Deletions
from routstr_node.nostr.directory import MAX_CLOCK_SKEW_S, NodeDirectory
from routstr_node.nostr.event import Event, sign

NOW = 1_700_000_000
A, B = bytes.fromhex("0a" * 32), bytes.fromhex("0b" * 32)


def _announce(
    secret: bytes,
    created_at: int = NOW,
    *,
    d: str = "main",
    name: str = "node",
    content: str | None = None,
    kind: int = KIND,
    urls: tuple[str, ...] = ("https://node.example",),
) -> Event:
    tags = (("d", d), *(("u", u) for u in urls), ("mint", "https://mint.example"), ("version", "1"))
    text = json.dumps({"name": name, "about": "about " + name}) if content is None else content
    return sign(secret, created_at=created_at, kind=kind, tags=tags, content=text)


def _names(directory: NodeDirectory) -> list[str]:
    return [n["name"] for n in directory.listing()]


def test_a_node_is_listed_as_its_announcement_says() -> None:
    directory = NodeDirectory()
    assert directory.offer(_announce(A, name="alpha"), now=NOW)
    [node] = directory.listing()
    assert node == {
        "pubkey": public_key_hex(A),
        "npub": npub(A),
        "name": "alpha",
        "about": "about alpha",
        "urls": ["https://node.example"],
        "mints": ["https://mint.example"],
        "version": "1",
        "announced_at": NOW,
        "self": False,
    }


def test_the_newest_per_node_key_is_kept_whatever_the_order() -> None:
    directory = NodeDirectory()
    assert directory.offer(_announce(A, NOW + 10, name="new"), now=NOW)
    assert not directory.offer(_announce(A, NOW, name="old"), now=NOW)  # arrives late
    assert not directory.offer(_announce(A, NOW + 10, name="new"), now=NOW)  # the same again
    assert _names(directory) == ["new"]
    assert directory.offer(_announce(A, NOW + 20, name="newer"), now=NOW)
    assert _names(directory) == ["newer"]
    assert directory.offer(_announce(B, NOW + 5, name="b"), now=NOW)
    assert _names(directory) == ["newer", "b"]  # newest first


def test_one_key_is_one_node_whatever_its_d_tags() -> None:
    directory = NodeDirectory(max_nodes=3)
    directory.offer(_announce(B, NOW, name="honest"), now=NOW)
    for i in range(10):  # one key, many d tags: it cannot push the others out
        directory.offer(_announce(A, NOW + 1 + i, d=f"d{i}", name=f"flood {i}"), now=NOW)
    assert _names(directory) == ["flood 9", "honest"]


def test_at_the_same_second_the_lower_id_wins() -> None:
    one, two = _announce(A, NOW, name="one"), _announce(A, NOW, name="two")
    low, high = sorted((one, two), key=lambda e: e.id)
    for first, second in ((low, high), (high, low)):
        directory = NodeDirectory()
        directory.offer(first, now=NOW)
        directory.offer(second, now=NOW)
        assert [n["name"] for n in directory.listing()] == [json.loads(low.content)["name"]]


def test_other_kinds_huge_events_and_far_future_dates_are_ignored() -> None:
    directory = NodeDirectory()
    assert not directory.offer(_announce(A, kind=1), now=NOW)
    huge = json.dumps({"name": "x" * MAX_CONTENT_BYTES})
    assert not directory.offer(_announce(A, content=huge), now=NOW)
    many_urls = tuple(f"https://{i}.example/{'p' * 400}" for i in range(200))
    assert not directory.offer(_announce(A, urls=many_urls), now=NOW)
    assert not directory.offer(_announce(A, d="d" * (MAX_D_CHARS + 1)), now=NOW)
    assert not directory.offer(_announce(A, NOW + MAX_CLOCK_SKEW_S + 1), now=NOW)
    assert directory.offer(_announce(A, NOW + MAX_CLOCK_SKEW_S), now=NOW)  # clocks differ a bit
    assert len(directory) == 1


def test_the_directory_is_bounded_and_keeps_the_newest() -> None:
    directory = NodeDirectory(max_nodes=3)
    secrets = [bytes([i + 1]) * 32 for i in range(4)]
    for i, secret in enumerate(secrets[:3]):
        directory.offer(_announce(secret, NOW + i, name=f"n{i}"), now=NOW)
    assert not directory.offer(_announce(secrets[3], NOW - 1, name="older"), now=NOW)
    assert directory.offer(_announce(secrets[3], NOW + 3, name="n3"), now=NOW)
    assert len(directory) == 3
    assert _names(directory) == ["n3", "n2", "n1"]  # the oldest made room
    assert directory.offer(_announce(secrets[1], NOW + 4, name="n1 again"), now=NOW)
    assert len(directory) == 3  # a known node's update replaces, evicts nothing


def test_unreadable_content_and_odd_urls_are_tolerated() -> None:
    directory = NodeDirectory()
    odd = (
        "javascript:alert(1)",
        "https://ok.example",
        "https://ok.example",
        "ftp://x",
        "http://[::1",
        "https://long.example/" + "p" * 600,
    )
    directory.offer(_announce(A, content="not json", urls=odd), now=NOW)
    directory.offer(_announce(B, content='["a list"]'), now=NOW)
    for node in directory.listing():
        assert (node["name"], node["about"]) == ("", "")
    deep = _announce(B, NOW + 1, content="[" * 50_000)  # past Python's recursion depth
    assert directory.offer(deep, now=NOW)
    assert directory.listing()[0]["name"] == ""
    odd_text = _announce(B, NOW + 2, content='{"name": "a\\ud800b"}')  # a lone surrogate
    assert directory.offer(odd_text, now=NOW)
    json.dumps(directory.listing()).encode()  # every listing can be sent
    urls = {n["pubkey"]: n["urls"] for n in directory.listing()}
    assert urls[public_key_hex(A)] == ["https://ok.example"]


def test_own_announcement_is_marked_and_clear_forgets() -> None:
    directory = NodeDirectory()
    directory.offer(_announce(A, NOW + 1, name="me"), now=NOW)
    directory.offer(_announce(B, NOW, name="other"), now=NOW)
    listed = directory.listing(own_pubkey=public_key_hex(A))
    assert [(n["name"], n["self"]) for n in listed] == [("me", True), ("other", False)]
    directory.clear()
    assert directory.listing() == []


def test_this_nodes_announcement(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {
            "node": {
                "name": "Zürich node",
                "description": 'fast "and" cheap',
                "public_url": "https://ai.example.com",
                "data_dir": str(tmp_path),
            },
            "mints": {"trusted": ["https://mint.one", "https://mint.two"]},
        }
    )
    pubkey = public_key_hex(A)
    tags, content = announcement(settings, pubkey)
    assert tags == (
        ("d", pubkey),
        ("u", "https://ai.example.com"),
        ("mint", "https://mint.one"),
        ("mint", "https://mint.two"),
        ("version", routstr_node.__version__),
    )
    assert json.loads(content) == {"name": "Zürich node", "about": 'fast "and" cheap'}


def _withdraw(
    secret: bytes, created_at: int, *, e: tuple[str, ...] = (), a: tuple[str, ...] = ()
) -> Event:
    """A deletion request, as a node withdrawing its announcement signs it."""
    tags = (*(("e", i) for i in e), *(("a", x) for x in a), ("k", str(KIND)))
    return sign(secret, created_at=created_at, kind=DELETION, tags=tags, content="gone")


def _at(secret: bytes, d: str = "main") -> str:
    return address(public_key_hex(secret), d)


def test_a_deletion_by_id_removes_the_listing_and_keeps_it_out() -> None:
    directory = NodeDirectory()
    listed = _announce(A, NOW, name="alpha")
    directory.offer(listed, now=NOW)
    directory.offer(_announce(B, NOW, name="b"), now=NOW)
    deletion = _withdraw(A, NOW + 5, e=(listed.id,))
    assert directory.offer(deletion, now=NOW)
    assert _names(directory) == ["b"]
    assert not directory.is_news(deletion, now=NOW)  # again (another relay): nothing to do
    assert not directory.offer(listed, now=NOW)  # the same, from another relay or a reconnect
    assert not directory.offer(_announce(A, NOW + 5, name="as old"), now=NOW)
    assert directory.offer(_announce(A, NOW + 6, name="back"), now=NOW)  # announced again
    assert _names(directory) == ["back", "b"]


def test_a_deletion_by_address_covers_every_version_up_to_its_date() -> None:
    directory = NodeDirectory()
    directory.offer(_announce(A, NOW + 10, name="alpha"), now=NOW)
    directory.offer(_withdraw(A, NOW + 9, a=(_at(A),)), now=NOW)  # older than the listing
    assert _names(directory) == ["alpha"]
    assert directory.offer(_withdraw(A, NOW + 10, a=(_at(A),)), now=NOW)  # same second counts
    assert directory.listing() == []
    assert not directory.offer(_announce(A, NOW + 3, name="older"), now=NOW)
    assert directory.offer(_announce(A, NOW + 11, name="newer"), now=NOW)
    assert _names(directory) == ["newer"]


def test_a_deletion_seen_first_keeps_out_the_announcement_it_withdrew() -> None:
    directory = NodeDirectory()  # e.g. one relay has the deletion, another still the event
    assert directory.offer(_withdraw(A, NOW + 5, a=(_at(A),)), now=NOW)
    assert not directory.offer(_announce(A, NOW, name="withdrawn"), now=NOW)
    assert directory.offer(_announce(A, NOW, d="other", name="other d"), now=NOW)
    assert _names(directory) == ["other d"]  # a deletion names its d: the others stand


def test_only_the_author_can_withdraw_its_announcement() -> None:
    directory = NodeDirectory()
    listed = _announce(A, NOW, name="alpha")
    directory.offer(listed, now=NOW)
    forged = _withdraw(B, NOW + 5, e=(listed.id,), a=(_at(A),))
    assert not directory.offer(forged, now=NOW)
    assert not directory.offer(_withdraw(A, NOW + 5, e=("ab" * 32,)), now=NOW)  # another id
    directory.offer(_withdraw(A, NOW + 5, a=(_at(A, "other"),)), now=NOW)  # another d
    assert _names(directory) == ["alpha"]
    assert directory.offer(_announce(A, NOW + 1, name="still alpha"), now=NOW)


def test_far_future_and_huge_deletions_are_ignored() -> None:
    directory = NodeDirectory()
    directory.offer(_announce(A, NOW, name="alpha"), now=NOW)
    assert not directory.offer(_withdraw(A, NOW + MAX_CLOCK_SKEW_S + 1, a=(_at(A),)), now=NOW)
    huge = tuple(_at(A, f"{i}-{'x' * 200}") for i in range(300))
    assert not directory.offer(_withdraw(A, NOW + 5, a=huge), now=NOW)
    assert _names(directory) == ["alpha"]


def test_remembered_deletions_are_bounded() -> None:
    directory = NodeDirectory(max_nodes=2)
    secrets = [bytes([i + 1]) * 32 for i in range(3)]
    for i, secret in enumerate(secrets):
        assert directory.offer(_withdraw(secret, NOW + 10 + i, a=(_at(secret),)), now=NOW)
    # the oldest deletion made room: its announcement may be listed again; not the others'
    assert directory.offer(_announce(secrets[0], NOW, name="forgotten"), now=NOW)
    assert not directory.offer(_announce(secrets[1], NOW, name="kept out"), now=NOW)
    assert not directory.offer(_announce(secrets[2], NOW, name="kept out"), now=NOW)
    # a deletion older than every one remembered, of nothing listed, is not even news
    assert not directory.is_news(_withdraw(B, NOW, a=(_at(B),)), now=NOW)

    deletions = Deletions(max_keys=1)  # and one key cannot fill memory with d values
    many = {f"d{i}": NOW + i for i in range(3 * MAX_D_PER_KEY)}
    deletions.add("k", deletions.news("k", many, removes=False), removes=False)
    assert [d for d in many if deletions.covers("k", d, NOW)] == list(many)[-MAX_D_PER_KEY:]
    assert deletions.news("k", {"d0": NOW}, removes=False) == {}  # older than the newest kept
    assert len(deletions) == 1


def test_a_flood_of_deletions_by_made_up_keys_does_not_undo_a_real_withdrawal() -> None:
    directory = NodeDirectory(max_nodes=3)
    listed = _announce(A, NOW, name="alpha")
    directory.offer(listed, now=NOW)
    assert directory.offer(_withdraw(A, NOW + 1, e=(listed.id,), a=(_at(A),)), now=NOW)
    # anyone can sign deletions of nothing, with fresh keys, dated as late as allowed
    for i in range(10):
        secret = bytes([0x40 + i]) * 32
        late = NOW + MAX_CLOCK_SKEW_S - 10 + i  # each newer: each pushes out the oldest
        assert directory.offer(_withdraw(secret, late, a=(_at(secret),)), now=NOW)
    assert not directory.offer(listed, now=NOW)  # the copy on another relay: still out
    assert directory.listing() == []
