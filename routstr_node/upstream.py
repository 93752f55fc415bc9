"""The AI providers the node forwards to: one pooled ClientSession per upstream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from routstr_node.config import UpstreamConfig

log = logging.getLogger(__name__)

# idle connections to an upstream are kept this long (closed within twice that): after a
# burst of 5,000 streams the pool held 5,000 idle connections, and their memory, for a
# minute or two at 60 s; a node idle longer than this pays one new handshake
UPSTREAM_KEEPALIVE_S = 15.0


@dataclass(frozen=True, slots=True)
class Payload:
    """What an upstream gets. ``without`` is the body to send instead when the upstream
    refuses the member ``added`` that the node put in (one that does not know it)."""

    body: bytes
    added: str | None = None
    without: bytes = b""


def names_member(raw: bytes, member: str) -> bool:
    """Whether an upstream's error answer is about ``member`` (its param or its message)."""
    try:
        error = json.loads(raw).get("error")
    except (ValueError, AttributeError, RecursionError):
        return False
    if isinstance(error, dict):
        return error.get("param") == member or member in str(error.get("message") or "")
    return isinstance(error, str) and member in error


@dataclass
class Upstream:
    name: str
    base_url: str
    api_key: str | None
    timeout_s: float
    session: aiohttp.ClientSession
    calls: int = 0  # calls under way on this session
    # learned: it answers video with OpenAI's asynchronous jobs, not /video/generations
    video_jobs: bool = False
    retired: bool = False  # replaced by a settings change: closed once its calls are done
    _closing: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Around a whole call (a stream until its last byte): the session stays open."""
        self.calls += 1
        try:
            yield
        finally:
            self.calls -= 1
            if self.retired and self.calls == 0 and self._closing is None:
                self._closing = asyncio.create_task(self.session.close())

    async def post(
        self, node_path: str, payload: Payload, *, stream: bool, accept: str | None = None
    ) -> aiohttp.ClientResponse:
        """The upstream's answer to ``payload``; if it refuses only the member the node
        added, its answer to the body without it (the client's request as it came).
        ``accept``: what the answer is (default JSON, or events for a stream)."""
        url, headers = self.url(node_path), self.headers(stream=stream, accept=accept)
        resp = await self.session.post(url, data=payload.body, headers=headers)
        if payload.added is None or resp.status != 400:
            return resp
        if not names_member(await resp.read(), payload.added):
            return resp  # its body stays readable: read() keeps it
        resp.release()
        log.info("upstream '%s' refuses %s: sent without it", self.name, payload.added)
        return await self.session.post(url, data=payload.without, headers=headers)

    async def post_form(
        self, node_path: str, form: aiohttp.MultipartWriter, *, accept: str | None = None
    ) -> aiohttp.ClientResponse:
        """Send a multipart form (an upload: its parts are streamed, not joined first)."""
        headers = self.headers(stream=False, accept=accept, content_type=None)
        return await self.session.post(self.url(node_path), data=form, headers=headers)

    async def get(self, node_path: str, *, accept: str | None = None) -> aiohttp.ClientResponse:
        """A GET of ``node_path`` (an asynchronous job's state, its result) or of a URL of
        the upstream's own (``owns``): the key goes nowhere else."""
        url = node_path if self.owns(node_path) else self.url(node_path)
        headers = self.headers(stream=False, accept=accept, content_type=None)
        return await self.session.get(url, headers=headers)

    def owns(self, url: str) -> bool:
        """Whether ``url`` is on the upstream's own origin (what its key opens)."""
        ours, theirs = urlsplit(self.base_url), urlsplit(url)
        return (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc)

    def url(self, node_path: str) -> str:
        """``/v1/chat/completions`` → ``<base_url>/chat/completions``."""
        suffix = node_path[len("/v1") :] if node_path.startswith("/v1/") else node_path
        return self.base_url.rstrip("/") + suffix

    def headers(
        self,
        *,
        stream: bool,
        accept: str | None = None,
        content_type: str | None = "application/json",
    ) -> dict[str, str]:
        headers = {"Accept": accept or ("text/event-stream" if stream else "application/json")}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


class Upstreams:
    """Sessions keyed by upstream name; rebuilt when the configured list changes."""

    def __init__(self) -> None:
        self._by_name: dict[str, Upstream] = {}
        # upstreams changed or removed while calls were still on them: each closes its
        # session when its last call ends (the rest are closed with the node)
        self._retired: list[Upstream] = []

    def get(self, name: str) -> Upstream | None:
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        """Whether an upstream of that name is open now."""
        return name in self._by_name

    def names(self) -> list[str]:
        return list(self._by_name)

    async def configure(self, configs: list[UpstreamConfig]) -> None:
        wanted = {c.name: c for c in configs}
        for name in list(self._by_name):
            current = self._by_name[name]
            config = wanted.get(name)
            if config is None or (config.base_url, config.timeout_s) != (
                current.base_url,
                current.timeout_s,
            ):
                del self._by_name[name]
                current.retired = True
                if current.calls:
                    self._retired = [u for u in self._retired if not u.session.closed]
                    self._retired.append(current)
                else:
                    await current.session.close()
        for name, config in wanted.items():
            if config.api_key is None and config.api_key_env is not None:
                log.warning(
                    "upstream '%s' has no API key: api_key_env names %s, which is not set",
                    name,
                    config.api_key_env,
                )
            if name in self._by_name:
                self._by_name[name].api_key = config.api_key
                continue
            timeout = aiohttp.ClientTimeout(
                total=None, connect=min(10.0, config.timeout_s), sock_read=config.timeout_s
            )
            connector = aiohttp.TCPConnector(
                limit=0,
                limit_per_host=0,
                ttl_dns_cache=300,
                keepalive_timeout=UPSTREAM_KEEPALIVE_S,
            )
            session = aiohttp.ClientSession(
                timeout=timeout,
                connector=connector,
                auto_decompress=True,
                # shared by every user of the node: an upstream's cookies are nobody's
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent",),
            )
            self._by_name[name] = Upstream(
                name, config.base_url, config.api_key, config.timeout_s, session
            )

    async def close(self) -> None:
        for upstream in [*self._by_name.values(), *self._retired]:
            await upstream.session.close()
        self._by_name.clear()
        self._retired.clear()
