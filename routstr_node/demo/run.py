"""``routstr-node demo``: a whole local Cashu economy in one command.

A FakeWallet nutshell mint, the fake AI provider and the node, all on loopback. The
demo mints fresh ecash with the node's own ``mints`` package, pays for completions
through the OpenAI SDK (pay per request with ``X-Cashu``, then an account), prints
what it cost, then keeps serving and prints a funded token to try. Ctrl-C (or
SIGTERM) stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import click
from openai import AsyncOpenAI

from mints.client import MintClient
from mints.keysets import amount_split
from mints.outputs import prepare_outputs, unblind
from mints.token import encode_token, parse_token
from routstr_node.config import Settings
from routstr_node.demo.config import LOOPBACK, MODEL, config_toml, demo_config
from routstr_node.demo.media_tour import MEDIA_SAT, media_tour
from routstr_node.demo.mint import LocalMint, run_local_mint
from routstr_node.demo.upstream import run_upstream
from routstr_node.server import serve

DEFAULT_PORT = 8000
PAY_PER_REQUEST_SAT = 100
ACCOUNT_SAT = 500
TRY_IT_SAT = 10_000
QUOTE_PAID_TIMEOUT_S = 10.0
NODE_READY_TIMEOUT_S = 30.0
PROMPT = "Hello from a whole Cashu economy on one machine"


# -- fresh ecash -------------------------------------------------------------------------


async def mint_token(client: MintClient, amount_sat: int) -> str:
    """A new cashuB token worth exactly ``amount_sat``, minted at ``client``'s mint.

    A FakeWallet mint marks the quote paid at once; the outputs come from a fresh
    random seed, so nothing else ever holds these proofs.
    """
    quote = await client.mint_quote(amount_sat)
    deadline = time.monotonic() + QUOTE_PAID_TIMEOUT_S
    while quote.state != "PAID":
        if quote.state == "ISSUED":
            raise RuntimeError(f"mint quote {quote.quote} was already issued")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the mint did not mark quote {quote.quote} paid in time")
        await asyncio.sleep(0.05)
        quote = await client.get_mint_quote(quote.quote)
    keyset = await client.active_keyset()
    outputs = prepare_outputs(secrets.token_bytes(64), keyset.id, 0, amount_split(amount_sat))
    signatures = await client.mint(quote.quote, [o.message() for o in outputs])
    proofs = [unblind(o, s, keyset) for o, s in zip(outputs, signatures, strict=True)]
    return encode_token(client.url, proofs)


# -- the node's settings -----------------------------------------------------------------


def pick_port(preferred: int = DEFAULT_PORT) -> int:
    """``preferred`` when it is free on loopback, else any free port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, preferred))
        except OSError:
            sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


# -- output --------------------------------------------------------------------------------


def say(text: str = "") -> None:
    print(text, flush=True)


def sat(msat: int) -> str:
    whole, rest = divmod(msat, 1000)
    return f"{whole:,} sat" if rest == 0 else f"{whole:,}.{rest:03d}".rstrip("0") + " sat"


def short(secret: str, keep: int = 12) -> str:
    return secret if len(secret) <= keep + 1 else secret[:keep] + "…"


# -- the tour --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paid:
    reply: str
    cost_msat: int
    change: str | None


async def paid_completion(client: AsyncOpenAI, prompt: str) -> Paid:
    """One chat completion; what it answered, cost and returned as change."""
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=64
    )
    completion = raw.parse()
    reply = completion.choices[0].message.content or ""
    return Paid(reply, int(raw.headers["X-Routstr-Cost-Msats"]), raw.headers.get("X-Cashu"))


async def balance_msat(http: aiohttp.ClientSession, base_url: str, key: str) -> int | None:
    """What the key can still spend (None: the node has no route that says).

    An sk- key asks the wallet API; a token used as the key asks Routstr's
    ``/v1/balance/info``, which knows token accounts and answers in msat.
    """
    route, field = ("wallet/balance", "balance_msat")
    if key.startswith("cashu"):
        route, field = ("balance/info", "balance")
    headers = {"Authorization": f"Bearer {key}"}
    async with http.get(f"{base_url}/{route}", headers=headers) as resp:
        if resp.status != 200:
            return None
        data: dict[str, Any] = await resp.json()
    return int(data[field])


