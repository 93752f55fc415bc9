"""The admin panel's hard parts, directly: password hashes, sessions, the login brake,
and how a PATCH is remembered (secrets, exact prices)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routstr_node.admin.password import AdminPassword, hash_password, verify_password
from routstr_node.admin.sessions import (
    FREE_FAILURES,
    LONGEST_WAIT_S,
    AdminSessions,
    LoginThrottle,
)
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


def test_login_brake_doubles_the_wait_and_forgets_on_success() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(FREE_FAILURES):
        assert throttle.wait_s("a") == 0
        throttle.attempt("a")
    waits = []
    for _ in range(12):
        wait = throttle.wait_s("a")
        waits.append(wait)
        clock.now += wait
        assert throttle.wait_s("a") == 0
        throttle.attempt("a")
    assert waits[:4] == [1, 2, 4, 8]
    assert max(waits) == LONGEST_WAIT_S
    assert throttle.wait_s("b") == 0  # another address is not held back
    clock.now += LONGEST_WAIT_S
    throttle.attempt("a")
    throttle.succeeded("a")
    assert throttle.wait_s("a") == 0


def test_guesses_in_parallel_count_before_they_are_checked() -> None:
    throttle = LoginThrottle(clock=Clock())
    for _ in range(FREE_FAILURES):  # all started, none answered yet
        throttle.attempt("a")
    assert throttle.wait_s("a") > 0


CURRENT = {
    "admin": {"password": "pw", "password_env": None},
    "nostr": {"nsec": "11" * 32, "relays": []},
    "upstreams": [
        {"name": "direct", "api_key": "sk-direct", "api_key_env": None},
        {"name": "from-env", "api_key": "sk-env", "api_key_env": "UPSTREAM_KEY"},
    ],
}


def test_a_kept_patch_holds_no_redacted_and_copies_no_key_out_of_the_environment() -> None:
    patch = {
        "admin": {"password": REDACTED},
        "nostr": {"nsec": REDACTED, "announce": True},
        "upstreams": [
            {"name": "from-env", "api_key": REDACTED, "api_key_env": "UPSTREAM_KEY"},
            {"name": "direct", "api_key": REDACTED, "api_key_env": None},
            {"name": "new", "api_key": "sk-new"},
        ],
    }
    kept = kept_patch(patch, CURRENT, {"UPSTREAM_KEY": "sk-env"})
    assert kept["admin"] == {}
    assert kept["nostr"] == {"announce": True}
    assert kept["upstreams"] == [
        {"name": "from-env", "api_key_env": "UPSTREAM_KEY"},
        {"name": "direct", "api_key": "sk-direct", "api_key_env": None},
        {"name": "new", "api_key": "sk-new"},
    ]
    assert patch["admin"] == {"password": REDACTED}  # the caller's patch is not touched
    # the variable changed since: the key in use is kept as it is
    moved = kept_patch(patch, CURRENT, {"UPSTREAM_KEY": "sk-other"})
    assert moved["upstreams"][0]["api_key"] == "sk-env"


def test_a_redacted_key_of_an_unknown_upstream_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        kept_patch({"upstreams": [{"name": "x", "api_key": REDACTED}]}, CURRENT, {})
    assert refused.value.param == "upstreams[0].api_key"
    with pytest.raises(ConfigError):
        kept_patch([1], CURRENT, {})  # type: ignore[arg-type]


BASE = Settings.model_validate({"mints": {"trusted": ["http://127.0.0.1:3338"]}})


@given(st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False, allow_infinity=False))
def test_a_stored_price_reads_back_exactly(markup: Decimal) -> None:
    stored = json.dumps({"pricing": {"markup_percent": markup}}, default=exact_default)
    again = BASE.merged(json.loads(stored), {})
    assert again.pricing.markup_percent == markup
