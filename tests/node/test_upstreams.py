"""The upstream registry: what it tells the operator, and sessions across settings changes."""

from __future__ import annotations

import asyncio
import logging

import pytest

from routstr_node.config import UpstreamConfig
from routstr_node.upstream import Upstream, Upstreams


async def test_a_key_variable_that_is_not_set_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstreams = Upstreams()
    configs = [
        UpstreamConfig(name="keyed", base_url="http://127.0.0.1:9/v1", api_key="sk-x"),
        UpstreamConfig(name="local", base_url="http://127.0.0.1:9/v1"),  # needs no key
        UpstreamConfig(name="forgot", base_url="http://127.0.0.1:9/v1", api_key_env="NOT_SET"),
    ]
    with caplog.at_level(logging.WARNING, logger="routstr_node.upstream"):
        await upstreams.configure(configs)
    try:
        assert [r.getMessage() for r in caplog.records] == [
            "upstream 'forgot' has no API key: api_key_env names NOT_SET, which is not set"
        ]
        assert "sk-x" not in caplog.text
    finally:
        await upstreams.close()


async def test_a_changed_upstream_closes_its_old_session_when_its_calls_end() -> None:
    """A settings change never cuts a call under way: the old session closes after it."""
    upstreams = Upstreams()

    async def configure(version: int) -> Upstream:
        await upstreams.configure(
            [UpstreamConfig(name="u", base_url=f"http://127.0.0.1:9/v{version}")]
        )
        upstream = upstreams.get("u")
        assert upstream is not None
        return upstream

    try:
        idle = await configure(1)
        busy = await configure(2)  # `idle` had no call: closed at once
        assert idle.session.closed
        with busy.in_use():
            newest = await configure(3)
            assert not busy.session.closed  # its call is still running
        for _ in range(100):  # the close runs as a task of its own: let it run
            if busy.session.closed:
                break
            await asyncio.sleep(0)
        assert busy.session.closed
        assert not newest.session.closed
    finally:
        await upstreams.close()
    assert newest.session.closed