async def pay_per_request(mint: MintClient, base_url: str) -> tuple[int, int]:
    """The X-Cashu tour step; (its cost, the sub-sat rest of its change), in msat."""
    token = await mint_token(mint, PAY_PER_REQUEST_SAT)
    say(f"1. Pay per request: a fresh {PAY_PER_REQUEST_SAT}-sat token in the X-Cashu header")
    client = AsyncOpenAI(
        base_url=base_url, api_key="unused", default_headers={"X-Cashu": token}, max_retries=0
    )
    async with client:
        paid = await paid_completion(client, PROMPT)
    rest = (PAY_PER_REQUEST_SAT * 1000 - paid.cost_msat) % 1000
    say(f"   reply   {paid.reply!r}")
    say(f"   cost    {paid.cost_msat:,} msat (X-Routstr-Cost-Msats)")
    if paid.change:
        change = parse_token(paid.change).amount
        say(f"   change  a new {change}-sat token came back in the X-Cashu response header")
        if rest:
            say(
                f"           (ecash comes in whole sat: the {rest} msat left below a sat"
                " stay with the node, as earnings)"
            )
    else:
        say("   change  none issued now (claim it with POST /v1/wallet/refund)")
    say()
    return paid.cost_msat, rest


async def pay_from_account(mint: MintClient, http: aiohttp.ClientSession, base_url: str) -> int:
    """The account tour step; what its completions cost, in msat."""
    token = await mint_token(mint, ACCOUNT_SAT)
    async with http.post(f"{base_url}/wallet/create", json={"cashu_token": token}) as resp:
        created: dict[str, Any] | None = await resp.json() if resp.status == 201 else None
        if created is None and resp.status != 404:
            raise RuntimeError(f"POST /v1/wallet/create answered {resp.status}")
    if created is not None:
        key = str(created["api_key"])
        say(f"2. An account: POST /v1/wallet/create with a {ACCOUNT_SAT}-sat token")
        say(f"   api key {short(key)}  balance {sat(int(created['balance_msat']))}")
    else:
        key = token
        say(f"2. A token as the API key: Authorization: Bearer <a {ACCOUNT_SAT}-sat token>")
    client = AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0)
    spent = 0
    async with client:
        for prompt in ("What does the node charge for?", "And where does my change go?"):
            spent += (await paid_completion(client, prompt)).cost_msat
    left = await balance_msat(http, base_url, key)
    if left is not None:
        say(f"   two completions cost {spent:,} msat; balance now {sat(left)}")
    else:
        say(f"   two completions cost {spent:,} msat; {sat(ACCOUNT_SAT * 1000 - spent)} left")
    say("   (an account keeps its msat: it pays to the msat, and withdraws whole sat)")
    say()
    return spent


async def show_books(settings: Settings, costs_msat: int, rests_msat: int) -> None:
    """The node's own audit: custody at the mint against what the ledger owes."""
    from routstr_node.audit_command import run_audit

    try:
        report = await run_audit(settings)
    except Exception as exc:  # the demo goes on without it
        say(f"   (audit not available: {type(exc).__name__})")
        return
    verdict = "balanced" if report["balanced"] else f"off by {report['difference_msat']} msat"
    say(
        f"4. The node's books: earned {int(report['earnings_msat']):,} msat;"
        f" custody audit: {verdict}"
    )
    if rests_msat:
        say(
            f"   (the costs above, {costs_msat:,} msat, plus {rests_msat:,} msat below a"
            " sat that X-Cashu change could not carry)"
        )
    say()


async def tour(mint: LocalMint, settings: Settings, base_url: str) -> None:
    client = MintClient(mint.url)
    try:
        async with aiohttp.ClientSession() as http:
            cost, rest = await pay_per_request(client, base_url)
            spent = await pay_from_account(client, http, base_url)
            media = await media_tour(await mint_token(client, MEDIA_SAT), base_url, http, say)
        await show_books(settings, cost + spent + media, rest)
        token = await mint_token(client, TRY_IT_SAT)
    finally:
        await client.close()
    say(f"Try it yourself with any OpenAI client: ROUTSTR_TOKEN below is a {TRY_IT_SAT:,}-sat")
    say("token; it pays once, whichever way you use it (README, Paying):")
    say("  - as the API key:   Authorization: Bearer $ROUTSTR_TOKEN")
    say("  - as an account:    POST $ROUTSTR_BASE_URL/wallet/create with it gives an sk- key,")
    say("                      and POST $ROUTSTR_BASE_URL/wallet/withdraw with that key")
    say('                      {"amount": 500} gives a new token for each X-Cashu request')
    say(
        '  curl -s "$ROUTSTR_BASE_URL/chat/completions" -H "Authorization: Bearer $ROUTSTR_TOKEN"'
        f' -H "Content-Type: application/json" -d \'{{"model": "{MODEL}",'
        ' "messages": [{"role": "user", "content": "hi"}]}\''
    )
    say("Serving until Ctrl-C (fake sats: the mint and its tokens vanish when the demo stops).")
    say()
    say(f"ROUTSTR_BASE_URL={base_url}")
    say(f"ROUTSTR_TOKEN={token}")


