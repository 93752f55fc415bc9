"""Serving the node until SIGTERM/SIGINT; in-flight requests finish or are released."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from routstr_node.app import create_app
from routstr_node.config import Settings

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 30.0
# objects allocated between young-generation collections (CPython's default is 700)
GC_YOUNG_THRESHOLD = 20_000
# a Cashu token travels in a header (X-Cashu, Authorization) or a query string: one of a
# few dozen proofs is over aiohttp's default 8,190 bytes a line or header
MAX_HEADER_LINE_BYTES = 64 * 1024


def settle_the_collector() -> None:
    """Keep the cyclic garbage collector off the request path.

    Reference counting frees almost everything a request allocates; the collector only
    finds cycles. With CPython's defaults it ran a young pass every 700 allocations (a
    few per request) and a full pass over every object the imports left behind (cashu,
    pydantic, aiohttp: hundreds of thousands) every 70,000: measured, that was ~20 % of
    the node's CPU per proxied request. Startup objects are frozen (never scanned again)
    and the young generation is collected less often; memory stays bounded. A process
    setting: the ``run`` command applies it once its imports are done.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


class _AiohttpServerLog(logging.Filter):
    """What aiohttp's server logs about requests it refused, without their bytes.

    A malformed request (a header line over the limit: a token of hundreds of proofs)
    was logged with the start of the offending line, a token's; it is one line now,
    naming the error only. A body that does not match its Content-Encoding, which the
    node has answered (400 invalid_body), is not logged again when aiohttp drains it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, web.RequestPayloadError):
            return False
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "refused a malformed HTTP request: %s", (type(exc).__name__,)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("aiohttp.server").addFilter(_AiohttpServerLog())


class CannotListen(Exception):
    """The address is taken or not ours: a message for the operator, not a traceback."""


async def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    config_path: Path | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    grace_s: float = SHUTDOWN_GRACE_S,
    reuse_port: bool = False,
) -> None:
    app = create_app(settings, config_path=config_path)
    runner = web.AppRunner(
        app,
        # aiohttp waits this long for handlers, then again as long after cancelling the
        # requests (handlers reading their upstream go on): half each is the grace
        shutdown_timeout=grace_s / 2,
        access_log=None,
        max_line_size=MAX_HEADER_LINE_BYTES,
        max_field_size=MAX_HEADER_LINE_BYTES,
    )
    await runner.setup()
    bind_host = host or settings.node.host
    bind_port = settings.node.port if port is None else port
    # reuse_port: one of the worker processes of ``run --workers N`` on the shared port
    site = web.TCPSite(runner, bind_host, bind_port, backlog=1024, reuse_port=reuse_port or None)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()  # the wallet was opened: close it as a stop would
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CannotListen(f"cannot listen on {bind_host}:{bind_port}: {why}") from None
    log.info("routstr-node serving on http://%s:%s", bind_host, bind_port)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("stopping: letting requests in flight finish")
        await runner.cleanup()
