"""The ``routstr-node`` command: run, demo, audit, earnings."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import click

from routstr_node.config import DEFAULT_PATH, ConfigError, Settings, load_settings


class _CannotAudit(click.ClickException):
    """The audit could not run at all: exit 2, as 1 means the books do not balance."""

    exit_code = 2


def _settings(config: Path, failure: type[click.ClickException] = click.ClickException) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise failure(exc.message) from None


config_option = click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path),
    default=DEFAULT_PATH,
    show_default=True,
    help="The node's configuration file.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="routstr-node")
def main() -> None:
    """A self-hosted node selling OpenAI-compatible AI API access for Cashu ecash."""


@main.command()
@config_option
@click.option("--host", help="Listen on this address (overrides [node] host).")
@click.option("--port", type=int, help="Listen on this port (overrides [node] port).")
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Serving processes on the one port (more than 1 needs [database] url = postgresql://…).",
)
@click.option("--reuse-port", is_flag=True, hidden=True)
def run(config: Path, host: str | None, port: int | None, workers: int, reuse_port: bool) -> None:
    """Serve the node; ready when GET /health answers 200."""
    from routstr_node.server import CannotListen, serve, settle_the_collector
    from wallet import StoreUnavailable

    settings = _settings(config)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if workers > 1:
        from routstr_node.workers import supervise, worker_command

        if not settings.database.url:
            raise click.ClickException(
                "--workers needs [database] url = postgresql://…: the processes share one"
                " ledger there (SQLite serves one process)"
            )
        sys.exit(supervise(workers, worker_command(config, host, port)))
    settle_the_collector()
    try:
        asyncio.run(
            serve(settings, host=host, port=port, config_path=config, reuse_port=reuse_port)
        )
    except (CannotListen, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@config_option
def audit(config: Path) -> None:
    """Check custody against the ledger (also while the node runs).

    Prints one JSON object; exits 0 when unspent proofs (checked at the mints) plus
    proofs in flight equal balances + reserved + unclaimed change + earnings, else 1
    (also when a mint cannot be asked: its proofs are then reported as unchecked_msat
    and counted as stored, so difference_msat shows only what was found wrong). Exits
    2, printing why, when it cannot run: a bad configuration, or no wallet database in
    data_dir.
    """
    from routstr_node.audit_command import NoLedger, run_audit

    settings = _settings(config, _CannotAudit)
    try:
        report = asyncio.run(run_audit(settings))
    except NoLedger as exc:
        raise _CannotAudit(str(exc)) from None
    except Exception as exc:  # e.g. an unreadable database: it did not run, it did not fail
        raise _CannotAudit(f"the audit could not run: {type(exc).__name__}: {exc}") from None
    click.echo(json.dumps(report, sort_keys=True))
    sys.exit(0 if report["balanced"] else 1)


@main.group(invoke_without_command=True)
@config_option
@click.pass_context
def earnings(ctx: click.Context, config: Path) -> None:
    """The operator's books as JSON: custody, liabilities and earnings per mint and in
    total, what can be withdrawn now, and an audit run now (also while the node runs)."""
    ctx.obj = config
    if ctx.invoked_subcommand is not None:
        return
    from routstr_node.audit_command import NoLedger
    from routstr_node.earnings_command import show_books

    settings = _settings(config, _CannotAudit)
    try:
        books = asyncio.run(show_books(settings))
    except NoLedger as exc:
        raise _CannotAudit(str(exc)) from None
    click.echo(json.dumps(books, sort_keys=True))


@earnings.command("withdraw")
@config_option
@click.option("--amount", type=click.IntRange(min=1), help="Sat as a token (default: all).")
@click.option("--invoice", help="Pay this bolt11 invoice instead (the mint's fee from earnings).")
@click.option("--mint", help="The mint to pay from (default: where most can be paid).")
@click.option(
    "--idempotency-key", help="Asked again with the same key: the same answer, paid once."
)
@click.pass_obj
def earnings_withdraw(
    group_config: Path,
    config: Path,
    amount: int | None,
    invoice: str | None,
    mint: str | None,
    idempotency_key: str | None,
) -> None:
    """Pay earnings out: a token (printed as JSON) or an invoice paid. The running node
    pays it when one runs on this data_dir; else this command does. Exits 1 when it is
    refused (more than the earnings: insufficient_earnings), printing the error."""
    from routstr_node.audit_command import NoLedger
    from routstr_node.earnings_command import NodeUnreachable, Refused, withdraw

    chosen = config if config != DEFAULT_PATH else group_config
    settings = _settings(chosen, _CannotAudit)
    if invoice is not None and amount is not None:
        raise click.UsageError("an invoice carries its own amount: give --amount or --invoice")
    try:
        answer = asyncio.run(withdraw(settings, amount, invoice, mint, idempotency_key))
    except NoLedger as exc:
        raise _CannotAudit(str(exc)) from None
    except Refused as exc:
        click.echo(json.dumps({"error": exc.error}, sort_keys=True))
        sys.exit(1)
    except NodeUnreachable as exc:
        raise _CannotAudit(str(exc)) from None
    click.echo(json.dumps(answer, sort_keys=True))


@main.command()
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    envvar="ROUTSTR_DEMO_PORT",
    help="The node's port (default: 8000 when free, else any free one). Env: ROUTSTR_DEMO_PORT.",
)
def demo(port: int | None) -> None:
    """A whole local economy: a test mint, a demo upstream and the node; pays a completion.

    Prints cost, change and balances, then keeps serving; its last two lines are
    ROUTSTR_BASE_URL and ROUTSTR_TOKEN (a funded token) to try. Ctrl-C stops everything
    it started.
    """
    from routstr_node.demo.run import run_demo

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run_demo(port))
