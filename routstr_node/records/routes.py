"""Reading the usage records: the payer's history and the operator's admin queries.

``GET /v1/wallet/history`` (and Routstr's ``/v1/balance/history``, amounts in msat)
lists the caller's own records, newest first, paged by ``before`` (a request id).
``GET /admin/api/requests`` and ``/admin/api/usage`` (behind the admin guard) filter
and group every record. With records off these answer empty lists.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from routstr_node.account_api import account_of
from routstr_node.admin import usage_page
from routstr_node.errors import invalid_request
from routstr_node.records.model import Grouping, RecordFilter, UsageGroup, UsageRecord
from routstr_node.records.service import RECORDS
from routstr_node.state import NODE

HISTORY_LIMIT = 50
HISTORY_MAX = 500
REQUESTS_LIMIT = 100
REQUESTS_MAX = 1000


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/wallet/history", wallet_history)
    app.router.add_get("/v1/balance/history", balance_history)
    app.router.add_get("/admin/api/requests", admin_requests)
    app.router.add_get("/admin/api/usage", admin_usage)
    usage_page.add_routes(app)


def _int_param(request: web.Request, name: str, default: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= maximum:
        raise invalid_request(
            f"invalid_{name}", f"{name} must be an integer from 1 to {maximum}", param=name
        )
    return value


def _time_param(request: web.Request, name: str) -> int | None:
    """Unix seconds, or an ISO 8601 date or time (UTC unless it names its zone)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw.isdigit():
        return int(raw)
    try:
        parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise invalid_request(
            f"invalid_{name}",
            f"{name} must be unix seconds or an ISO 8601 date or time",
            param=name,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp())


def _filter(request: web.Request) -> RecordFilter:
    status_raw = request.query.get("status")
    status = None
    if status_raw:
        if not status_raw.isdigit() or not 100 <= int(status_raw) <= 599:
            raise invalid_request(
                "invalid_status", "status must be an HTTP status (e.g. 200)", param="status"
            )
        status = int(status_raw)
    return RecordFilter(
        model=request.query.get("model") or None,
        provider=request.query.get("provider") or None,
        status=status,
        since=_time_param(request, "since"),
        until=_time_param(request, "until"),
    )


async def _history(request: web.Request) -> tuple[list[UsageRecord], bool]:
    node = request.app[NODE]
    account_id = await account_of(request, node)
    limit = _int_param(request, "limit", HISTORY_LIMIT, HISTORY_MAX)
    before = request.query.get("before") or None
    records = request.app[RECORDS]
    return await records.store.history(account_id, limit, before)


async def wallet_history(request: web.Request) -> web.Response:
    found, more = await _history(request)
    return web.json_response({"data": [_history_entry(r) for r in found], "has_more": more})


async def balance_history(request: web.Request) -> web.Response:
    """Routstr's dialect: amounts in msat under their plain names."""
    found, more = await _history(request)
    data = []
    for record in found:
        entry = _history_entry(record)
        entry["cost"] = record.cost_msat
        data.append(entry)
    return web.json_response({"data": data, "has_more": more})


def _history_entry(record: UsageRecord) -> dict[str, Any]:
    return {
        "request_id": record.request_id,
        "created": record.created,
        "route": record.route,
        "model": record.model,
        "provider": record.provider,
        "status": record.status,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cost_msats": record.cost_msat,
    }


def admin_entry(record: UsageRecord) -> dict[str, Any]:
    return {
        **_history_entry(record),
        "account_id": record.account_id,
        "payment": record.mode,
        "latency_ms": record.latency_ms,
        "first_byte_ms": record.first_byte_ms,
        "units": record.units,
        "unit": record.unit,
    }


async def admin_requests(request: web.Request) -> web.Response:
    where = _filter(request)
    limit = _int_param(request, "limit", REQUESTS_LIMIT, REQUESTS_MAX)
    found = await request.app[RECORDS].store.requests(where, limit)
    return web.json_response({"data": [admin_entry(r) for r in found]})


async def admin_usage(request: web.Request) -> web.Response:
    raw = request.query.get("group_by", Grouping.DAY.value)
    try:
        group_by = Grouping(raw)
    except ValueError:
        raise invalid_request(
            "invalid_group_by", "group_by must be day, model or provider", param="group_by"
        ) from None
    groups = await request.app[RECORDS].store.usage(group_by, _filter(request))
    return web.json_response({"data": [_group_entry(g) for g in groups]})


def _group_entry(group: UsageGroup) -> dict[str, Any]:
    return {
        "key": group.key,
        "requests": group.requests,
        "errors": group.errors,
        "input_tokens": group.input_tokens,
        "output_tokens": group.output_tokens,
        "earnings_msat": group.earnings_msat,
        "latency_ms_p50": group.latency_ms_p50,
    }
