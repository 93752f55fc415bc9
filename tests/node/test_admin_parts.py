"""The admin panel's hard parts, directly: password hashes, sessions, the login brake,
and how a PATCH is remembered (secrets, exact prices)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st

from routstr_node.admin.password import AdminPassword, hash_password, verify_password
from routstr_node.admin.sessions import (
    FREE_FAILURES,
    HOLD_AT_MOST_S,
    LONGEST_WAIT_S,
    AdminSessions,
    LoginThrottle,
)
from routstr_node.admin.signin import password_matches
from routstr_node.admin.state import ADMIN, AdminState
from routstr_node.config import REDACTED, ConfigError, Settings
from routstr_node.config.patch import exact_default, kept_patch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_password_hash_verifies_only_its_password() -> None:
    stored = hash_password("hunter22")
    assert stored.startswith("scrypt$") and "hunter22" not in stored
    assert verify_password("hunter22", stored)
    assert not verify_password("hunter23", stored)
    assert hash_password("hunter22") != stored  # salted
    for broken in ("", "scrypt$1$2", "bcrypt$16384$8$1$00$00", "scrypt$x$8$1$00$00"):
        assert not verify_password("hunter22", broken)


async def test_admin_password_matches_plain_and_hashed() -> None:
    plain = AdminPassword(plain="pw one")
    assert await plain.matches("pw one")
    assert not await plain.matches("pw on")
    hashed = AdminPassword(hashed=hash_password("pw two"))
    for _ in range(2):  # the second time from the remembered match
        assert await hashed.matches("pw two")
        assert not await hashed.matches("pw three")
    with pytest.raises(ValueError):
        AdminPassword()


def test_sessions_end_at_logout_expiry_and_password_change() -> None:
    clock = Clock()
    sessions = AdminSessions(ttl_s=60, clock=clock)
    first, second, third = sessions.start(), sessions.start(), sessions.start()
    assert all(sessions.valid(s) for s in (first, second, third))
    assert not sessions.valid("made-up")
    sessions.end(first)
    assert not sessions.valid(first)
    sessions.end_all_but(second)
    assert sessions.valid(second) and not sessions.valid(third)
    clock.now += 61
    assert not sessions.valid(second)


def test_login_brake_holds_short_waits_refuses_long_ones_and_forgets_on_success() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(FREE_FAILURES):
        assert throttle.turn("a") == 0
    holds = []
    while (hold := throttle.turn("a")) is not None:  # each answered after its hold
        holds.append(hold)
        clock.now += hold
    assert holds == [1, 2, 4]  # held, then checked: still a 401 or a 200
    waits = []
    for _ in range(10):  # refused until the wait has passed, then a turn at once
        wait = throttle.wait_s("a")
        waits.append(wait)
        clock.now += wait - HOLD_AT_MOST_S - 1
        assert throttle.turn("a") is None
        clock.now += HOLD_AT_MOST_S + 1
        assert throttle.turn("a") == 0
    assert waits[:3] == [8, 16, 32]
    assert max(waits) == LONGEST_WAIT_S
    assert throttle.turn("b") == 0  # another address is not held back
    clock.now += LONGEST_WAIT_S
    assert throttle.turn("a") == 0
    throttle.succeeded("a")
    assert throttle.wait_s("a") == 0
    clock.now += 1
    assert throttle.turn("a") == 0


def test_guesses_in_parallel_are_spaced_out_before_they_are_checked() -> None:
    throttle = LoginThrottle(clock=Clock())
    for _ in range(FREE_FAILURES):  # all started, none answered yet
        assert throttle.turn("a") == 0
    assert throttle.turn("a") == 1
    assert throttle.turn("a") == 3  # after the one before it, and then its own wait
    assert throttle.turn("a") is None  # 3 + 4 s away: refused
    assert throttle.wait_s("a") == 7


URL = "https://api.example/v1"
CURRENT = {
    "admin": {"password": "pw", "password_env": None},
    "nostr": {"nsec": "11" * 32, "relays": []},
    "upstreams": [
        {"name": "typed", "base_url": URL, "api_key": "sk-typed", "api_key_env": None},
        {"name": "from-env", "base_url": URL, "api_key": "sk-env", "api_key_env": "UP_KEY"},
        {"name": "from-file", "base_url": URL, "api_key": "sk-file", "api_key_env": None},
    ],
}
FILE = {"upstreams": [{**u} for u in CURRENT["upstreams"][1:]]}  # "typed": added in the panel
ENV = {"UP_KEY": "sk-env", "HOST_SECRET": "aws-secret"}


def upstream(name: str, **fields: object) -> dict[str, object]:
    return {"name": name, "base_url": URL, "api_key": REDACTED, "api_key_env": None, **fields}


def test_a_kept_patch_holds_no_redacted_secret_it_would_copy() -> None:
    patch = {
        "admin": {"password": REDACTED},
        "nostr": {"nsec": REDACTED, "announce": True},
        "upstreams": [
            upstream("from-env", api_key_env="UP_KEY"),
            upstream("typed"),
            upstream("from-file"),
            {"name": "new", "base_url": URL, "api_key": "sk-new"},
        ],
    }
    kept = kept_patch(patch, CURRENT, FILE, ENV)
    assert kept["admin"] == {}
    assert kept["nostr"] == {"announce": True}
    assert kept["upstreams"] == [
        {"name": "from-env", "base_url": URL, "api_key_env": "UP_KEY"},  # from the variable
        upstream("typed", api_key="sk-typed"),  # typed in the panel: nowhere else to find
        upstream("from-file"),  # node.toml's: read from there at every start
        {"name": "new", "base_url": URL, "api_key": "sk-new"},
    ]
    assert patch["admin"] == {"password": REDACTED}  # the caller's patch is not touched
    # the variable changed since: node.toml's upstream (as its environment filled it at
    # start) holds the key in use, so it is read from there again at the next start
    moved = kept_patch(patch, CURRENT, FILE, {"UP_KEY": "sk-other"})
    assert moved["upstreams"][0]["api_key"] == REDACTED


@pytest.mark.parametrize(
    ("patched", "param"),
    [
        (upstream("nowhere"), "upstreams[0].api_key"),  # no such upstream had a key
        (upstream("typed", base_url="https://evil.example"), "upstreams[0].api_key"),
        (upstream("from-env", base_url="https://evil.example/", api_key_env="UP_KEY"), None),
        (upstream("new", api_key=None, api_key_env="HOST_SECRET"), None),
        (upstream("new", api_key=None, api_key_env="UP_KEY", base_url="http://x"), None),
        # a typed key does not make a variable's new address legitimate: the next change
        # could drop the key and let the variable speak
        (upstream("new", api_key="t", api_key_env="HOST_SECRET", base_url="http://x"), None),
    ],
)
def test_no_kept_key_or_key_variable_goes_to_a_new_address(
    patched: dict[str, object], param: str | None
) -> None:
    with pytest.raises(ConfigError) as refused:
        kept_patch({"upstreams": [patched]}, CURRENT, FILE, ENV)
    assert refused.value.param == (param or "upstreams[0].api_key_env")


def test_a_key_variable_node_toml_pairs_with_the_url_may_be_named_again() -> None:
    again = upstream("renamed", api_key=None, api_key_env="UP_KEY", base_url=URL + "/")
    assert kept_patch({"upstreams": [again]}, CURRENT, FILE, ENV)["upstreams"] == [again]
    typed = upstream("new", api_key="sk-typed-now", base_url="https://elsewhere.example")
    assert kept_patch({"upstreams": [typed]}, CURRENT, FILE, ENV)["upstreams"] == [typed]
    with pytest.raises(ConfigError):
        kept_patch([1], CURRENT, FILE, ENV)  # type: ignore[arg-type]


def test_a_kept_key_whose_upstream_moved_in_node_toml_is_not_sent_there() -> None:
    """Stored changes keep node.toml's key as "[REDACTED]"; if node.toml then moves that
    upstream, the stored change (at the old address) no longer gets the new key."""
    file = Settings.model_validate(
        {
            "mints": {"trusted": ["http://127.0.0.1:3338"]},
            "upstreams": [{"name": "u", "base_url": "https://moved.example", "api_key": "k2"}],
        }
    )
    stored = {"upstreams": [{"name": "u", "base_url": "https://old.example", "api_key": REDACTED}]}
    with pytest.raises(ConfigError) as refused:
        file.merged(stored, {})
    assert refused.value.param == "upstreams[0].api_key"
    same_place = {
        "upstreams": [{"name": "u", "base_url": "https://moved.example/", "api_key": REDACTED}]
    }
    assert file.merged(same_place, {}).upstreams[0].api_key == "k2"


BASE = Settings.model_validate({"mints": {"trusted": ["http://127.0.0.1:3338"]}})


@given(st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False, allow_infinity=False))
def test_a_stored_price_reads_back_exactly(markup: Decimal) -> None:
    stored = json.dumps({"pricing": {"markup_percent": markup}}, default=exact_default)
    again = BASE.merged(json.loads(stored), {})
    assert again.pricing.markup_percent == markup


async def test_a_guess_right_only_for_the_password_just_replaced_fails() -> None:
    """A login checked (in a thread) while the password changes does not open a session."""
    app = web.Application()
    old = AdminPassword(hashed=hash_password("old password"))
    app[ADMIN] = AdminState(password=old, file_settings=BASE, overrides={})
    request = make_mocked_request("POST", "/admin/login", app=app)
    guess = asyncio.create_task(password_matches(request, "old password"))
    await asyncio.sleep(0)  # the guess is being hashed now
    app[ADMIN].password = AdminPassword(plain="new password")
    assert not await guess
    assert await password_matches(request, "new password")


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"admin": {"password_env": "HOST_SECRET"}}, "admin.password_env"),
        ({"nostr": {"nsec_env": "HOST_SECRET"}}, "nostr.nsec_env"),
        ({"upstreams": [upstream("x", api_key=None, api_key_env=["HOST_SECRET"])]}, None),
        ({"upstreams": [upstream("x", api_key=None, api_key_env="UP_KEY", base_url=[URL])]}, None),
    ],
)
def test_variables_are_named_in_node_toml_only(patch: dict[str, object], param: str | None) -> None:
    with pytest.raises(ConfigError) as refused:
        kept_patch(patch, CURRENT, FILE, ENV)
    assert refused.value.param == (param or "upstreams[0].api_key_env")


def test_a_usd_price_cannot_be_made_huge_by_a_tiny_rate() -> None:
    model = {"id": "m", "upstream": "u", "context_length": 10, "max_output_tokens": 1}
    base = {
        "mints": {"trusted": ["http://127.0.0.1:3338"]},
        "upstreams": [{"name": "u", "base_url": URL}],
    }
    for patch, param in [
        ({"pricing": {"btc_usd": Decimal("1e-18")}}, "pricing.btc_usd"),
        (
            {"models": [{**model, "input_usd_per_1m": Decimal("1e12")}]},
            "models[0].input_usd_per_1m",
        ),
    ]:
        with pytest.raises(ConfigError) as refused:
            Settings.model_validate(base).merged(patch, {})
        assert refused.value.param == param
