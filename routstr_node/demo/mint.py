"""Run a real nutshell mint (FakeWallet backend) as a child process.

The demo command and the test fixtures both need a mint that behaves exactly like a
production one but pays every Lightning invoice at once, so they start nutshell's own
`mint` console script rather than imitating it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.05
LOG_FILE_NAME = "mint.log"
KEY_FILE_NAME = "mint-private-key"
LOG_TAIL_LINES = 40
PORT_ATTEMPTS = 3

# Settings nutshell reads that do not start with one of the prefixes below. nutshell
# matches environment variables case-insensitively, so these are compared upper-cased.
_NUTSHELL_SETTING_NAMES = frozenset(
    {
        "ENV_FILE",
        "MAX_ORDER",
        "TOR",
        "SOCKS_HOST",
        "SOCKS_PORT",
        "SOCKS_PROXY",
        "HTTP_PROXY",
        "API_PORT",
        "API_HOST",
        "NPUB_CASH_HOSTNAME",
        "LOCKTIME_DELTA_SECONDS",
        "PROOFS_BATCH_SIZE",
        "DEBUG",
        "LOG_LEVEL",
        "DEBUG_PROFILING",
        "DEBUG_MINT_ONLY_DEPRECATED",
        "DB_BACKUP_PATH",
        "DB_CONNECTION_POOL",
        "VERSION",
        # nutshell refuses to start when Python runs with -O (it relies on asserts).
        "PYTHONOPTIMIZE",
    }
)
_NUTSHELL_SETTING_PREFIXES = ("MINT_", "CASHU_", "FAKEWALLET_", "LIGHTNING_", "WALLET_")


class MintStartError(RuntimeError):
    """The mint process exited or did not become ready in time."""


@dataclass(frozen=True)
class LocalMint:
    """A running local mint: where it answers and where it keeps its files."""

    url: str
    port: int
    directory: Path
    process: asyncio.subprocess.Process

    @property
    def log_path(self) -> Path:
        return self.directory / LOG_FILE_NAME


def mint_executable() -> Path:
    """The `mint` console script installed next to the running interpreter."""
    return Path(sys.executable).parent / "mint"


def free_port(host: str = LOOPBACK) -> int:
    """A port the OS considers free right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def mint_private_key(directory: Path) -> str:
    """The mint's seed, created once per directory.

    A fixed seed per directory keeps the keysets valid across restarts, while two
    directories never share keys (a proof from one mint must not verify at another).
    """
    key_file = directory / KEY_FILE_NAME
    if not key_file.exists():
        key_file.write_text(secrets.token_hex(32) + "\n")
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def mint_settings(directory: Path, port: int, input_fee_ppk: int) -> dict[str, str]:
    """The nutshell settings that make a self-contained FakeWallet mint on loopback."""
    return {
        "MINT_BACKEND_BOLT11_SAT": "FakeWallet",
        "MINT_PRIVATE_KEY": mint_private_key(directory),
        "MINT_LISTEN_HOST": LOOPBACK,
        "MINT_LISTEN_PORT": str(port),
        "MINT_DATABASE": str(directory / "mintdb"),
        "MINT_AUTH_DATABASE": str(directory / "authdb"),
        "CASHU_DIR": str(directory / "cashu"),
        "MINT_INPUT_FEE_PPK": str(input_fee_ppk),
        "MINT_RATE_LIMIT": "FALSE",
        "FAKEWALLET_DELAY_INCOMING_PAYMENT": "0",
        "FAKEWALLET_DELAY_OUTGOING_PAYMENT": "0",
    }