# -- running and stopping ------------------------------------------------------------------


class _Stopper:
    """SIGINT/SIGTERM: set ``stop``; during start-up, also cancel the demo itself."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.stop = asyncio.Event()
        self.task = task
        self.serving = False
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.fire)

    def fire(self) -> None:
        self.stop.set()
        if not self.serving:
            self.task.cancel()


async def _wait_node_ready(node: asyncio.Task[None], ready: asyncio.Event) -> None:
    waiter = asyncio.create_task(ready.wait())
    try:
        done, _ = await asyncio.wait(
            {node, waiter}, timeout=NODE_READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        waiter.cancel()
    if node in done:
        node.result()  # raises what stopped it
        raise RuntimeError("the node stopped during start-up")
    if waiter not in done:
        raise RuntimeError("the node did not start in time")


async def _economy(stopper: _Stopper, directory: Path, port: int | None) -> None:
    say("routstr-node demo: a test mint, a stand-in AI provider and the node, all local")
    async with run_local_mint(directory / "mint") as mint, run_upstream(LOOPBACK) as upstream:
        port = pick_port() if port is None else port
        base_url = f"http://{LOOPBACK}:{port}/v1"
        config = demo_config(directory / "node", port, mint.url, upstream.url)
        settings = Settings.model_validate(config)
        config_path = directory / "node.toml"  # for the operator's commands, e.g. audit
        config_path.write_text(config_toml(config))
        ready = asyncio.Event()
        node = asyncio.create_task(serve(settings, ready=ready, stop=stopper.stop))
        try:
            await _wait_node_ready(node, ready)
            stopper.serving = True  # serve() now owns the signals: they set stop
            say(f"  mint      {mint.url}  (nutshell, FakeWallet: invoices pay themselves)")
            say(f"  provider  {upstream.url}  (echoes the prompt, reports usage)")
            say(f"  node      {base_url}")
            admin_url = base_url.removesuffix("/v1") + "/admin/"
            say(f"  admin     {admin_url}  (password {settings.admin.password})")
            say(f"  config    {config_path}  (routstr-node audit --config {config_path})")
            say()
            shown = asyncio.create_task(tour(mint, settings, base_url))
            stopped = asyncio.create_task(stopper.stop.wait())
            try:
                await asyncio.wait({shown, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
                if not shown.done():
                    shown.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await shown
            if not stopper.stop.is_set():
                shown.result()  # the tour's failure, if any
                await stopper.stop.wait()
        finally:
            stopper.serving = False
            stopper.stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await node
    say("Stopped the node, the provider and the mint.")


async def run_demo(port: int | None = None) -> None:
    """Run the demo until Ctrl-C/SIGTERM; failures become a short message and exit 1.

    ``port``: where the node listens (None: 8000 when free, else any free port)."""
    task = asyncio.current_task()
    assert task is not None
    stopper = _Stopper(task)
    keep = os.environ.get("ROUTSTR_DEMO_DIR")
    try:
        if keep:
            await _economy(stopper, Path(keep), port)
        else:
            with tempfile.TemporaryDirectory(prefix="routstr-demo-") as directory:
                await _economy(stopper, Path(directory), port)
    except asyncio.CancelledError:
        if not stopper.stop.is_set():
            raise
        task.uncancel()
        say("Stopped.")
    except Exception as exc:
        if stopper.stop.is_set():
            say("Stopped.")
            return
        message = str(exc) or type(exc).__name__
        print(f"demo failed: {message}", file=sys.stderr, flush=True)
        raise click.exceptions.Exit(1) from None
