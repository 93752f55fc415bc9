"""Headless Debian Chromium driven by Playwright, and a watch on what a page reports.

Playwright's own browser download does not work on these machines: the browser is
Debian's `chromium` package (scripts/setup.sh installs it) at /usr/bin/chromium.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    async_playwright,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
#: How long an `expect(...)` waits by default; generous for a loaded 2-core machine.
EXPECT_TIMEOUT_MS = 10_000

# Chromium logs every HTTP error answer of a fetch as a console error; those are
# answers the tests ask for (401, 400, 429), not faults of the page.
_HTTP_ERROR_PREFIX = "Failed to load resource: the server responded with a status of"


@asynccontextmanager
async def launch_chromium() -> AsyncIterator[Browser]:
    """Start headless Chromium (Debian's package; scripts/setup.sh installs it)."""
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/setup.sh")
    async with async_playwright() as playwright:
        browser = await _launch(playwright)
        try:
            yield browser
        finally:
            await browser.close()


async def _launch(playwright: Playwright) -> Browser:
    return await playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
    )


@dataclass
class PageWatch:
    """Collects what a page reports: console errors, uncaught exceptions, requests."""

    origin: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    request_urls: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("requestfailed", self._on_request_failed)
        page.on("request", lambda request: self.request_urls.append(request.url))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith(_HTTP_ERROR_PREFIX):
            self.console_errors.append(message.text)

    def _on_request_failed(self, request: Request) -> None:
        self.failed_requests.append(f"{request.method} {request.url}: {request.failure}")

    def foreign_requests(self) -> list[str]:
        """Requests that left the page's origin (data: URLs stay in the page)."""
        own = urlsplit(self.origin)
        return [
            url
            for url in self.request_urls
            if not url.startswith("data:")
            and (urlsplit(url).scheme, urlsplit(url).netloc) != (own.scheme, own.netloc)
        ]

    def assert_clean(self) -> None:
        """No CSP violation or other console error, no uncaught exception, no failed or
        foreign request."""
        assert self.console_errors == [], self.console_errors
        assert self.page_errors == [], self.page_errors
        assert self.failed_requests == [], self.failed_requests
        assert self.foreign_requests() == [], self.foreign_requests()