def child_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """Our environment without anything nutshell would read, plus the mint's settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in _NUTSHELL_SETTING_NAMES
        and not name.upper().startswith(_NUTSHELL_SETTING_PREFIXES)
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def write_env_file(directory: Path, settings: Mapping[str, str]) -> None:
    """Write the settings to `.env` in the mint's working directory.

    On import nutshell loads `./.env`, or failing that `~/.cashu/.env`, and lets it
    override the environment. Our own `.env` in the working directory both wins and
    keeps a user's `~/.cashu/.env` out of the mint.
    """
    lines = [f"{name}={value}\n" for name, value in settings.items()]
    (directory / ".env").write_text("".join(lines))


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The end of the mint's log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


async def _answers_keys(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(f"{url}/v1/keys") as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def wait_until_ready(
    process: asyncio.subprocess.Process, url: str, log_path: Path, timeout_s: float
) -> None:
    """Poll `GET /v1/keys` until it answers 200; fail fast if the process dies."""
    deadline = time.monotonic() + timeout_s
    timeout = aiohttp.ClientTimeout(total=2.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            if process.returncode is not None:
                raise MintStartError(
                    f"mint at {url} exited with code {process.returncode} before it was "
                    f"ready; log {log_path}:\n{log_tail(log_path)}"
                )
            if await _answers_keys(session, url):
                return
            if time.monotonic() > deadline:
                raise MintStartError(
                    f"mint at {url} not ready after {timeout_s:.0f} s; "
                    f"log {log_path}:\n{log_tail(log_path)}"
                )
            await asyncio.sleep(POLL_INTERVAL_S)


async def stop_process(process: asyncio.subprocess.Process, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if the process has not exited after `timeout_s`."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


@dataclass(frozen=True)
class _Launch:
    """Everything decided before the process starts."""

    directory: Path
    port: int
    url: str
    settings: dict[str, str]
    log_path: Path


def _prepare(
    directory: Path, input_fee_ppk: int, port: int | None, extra: Mapping[str, str]
) -> _Launch:
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    chosen_port = port if port is not None else free_port()
    settings = {**mint_settings(directory, chosen_port, input_fee_ppk), **extra}
    write_env_file(directory, settings)
    return _Launch(
        directory=directory,
        port=chosen_port,
        url=f"http://{LOOPBACK}:{chosen_port}",
        settings=settings,
        log_path=directory / LOG_FILE_NAME,
    )


async def _spawn(launch: _Launch) -> asyncio.subprocess.Process:
    with launch.log_path.open("wb") as log:
        return await asyncio.create_subprocess_exec(
            str(mint_executable()),
            cwd=launch.directory,
            env=child_environment(launch.settings),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )


async def _start(
    directory: Path,
    input_fee_ppk: int,
    port: int | None,
    ready_timeout_s: float,
    extra: Mapping[str, str],
) -> tuple[_Launch, asyncio.subprocess.Process]:
    """Start the mint; with a port we picked, retry if someone took it meanwhile."""
    attempts = 1 if port is not None else PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        launch = _prepare(directory, input_fee_ppk, port, extra)
        process = await _spawn(launch)
        try:
            await wait_until_ready(process, launch.url, launch.log_path, ready_timeout_s)
        except BaseException:
            exited_early = process.returncode is not None
            await stop_process(process, STOP_TIMEOUT_S)
            if exited_early and attempt < attempts:
                continue
            raise
        return launch, process
    raise AssertionError("unreachable")


@asynccontextmanager
async def run_local_mint(
    directory: Path,
    *,
    input_fee_ppk: int = 0,
    port: int | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
    settings: Mapping[str, str] | None = None,
) -> AsyncIterator[LocalMint]:
    """Start a FakeWallet mint in `directory` (which it owns) and stop it on exit.

    The input fee is stored with the keyset in the mint's database, so a directory
    keeps the fee it was first started with. ``settings`` are more nutshell settings,
    over ours: FakeWallet's knobs, or a new MINT_DERIVATION_PATH (a new keyset).
    """
    launch, process = await _start(directory, input_fee_ppk, port, ready_timeout_s, settings or {})
    try:
        yield LocalMint(
            url=launch.url, port=launch.port, directory=launch.directory, process=process
        )
    finally:
        await stop_process(process, STOP_TIMEOUT_S)
